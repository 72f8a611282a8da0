// stack_checks_linux.cc — the checks that decide whether a thread of this
// process may be sent the stack probe at all, made just before it is sent.
//
// Quirks handled here:
//  - A signal frame is pushed onto the target's own stack: the kernel's frame
//    (register state: about 3.5 KB with AVX-512, more than 11 KB once AMX
//    tiles are in use; AT_MINSIGSTKSZ gives the largest this CPU may need,
//    plus the 128-byte red zone) and the handler below it. If that crosses
//    the guard page the kernel kills the whole process with SIGSEGV. So a
//    thread that is off CPU, whose SP the kernel shows, is probed only when
//    that much stack below its SP is readable. A running thread shows no SP:
//    it is probed without the check (a thread that deep in its stack would
//    die of any signal). The handler itself skips the unwinder when short of
//    stack. The main thread's stack grows on demand: no check there. Neither
//    where process_vm_readv, which the checks read memory with, is denied:
//    the probe then behaves as if every thread had room.
//  - A thread in uninterruptible sleep (D) takes a signal only when it leaves
//    D, which is usually a moment later (a page fault, a vfork, another
//    capture's procfs read holding its memory map lock). It is probed, but its
//    answer is awaited for a moment only (stack_linux.cc); a thread that still
//    has an earlier probe pending is not sent another (they would queue).
//  - A thread waiting in sigwaitinfo()/sigtimedwait() has the signals it
//    waits for unblocked while it waits, so SigBlk shows nothing blocked, and
//    a probe sent then is taken by the thread as one of its own signals (a
//    signal-handling thread may even treat it as a request to exit). Asleep
//    in the wait it shows the system call (rt_sigtimedwait): it is reported
//    as blocking the probe, and remembered. But once its wait ends (a timeout,
//    a signal) it is runnable with its mask still unblocked until it runs
//    again, and shows no system call: on a busy machine, for milliseconds. No
//    single look tells it from a thread that runs with the signal unblocked.
//    So a thread is probed only when a look (LookOnce) shows it asleep in
//    one system call (not a signal wait) between two status reads with the
//    signal unblocked and no context switch in between, or once it has used
//    kRanNs of CPU since an earlier look without sleeping, the signal
//    unblocked at both (a wait means a sleep). Not after one look that saw
//    it on a CPU: a look takes microseconds, and a vCPU preempted by its host
//    can hold a thread for longer in the instant it runs with its mask
//    unblocked on its way into or out of a wait. A thread never seen either
//    way before the deadline is not probed. What remains: a thread that
//    blocks the signal and waits for it right after the last look; a probe
//    it takes is noticed and ends the
//    capture at once (stack_probe_linux.cc).
//  - The handler blocks every signal while it runs, its own included; SigBlk
//    shows that mask, so a thread that is answering another capture's probe
//    (a Worker's, or the previous capture's) looks as if it blocked the signal. A status read before that wait is read again,
//    and a thread that answered one of the latest probes may still be
//    returning from the handler (on a busy machine it can be preempted there
//    for longer than another probe takes): for those the check waits for the
//    signal to be unblocked, but only while the thread runs. Once it sleeps it
//    has left the handler (which never sleeps), and it really blocks the signal.
#include <errno.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "stack_linux.h"

#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif

namespace threadleak {
namespace linux_stack {
namespace {

constexpr int64_t kUnblockWaitNs = 20 * 1000 * 1000;  // how long a running thread may take to leave the handler
constexpr int64_t kLookBurstNs = 1000 * 1000;         // looks at a runnable thread back to back for this long,
constexpr long kLookPauseNs = 200 * 1000;             // then pause this long
constexpr int64_t kRanNs = 1000 * 1000;               // CPU time that shows a thread ran outside any signal wait

// The stack a probe needs below a thread's SP: the red zone, the largest
// signal frame this CPU may need, and the handler.
size_t SignalStackBytes() {
  static const size_t bytes = [] {
    size_t frame = getauxval(AT_MINSIGSTKSZ);
    if (frame == 0) frame = 8192;  // kernels that do not tell (x86 before 5.14) have no AMX state
    return 128 + frame + kHandlerBytes;
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
bool WaitUnblocked(pid_t tid, int sig, int64_t deadline, ThreadStatus* status) {
  const uint64_t bit = 1ull << (sig - 1);
  const int64_t until = std::min(deadline, NowNs() + kUnblockWaitNs);
  while (status->state == 'R' && NowNs() < until) {
    sched_yield();
    struct timespec pause = {0, 20000};
    nanosleep(&pause, nullptr);
    if (ReadThreadStatus(tid, status) != 0) return false;
    if (!(status->blocked & bit)) return true;
  }
  ForgetAnswered(tid);  // it blocks the signal: do not wait for it again
  return false;
}

// True when the thread blocks the probe signal, unless only because it is
// still returning from the handler of a probe it answered (then waited out).
bool BlocksProbe(pid_t tid, int sig, int64_t deadline, ThreadStatus* status) {
  return (status->blocked & (1ull << (sig - 1))) &&
         !(AnsweredRecently(tid) && WaitUnblocked(tid, sig, deadline, status));
}

// Threads seen waiting in sigwaitinfo()/sigtimedwait(), or that took a probe
// as their own signal, by tid and start time: they are never probed again.
// Such a thread is out of its wait only for moments, with every signal
// blocked, and a probe sent in one of them is taken by its next wait; the
// checks of one capture can miss that moment, a thread known to take signals
// is not given the chance.
struct SignalTaker {
  pid_t tid;
  uint64_t start_ticks;
};
std::mutex& g_signal_takers_mutex = *new std::mutex;  // never destroyed: captures may run during exit
SignalTaker g_signal_takers[64] = {};
unsigned g_next_signal_taker = 0;

bool KnownSignalTaker(pid_t tid) {
  uint64_t remembered = 0;
  {
    std::lock_guard<std::mutex> lock(g_signal_takers_mutex);
    for (const SignalTaker& t : g_signal_takers) {
      if (t.tid == tid) remembered = t.start_ticks;
    }
  }
  return remembered != 0 && remembered == ThreadStartTicks(tid);  // the same thread, not a reuse of its id
}

}  // namespace

void RememberSignalTaker(pid_t tid) {
  const uint64_t start_ticks = ThreadStartTicks(tid);
  if (start_ticks == 0) return;
  std::lock_guard<std::mutex> lock(g_signal_takers_mutex);
  for (SignalTaker& t : g_signal_takers) {
    if (t.tid == tid) {
      t.start_ticks = start_ticks;
      return;
    }
  }
  g_signal_takers[g_next_signal_taker++ % (sizeof g_signal_takers / sizeof g_signal_takers[0])] = {tid, start_ticks};
}

namespace {

constexpr char kTakesSignals[] =
    "it waits for signals with sigwaitinfo() or sigtimedwait(), which would take the probe as its own";

// The CPU time `tid` has used, in ns, counting the moment it runs now (the
// kernel's per-thread CPU clock); -1 when it is gone.
int64_t ThreadCpuNs(pid_t tid) {
  const clockid_t clock = static_cast<clockid_t>((~static_cast<unsigned>(tid) << 3) | 6);  // CPUCLOCK_SCHED, per thread
  struct timespec ts;
  if (clock_gettime(clock, &ts) != 0) return -1;
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// How a thread was seen between two reads of its status.
enum class Seen { kAsleep, kOnCpu, kUnsure, kRefused };

// An earlier look at a runnable thread with the probe signal unblocked: its
// status, then its CPU time.
struct Anchor {
  bool set = false;
  ThreadStatus status;
  int64_t cpu_ns = -1;
};

// One look at the thread (see the header comment): status, CPU clock, the
// system call, (the room on its stack), CPU clock and status again. Reports
// kAsleep (with *view) when it slept in one system call all along, kOnCpu when
// it ran on a CPU all along, or has run kRanNs since `anchor` and never slept,
// kUnsure when neither could be told, each with the probe signal unblocked
// at both ends; kRefused when result->error says why not.
Seen LookOnce(pid_t tid, int sig, int64_t deadline, ThreadStatus* status, KernelView* view,
              Anchor* anchor, StackResult* result) {
  const uint64_t bit = 1ull << (sig - 1);
  const ThreadStatus before = *status;
  const KernelRegisters got = ReadKernelRegisters(tid, view);
  const bool in_syscall = got == KernelRegisters::kKnown;
  if (in_syscall && WaitsForSignals(view->syscall)) {
    RememberSignalTaker(tid);
    result->error = "signal-blocked";
    result->detail = kTakesSignals;
    return Seen::kRefused;
  }
  if (in_syscall && tid != getpid() && OwnMemoryReadable()) {
    const size_t need = SignalStackBytes();
    const size_t left = ReadableBelow(view->sp, need);
    if (left < need) {
      result->error = "stack-low";
      result->detail = "only " + std::to_string(left) + " bytes of stack are left below its stack pointer; a signal needs " +
                       std::to_string(need);
      return Seen::kRefused;
    }
  }
  // Read before the status: a thread that has not slept since this read
  // (the status read that follows shows it) had run at least this much.
  const int64_t cpu_after = ThreadCpuNs(tid);
  if (ReadThreadStatus(tid, status) != 0) {
    result->error = "exited";
    return Seen::kRefused;
  }
  if (BlocksProbe(tid, sig, deadline, status)) {
    result->error = "signal-blocked";
    return Seen::kRefused;
  }
  const bool unblocked = !(before.blocked & bit) && !(status->blocked & bit);
  const bool never_switched = status->voluntary_switches == before.voluntary_switches &&
                              status->involuntary_switches == before.involuntary_switches;
  const bool running = !in_syscall && before.state == 'R' && status->state == 'R';
  if (unblocked && never_switched && in_syscall) return Seen::kAsleep;
  // A thread seen running is probed only after it ran kRanNs of CPU without
  // sleeping, the signal unblocked at both ends: one look, however short, can
  // fall in the instant a thread entering or leaving a signal wait runs with
  // its mask unblocked (seen: 1 probe in ~1,600 first captures taken so, on a
  // busy VM whose vCPUs are preempted), but a thread that waits for signals
  // sleeps within microseconds of running.
  if (!anchor->set || status->voluntary_switches != anchor->status.voluntary_switches || status->state != 'R' ||
      (status->blocked & bit) || cpu_after < 0) {
    *anchor = Anchor{true, *status, cpu_after};
    return Seen::kUnsure;
  }
  return running && anchor->status.state == 'R' && cpu_after - anchor->cpu_ns >= kRanNs ? Seen::kOnCpu : Seen::kUnsure;
}

}  // namespace

// The checks before a probe: true when `tid` may be probed, else result->error
// (and detail) say why not. Looks again, with short sleeps, until the thread
// is seen asleep or on a CPU, or the deadline passes.
bool MayProbe(pid_t tid, int sig, int64_t deadline, ThreadStatus* status, StackResult* result) {
  if (status->blocked & (1ull << (sig - 1))) {
    // Read before the capture claimed its slot: the thread may have been
    // answering another capture's probe then. Look again.
    if (ReadThreadStatus(tid, status) != 0) {
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
  int64_t burst_until = NowNs() + kLookBurstNs;
  Anchor anchor;
  for (;;) {
    KernelView view;
    switch (LookOnce(tid, sig, deadline, status, &view, &anchor, result)) {
      case Seen::kAsleep:
      case Seen::kOnCpu:
        return true;
      case Seen::kRefused:
        return false;
      case Seen::kUnsure:
        break;
    }
    if (NowNs() >= deadline) {
      result->error = "not-sent";
      return false;
    }
    // Looks come in bursts: a thread that runs is seen on a CPU only while
    // this one runs too, on another CPU. Between bursts, a pause lets the
    // scheduler move either (on a busy machine they often share a CPU).
    if (NowNs() >= burst_until) {
      struct timespec pause = {0, kLookPauseNs};
      nanosleep(&pause, nullptr);
      burst_until = NowNs() + kLookBurstNs;
    }
  }
}

}  // namespace linux_stack
}  // namespace threadleak
