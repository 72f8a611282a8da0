// stack_linux.cc — the native stack of one thread of this process, on Linux:
// the capture sequence, and the checks that decide whether a thread may be
// probed at all.
//
// Strategy: a thread that can safely run the probe's signal handler is probed
// (stack_probe_linux.cc); one that cannot (it blocks the signal, is stopped,
// stays in uninterruptible sleep, would take the signal as its own, has too
// little stack left for a signal frame, or does not answer in time) gets an error plus
// the kernel's view: PC and SP from procfs and a scan of its stack
// (stack_procfs_linux.cc). The calling thread itself is unwound directly.
// Symbolization comes last, outside any handler (stack_symbols_linux.cc).
//
// Quirks handled here:
//  - Which signal, and why it is never given back: stack_signal_linux.cc.
//  - A signal frame is pushed onto the target's own stack: the kernel's frame
//    (register state: about 3.5 KB with AVX-512, more than 11 KB once AMX
//    tiles are in use; AT_MINSIGSTKSZ gives the largest this CPU may need,
//    plus the 128-byte red zone) and the handler below it. If that crosses
//    the guard page the kernel kills the whole process with SIGSEGV. So a
//    thread that is off CPU, whose SP the kernel shows, is probed only when
//    that much stack below its SP is readable. A running thread shows no SP:
//    it gets a moment (kSettleNs) to block, and if it keeps running it is
//    probed without the check (a thread that deep in its stack would die of
//    any signal). The handler itself skips the unwinder when short of stack.
//    The main thread's stack grows on demand: no check there. Neither where
//    process_vm_readv, which the checks read memory with, is denied: the
//    probe then behaves as if every thread had room.
//  - A thread in uninterruptible sleep (D) takes a signal only when it leaves
//    D, which is usually a moment later (a page fault, a vfork, another
//    capture's procfs read holding its memory map lock). It is probed, but its
//    answer is awaited for kUninterruptibleWaitNs at most; a thread that still
//    has an earlier probe pending is not sent another (they would queue).
//  - A thread waiting in sigwaitinfo()/sigtimedwait() has the signals it
//    waits for unblocked while it waits, so SigBlk shows nothing blocked, and
//    a probe sent then is taken by the thread as one of its own signals (a
//    signal-handling thread may even treat it as a request to exit). Such a
//    thread is reported as blocking the probe, and remembered: out of its
//    wait it blocks every signal, and would take a probe sent then in its
//    next wait. For the same reason the mask is read once more, last, before
//    any probe.
//  - The handler blocks every signal while it runs, its own included; SigBlk
//    shows that mask, so a thread that is answering another capture's probe
//    (a Worker's: captures from several threads wait for each other) looks as
//    if it blocked the signal. A status read before that wait is read again,
//    and a thread that answered one of the latest probes may still be
//    returning from the handler (on a busy machine it can be preempted there
//    for longer than another probe takes): for those the check waits for the
//    signal to be unblocked, but only while the thread runs. Once it sleeps it
//    has left the handler (which never sleeps), and it really blocks the signal.
//  - A probed thread blocked in nanosleep, poll, epoll_wait... returns EINTR
//    even with SA_RESTART.
#include <errno.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <string>

#include "stack_linux.h"

#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif

namespace threadleak {
namespace {

using linux_stack::RawFrame;

#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__)
constexpr bool kCpuSupported = true;  // RegistersFrom and the scan's call check know it
#else
constexpr bool kCpuSupported = false;
#endif
constexpr int64_t kRunningRetryNs = 10 * 1000 * 1000;  // how long the kernel view waits for a running thread
constexpr int64_t kUnblockWaitNs = 20 * 1000 * 1000;   // how long a running thread may take to leave the handler
constexpr int64_t kUninterruptibleWaitNs = 50 * 1000 * 1000;  // how long a probe waits for a thread in D
constexpr int64_t kSettleNs = 1000 * 1000;              // how long to wait for a running thread to show its SP

pid_t Gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// The stack a probe needs below a thread's SP: the red zone, the largest
// signal frame this CPU may need, and the handler.
size_t SignalStackBytes() {
  static const size_t bytes = [] {
    size_t frame = getauxval(AT_MINSIGSTKSZ);
    if (frame == 0) frame = 8192;  // kernels that do not tell (x86 before 5.14) have no AMX state
    return 128 + frame + linux_stack::kHandlerBytes;
  }();
  return bytes;
}

bool WaitsForSignals(long syscall_nr) {
  if (syscall_nr == SYS_rt_sigtimedwait) return true;
#ifdef SYS_rt_sigtimedwait_time64
  if (syscall_nr == SYS_rt_sigtimedwait_time64) return true;
#endif
  return false;
}

// See the header comment: waits, within the deadline and while the thread
// runs, for the probe signal to be unblocked. True when it is (and *status is
// fresh).
bool WaitUnblocked(pid_t tid, int sig, int64_t deadline, linux_stack::ThreadStatus* status) {
  const uint64_t bit = 1ull << (sig - 1);
  const int64_t until = std::min(deadline, linux_stack::NowNs() + kUnblockWaitNs);
  while (status->state == 'R' && linux_stack::NowNs() < until) {
    sched_yield();
    struct timespec pause = {0, 20000};
    nanosleep(&pause, nullptr);
    if (linux_stack::ReadThreadStatus(tid, status) != 0) return false;
    if (!(status->blocked & bit)) return true;
  }
  linux_stack::ForgetAnswered(tid);  // it blocks the signal: do not wait for it again
  return false;
}

// True when the thread blocks the probe signal, unless only because it is
// still returning from the handler of a probe it answered (then waited out).
bool BlocksProbe(pid_t tid, int sig, int64_t deadline, linux_stack::ThreadStatus* status) {
  return (status->blocked & (1ull << (sig - 1))) &&
         !(linux_stack::AnsweredRecently(tid) && WaitUnblocked(tid, sig, deadline, status));
}

// Threads seen waiting in sigwaitinfo()/sigtimedwait(), by tid and start
// time: they are never probed again. Such a thread is out of its wait only
// for moments, with every signal blocked, and a probe sent in one of them is
// taken by its next wait; the checks of one capture can miss that moment, a
// thread known to take signals is not given the chance. Guarded by ProbeMutex().
struct SignalTaker {
  pid_t tid;
  uint64_t start_ticks;
};
SignalTaker g_signal_takers[64] = {};
unsigned g_next_signal_taker = 0;

bool KnownSignalTaker(pid_t tid) {
  for (const SignalTaker& t : g_signal_takers) {
    if (t.tid == tid) return t.start_ticks == linux_stack::ThreadStartTicks(tid);
  }
  return false;
}

void RememberSignalTaker(pid_t tid) {
  const uint64_t start_ticks = linux_stack::ThreadStartTicks(tid);
  if (start_ticks == 0) return;
  for (SignalTaker& t : g_signal_takers) {
    if (t.tid == tid) {
      t.start_ticks = start_ticks;
      return;
    }
  }
  g_signal_takers[g_next_signal_taker++ % (sizeof g_signal_takers / sizeof g_signal_takers[0])] = {tid, start_ticks};
}

constexpr char kTakesSignals[] =
    "it waits for signals with sigwaitinfo() or sigtimedwait(), which would take the probe as its own";

// The last check before a probe: the checks took several reads, and the
// thread may have moved on meanwhile. One that takes its signals with
// sigwaitinfo() has them unblocked only while it waits; once out of the wait
// (or waiting to run again on a busy machine) it blocks them again, and would
// take the probe in its next wait. Its mask, read last, decides.
bool StillUnblocked(pid_t tid, int sig, int64_t deadline, linux_stack::ThreadStatus* status, StackResult* result) {
  if (linux_stack::ReadThreadStatus(tid, status) != 0) {
    result->error = "exited";
    return false;
  }
  if (BlocksProbe(tid, sig, deadline, status)) {
    result->error = "signal-blocked";
    return false;
  }
  return true;
}

// The checks before a probe, with ProbeMutex() held: true when `tid` may be
// probed, else result->error (and detail) say why not.
bool MayProbe(pid_t tid, int sig, int64_t deadline, linux_stack::ThreadStatus* status, StackResult* result) {
  if (status->blocked & (1ull << (sig - 1))) {
    // Read before ProbeMutex() was taken: the thread may have been answering
    // another capture's probe then. Look again.
    if (linux_stack::ReadThreadStatus(tid, status) != 0) {
      result->error = "exited";
      return false;
    }
  }
  if (KnownSignalTaker(tid)) {
    result->error = "signal-blocked";
    result->detail = kTakesSignals;
    return false;
  }
  if (status->state == 'T' || status->state == 't') {
    result->error = "stopped";
    return false;
  }
  if (status->state == 'D' && (status->pending & (1ull << (sig - 1)))) {
    // An earlier probe still waits for it to leave D: do not queue another.
    result->error = "uninterruptible";
    return false;
  }
  if (BlocksProbe(tid, sig, deadline, status)) {
    result->error = "signal-blocked";
    return false;
  }
  // A running thread is often about to block: give it a moment to show its
  // registers. One that keeps running is probed without the stack check.
  linux_stack::KernelView view;
  const int64_t settle_until = std::min(deadline, linux_stack::NowNs() + kSettleNs);
  for (;;) {
    const linux_stack::KernelRegisters got = linux_stack::ReadKernelRegisters(tid, &view);
    if (got == linux_stack::KernelRegisters::kKnown) break;
    if (got == linux_stack::KernelRegisters::kUnavailable || linux_stack::NowNs() >= settle_until) {
      return StillUnblocked(tid, sig, deadline, status, result);
    }
    struct timespec pause = {0, 50000};
    nanosleep(&pause, nullptr);
  }
  if (WaitsForSignals(view.syscall)) {
    RememberSignalTaker(tid);
    result->error = "signal-blocked";
    result->detail = kTakesSignals;
    return false;
  }
  if (tid != getpid() && linux_stack::OwnMemoryReadable()) {
    const size_t need = SignalStackBytes();
    const size_t left = linux_stack::ReadableBelow(view.sp, need);
    if (left < need) {
      result->error = "stack-low";
      result->detail = "only " + std::to_string(left) + " bytes of stack are left below its stack pointer; a signal needs " +
                       std::to_string(need);
      return false;
    }
  }
  return StillUnblocked(tid, sig, deadline, status, result);
}

// The calling thread: unwind here, then drop this addon's own frames.
void CaptureSelf(StackResult* result) {
  // The first frame only tells which module is this addon. Symbolized
  // together: dladdr is slow in big executables (a linear walk of node's
  // ~100k dynamic symbols), and Symbolize caches what it finds.
  std::vector<RawFrame> raw(1);
  raw[0].address = reinterpret_cast<uintptr_t>(&linux_stack::UnwindHere);
  raw[0].exact = true;
  linux_stack::UnwindHere(&raw);
  linux_stack::Symbolize(raw, &result->frames);
  const std::string own = result->frames[0].module;
  size_t first = 1;
  while (first < result->frames.size() && !own.empty() && result->frames[first].module == own) first++;
  result->frames.erase(result->frames.begin(), result->frames.begin() + first);
}

}  // namespace

void CaptureStack(uint64_t tid64, double timeout_ms, StackResult* result) {
  *result = StackResult();
  const int64_t start = linux_stack::NowNs();
  if (tid64 == 0 || tid64 > static_cast<uint64_t>(INT_MAX)) {
    result->error = "not-found";
    return;
  }
  const pid_t tid = static_cast<pid_t>(tid64);
  if (!kCpuSupported) {
    result->error = "unsupported";
    result->detail = "no stack probe for this CPU architecture yet";
    return;
  }
  if (tid == Gettid()) {
    CaptureSelf(result);
    return;
  }
  linux_stack::ThreadStatus status;
  if (int e = linux_stack::ReadThreadStatus(tid, &status)) {
    result->error = e == ENOENT || e == ESRCH ? "not-found" : "os-error";
    if (result->error == "os-error") result->detail = std::string("cannot read its status: ") + strerror(e);
    return;
  }
  if (status.state == 'Z' || status.state == 'X') {
    result->error = "exited";
    return;
  }
  const double capped = timeout_ms > 0 ? (timeout_ms < 1e7 ? timeout_ms : 1e7) : 0;
  const int64_t deadline = start + static_cast<int64_t>(capped * 1e6);
  std::vector<RawFrame> raw;
  bool probed = false;
  if (capped == 0) {
    result->error = "not-probed";
  } else {
    std::unique_lock<std::timed_mutex> lock(linux_stack::ProbeMutex(), std::defer_lock);
    if (!lock.try_lock_for(std::chrono::nanoseconds(deadline - linux_stack::NowNs()))) {
      result->error = "busy";
    } else {
      std::string problem;
      result->signal = linux_stack::ProbeSignal(&problem);
      if (result->signal == 0) {
        result->error = "no-signal";
        result->detail = problem;
      } else if (MayProbe(tid, result->signal, deadline, &status, result)) {
        const bool check_room = tid != getpid() && linux_stack::OwnMemoryReadable();
        // A thread in uninterruptible sleep takes the probe when it leaves
        // it, usually in a moment (a page fault, a vfork, another capture's
        // procfs read holding its memory map lock). Not waited for longer.
        const bool uninterruptible = status.state == 'D';
        const int64_t probe_deadline =
            uninterruptible ? std::min(deadline, linux_stack::NowNs() + kUninterruptibleWaitNs) : deadline;
        probed = linux_stack::Probe(tid, check_room, probe_deadline, &raw, result);
        if (!probed && uninterruptible && result->error == "timeout" && result->detail.empty()) {
          result->error = "uninterruptible";
        }
      }
    }
  }
  if (!probed && result->error != "exited") {
    // A thread that runs now may block in a moment: look again for a while,
    // within the timeout (not at all for timeout 0) and at most kRunningRetryNs.
    const int64_t retry_until = std::min(deadline, linux_stack::NowNs() + kRunningRetryNs);
    if (!linux_stack::AppendKernelView(tid, retry_until, &raw) && !linux_stack::ThreadExists(tid)) {
      result->error = "exited";
      result->detail.clear();
    }
  }
  linux_stack::Symbolize(raw, &result->frames);
}

}  // namespace threadleak
