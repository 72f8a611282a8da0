// stack_probe_linux.cc — one stack probe: a real-time signal queued to
// exactly one thread of this process, and the wait for its answer.
//
// Strategy: rt_tgsigqueueinfo (si_code SI_QUEUE, a token in si_value) makes
// the handler (stack_handler_linux.cc) run on the target thread and fill the
// slot the token names. The requester waits for a bounded time, holding no
// lock: each capture claims a slot of its own (one capture per target at a
// time), so captures of other threads go on while one waits.
//
// Quirks handled here:
//  - A handler that claimed its slot but did not finish in time keeps that
//    slot for ever (it may still write into it): the slot is replaced.
//  - A probe can be taken without the handler: a thread waiting in
//    sigwaitinfo() for every signal dequeues it as its own. The checks in
//    stack_linux.cc leave that no opening they can see, but a thread may block
//    the signal and wait for it right after the last look. Waiting the whole
//    timeout then would be waiting for nothing, so the wait looks at the
//    target every kLostCheckNs: once the signal is no longer pending, no
//    handler has claimed the slot and the thread sleeps (the handler never
//    sleeps before it claims), the probe was taken: the capture ends at once.
//    A handler that runs after all finds the slot disarmed.
//  - This state is never destroyed: a Worker may capture a stack while the
//    process exits and runs static destructors.
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr int64_t kClaimedGraceNs = 20 * 1000 * 1000;  // a claimed handler gets this much more
constexpr int64_t kRecentNs = 100 * 1000 * 1000;       // an answer this old means the handler has returned
constexpr int64_t kLostCheckNs = 2 * 1000 * 1000;      // how often a wait looks whether its probe was taken

// Guarded by `mutex`, which is held only for bookkeeping, never across a wait
// for an answer. The slots' contents belong to the capture that claimed them.
struct State {
  std::mutex mutex;
  std::condition_variable released;  // a slot was released
  bool install_tried = false;
  int signal = 0;
  std::string signal_problem;  // why there is no signal
  bool unwind_in_handler = false;
  uint64_t generation = 0;
  struct Answer {
    pid_t tid;
    int64_t at_ns;
  } answered[32] = {};         // the threads that answered the latest probes, and when
  unsigned next_answered = 0;
  bool in_use[kSlotCount] = {};
  pid_t target[kSlotCount] = {};  // the thread each slot in use was claimed for
};
State& g = *new State;  // never destroyed (see the header comment)

// True for the C runtime that starts threads (glibc's libc, or its
// libpthread before 2.34; musl's libc): a thread's outermost frames are in it.
bool IsThreadEntryRuntime(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  for (const char* prefix : {"libc.so", "libpthread.so", "libc.musl-", "ld-musl-"}) {
    if (name.compare(0, strlen(prefix), prefix) == 0) return true;
  }
  return false;
}

// Waits until the slot is done or `deadline` passes. True when done.
bool WaitDone(ProbeSlot* slot, int64_t deadline) {
  while (slot->done.load(std::memory_order_acquire) == 0) {
    const int64_t left = deadline - NowNs();
    if (left <= 0) return false;
    struct timespec relative = {static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    // EINTR, EAGAIN (already done) and ETIMEDOUT all just loop.
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&slot->done), FUTEX_WAIT_PRIVATE, 0, &relative, nullptr, 0);
  }
  return true;
}

// Readies slot `index` for a probe of `tid` and returns it; *token is armed.
ProbeSlot* ArmSlot(int index, pid_t tid, bool check_room, uint64_t* token) {
  ProbeSlot* slot = g_probe_slots[index].load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    *token = kProbeTag | (static_cast<uint64_t>(index) << kSlotShift) | (++g.generation & kGenerationMask);
    slot->unwind = g.unwind_in_handler;
  }
  slot->target.store(tid, std::memory_order_relaxed);
  slot->check_room = check_room;
  slot->has_registers = false;
  slot->count = 0;
  slot->last_sp = 0;
  slot->copied = 0;
  slot->done.store(0, std::memory_order_relaxed);
  slot->claim.store(*token, std::memory_order_release);  // armed
  return slot;
}

// Queues the probe signal, carrying `token`, to thread `tid`.
bool SendProbe(pid_t tid, int sig, uint64_t token, StackResult* result) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = SI_QUEUE;
  info.si_pid = getpid();
  info.si_uid = getuid();
  info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(token));
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, sig, &info) == 0) return true;
  const int e = errno;
  if (e == ESRCH) {
    result->error = "exited";
  } else {
    result->error = "os-error";
    result->detail = std::string("rt_tgsigqueueinfo failed: ") + strerror(e) +
                     (e == EAGAIN ? " (the queue of pending signals is full, see RLIMIT_SIGPENDING)" : "");
  }
  return false;
}

// True when the probe is lost (see the header comment): the thread exited, or
// the signal is no longer pending while the thread sleeps and no handler has
// claimed the slot. Status first, slot second: a handler that dequeued the
// signal claims the slot before it could sleep.
bool ProbeLost(pid_t tid, int sig, const ProbeSlot* slot, uint64_t token, bool* exited) {
  ThreadStatus status;
  *exited = ReadThreadStatus(tid, &status) != 0 || status.state == 'Z' || status.state == 'X';
  if (*exited) return true;
  const uint64_t bit = 1ull << (sig - 1);
  return status.state == 'S' && !(status.pending & bit) && !(status.shared_pending & bit) &&
         slot->claim.load(std::memory_order_acquire) == token;
}

// Waits for the answer until `deadline`, ending early when the probe is lost.
// True when answered; otherwise the slot is disarmed (or, when a handler
// owns it and does not finish, replaced) and result->error says why.
bool AwaitAnswer(int index, ProbeSlot* slot, pid_t tid, int sig, uint64_t token, int64_t deadline, StackResult* result) {
  bool exited = false;
  for (;;) {
    if (WaitDone(slot, std::min(deadline, NowNs() + kLostCheckNs))) return true;
    if (NowNs() >= deadline || ProbeLost(tid, sig, slot, token, &exited)) break;
  }
  uint64_t armed = token;
  if (slot->claim.compare_exchange_strong(armed, 0, std::memory_order_acq_rel)) {
    // Disarmed before any handler started: a late delivery will be ignored.
    if (exited || !ThreadExists(tid)) {
      result->error = "exited";
    } else if (NowNs() < deadline) {
      result->error = "signal-blocked";
      result->detail = kTookProbe;
    } else {
      result->error = "timeout";
    }
    return false;
  }
  if (WaitDone(slot, NowNs() + kClaimedGraceNs)) return true;
  // A handler owns the slot and has not finished: leave the slot to it.
  ProbeSlot* fresh = new (std::nothrow) ProbeSlot;
  std::lock_guard<std::mutex> lock(g.mutex);
  g_probe_slots[index].store(fresh, std::memory_order_release);
  if (fresh == nullptr) {
    g.signal_problem = "out of memory for the probe's buffer";
    g.signal = 0;
  }
  result->error = "timeout";
  result->detail = "its signal handler started but did not finish in time";
  return false;
}

// Appends what the handler left in the slot: the unwound frames, or a scan of
// the copied stack; and a scan of the live stack from where the unwinder
// stopped short of the thread's entry.
void CollectFrames(const ProbeSlot* slot, pid_t tid, std::vector<RawFrame>* raw) {
  if (slot->has_registers && slot->count == 0) {
    RawFrame pc;
    pc.address = slot->pc;
    pc.exact = true;
    raw->push_back(pc);
  }
  for (int i = 0; i < slot->count; i++) {
    RawFrame f;
    f.address = slot->frames[i];
    f.exact = slot->exact[i];
    raw->push_back(f);
  }
  std::vector<Mapping> maps;
  if (slot->copied > 0) {
    if (ReadMaps(&maps)) ScanStack(slot->sp, slot->stack, slot->copied, maps, raw);
  } else if (slot->count > 1 && slot->last_sp != 0 && tid != getpid()) {
    // Unwound, but did it reach the thread's entry? A thread's outermost
    // frames are the C runtime's (start_thread, clone). When the last frame
    // is elsewhere the unwinder stopped at code without unwind tables: scan
    // the stack on from there for the frames it could not reach. The thread
    // runs again by now; it is read where it was only if it is still there,
    // which a parked thread is, and the scanned frames say so.
    if (!IsThreadEntryRuntime(LoadedPath(slot->frames[slot->count - 1])) && ReadMaps(&maps)) {
      ScanStack(slot->last_sp, nullptr, 0, maps, raw);
    }
  }
}

}  // namespace

const char kTookProbe[] =
    "it took the probe as one of its own signals: it waits for signals with sigwaitinfo() or sigtimedwait()";

int ClaimSlot(pid_t tid, int64_t deadline) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(std::max<int64_t>(0, deadline - NowNs()));
  std::unique_lock<std::mutex> lock(g.mutex);
  int free_slot = -1;
  const bool got = g.released.wait_until(lock, until, [&] {
    free_slot = -1;
    for (int i = 0; i < kSlotCount; i++) {
      if (g.in_use[i] && g.target[i] == tid) return false;  // one capture per target at a time
      if (!g.in_use[i] && free_slot < 0) free_slot = i;
    }
    return free_slot >= 0;
  });
  if (!got) return -1;
  if (g_probe_slots[free_slot].load(std::memory_order_relaxed) == nullptr) {
    ProbeSlot* slot = new (std::nothrow) ProbeSlot;
    if (slot == nullptr) return -1;
    g_probe_slots[free_slot].store(slot, std::memory_order_release);
  }
  g.in_use[free_slot] = true;
  g.target[free_slot] = tid;
  return free_slot;
}

void ReleaseSlot(int slot) {
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    g.in_use[slot] = false;
    g.target[slot] = 0;
  }
  g.released.notify_all();
}

int ProbeSignal(std::string* problem) {
  std::lock_guard<std::mutex> lock(g.mutex);
  if (!g.install_tried) {
    g.install_tried = true;
    g.signal = InstallProbeHandler(&g.unwind_in_handler, &g.signal_problem);
  }
  if (g.signal != 0 && !ProbeHandlerIsOurs(g.signal)) {
    g.signal_problem = "signal " + std::to_string(g.signal) + " was taken over by another handler";
    g.signal = 0;
  }
  if (g.signal == 0) *problem = g.signal_problem;
  return g.signal;
}

bool AnsweredRecently(pid_t tid) {
  std::lock_guard<std::mutex> lock(g.mutex);
  const int64_t now = NowNs();
  for (const State::Answer& answer : g.answered) {
    if (answer.tid == tid && now - answer.at_ns < kRecentNs) return true;
  }
  return false;
}

void ForgetAnswered(pid_t tid) {
  std::lock_guard<std::mutex> lock(g.mutex);
  for (State::Answer& answer : g.answered) {
    if (answer.tid == tid) answer.tid = 0;
  }
}

bool Probe(int index, pid_t tid, bool check_room, int64_t deadline, std::vector<RawFrame>* raw, StackResult* result) {
  uint64_t token = 0;
  ProbeSlot* slot = ArmSlot(index, tid, check_room, &token);
  if (!SendProbe(tid, result->signal, token, result)) {
    slot->claim.store(0, std::memory_order_release);
    return false;
  }
  if (!AwaitAnswer(index, slot, tid, result->signal, token, deadline, result)) return false;
  CollectFrames(slot, tid, raw);
  slot->claim.store(0, std::memory_order_release);  // idle
  std::lock_guard<std::mutex> lock(g.mutex);
  g.answered[g.next_answered++ % (sizeof g.answered / sizeof g.answered[0])] = {tid, NowNs()};
  return true;
}

}  // namespace linux_stack
}  // namespace threadleak
