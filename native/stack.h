// stack.h — the plain C++ interface every native-stack backend implements.
//
// No N-API here: a backend fills a StackResult and never throws; addon.cc
// turns it into a JavaScript value and src/ formats every message from the
// stable `error` code and the backend's `detail`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace threadleak {

struct StackFrame {
  uint64_t address = 0;  // the frame's PC (innermost) or return address
  std::string symbol;    // demangled; '' when the loader knows no name for it
  std::string module;    // absolute path of the mapped file; '' when unknown (JIT, anonymous)
  // From the symbol's start when `symbol` is set, else from the module's load
  // base (the usual `module+offset` / `symbol+offset` notation).
  bool has_offset = false;
  uint64_t offset = 0;
  bool scanned = false;  // found by scanning the stack for return addresses, not by unwinding
};

struct StackResult {
  std::vector<StackFrame> frames;  // innermost first
  // '' when the frames came from a successful probe. Otherwise one of:
  //   "not-found"        the id is not a thread of this process
  //   "exited"           the thread exited (or is a zombie) before it answered
  //   "signal-blocked"   the thread blocks the probe signal (SigBlk), or waits
  //                      for signals with sigwaitinfo and would take it (or took
  //                      it) as its own
  //   "stopped"          the thread is stopped (state T or t)
  //   "uninterruptible"  the thread is in uninterruptible sleep (state D)
  //   "stack-low"        too little of the thread's stack is left for a signal frame
  //   "timeout"          the thread did not answer the probe within the timeout
  //   "not-sent"         no probe was sent: within the timeout the thread was
  //                      never seen where a probe is safe to send (asleep in a
  //                      system call or on a CPU, with the signal unblocked)
  //   "busy"             another capture of the same thread (or every probe slot)
  //                      was busy for the whole timeout
  //   "no-signal"        no probe signal: none free, disabled, or taken over
  //   "not-probed"       timeout 0: only what the kernel shows was read
  //   "os-error"         a system call failed; see detail (Windows: OpenThread,
  //                      SuspendThread, GetThreadContext, ReadProcessMemory;
  //                      macOS: task_threads, thread_suspend, thread_get_state,
  //                      vm_read_overwrite)
  //   "unsupported"      no backend for this OS or CPU
  // With an error, `frames` holds what is still known: the PC and SP the
  // kernel reports and a scan of the stack (scanned frames).
  std::string error;
  std::string detail;  // one human-readable sentence fragment, may be ''
  int signal = 0;      // the probe signal, 0 when none
  // The thread's start address, named like a frame (Windows: the address
  // given to CreateThread, or the C runtime's thread entry); address 0 when
  // unknown, and always on Linux and macOS. Lets attribution name the
  // creator when the frames stop short of the thread's entry.
  StackFrame start;
};

// Captures the native stack of thread `tid` of the calling process, waiting at
// most `timeout_ms` for it (the calling thread itself is unwound directly).
// With a non-empty `key` (one ListThreads gave), the thread must still be the
// one that key names: when the id now names another thread, or none, the
// result is "exited" and nothing of the other thread is read or interrupted.
// Frames are those of the thread that had the id when the call began, never
// of one that got the id while it ran.
// Never throws, never blocks longer than the timeout plus a few procfs reads.
void CaptureStack(uint64_t tid, double timeout_ms, const std::string& key, StackResult* result);

}  // namespace threadleak
