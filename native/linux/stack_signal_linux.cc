// stack_signal_linux.cc — choosing and installing the stack probe's signal.
//
// Strategy: the probe needs a signal that nobody else in the process uses.
// Real-time signals are the only candidates (the classic ones all have a
// meaning), and they are chosen at run time from SIGRTMAX downwards: SIGRTMIN
// is 34 on glibc but 35 on musl (both keep the lowest ones for themselves),
// and other runtimes take SIGRTMIN (.NET) or nearby ones. A signal is free
// when its disposition is SIG_DFL and nothing suggests another user: it is
// not blocked by the main thread or the calling thread (code that consumes a
// signal with sigwaitinfo or a signalfd blocks it and leaves SIG_DFL), and
// none is pending. THREADLEAK_STACK_SIGNAL=<n> picks the signal instead (still
// only a free real-time one); 0 turns the probe off.
//
// Quirks handled here:
//  - Check-then-install races with another library installing its own
//    handler: sigaction returns the previous action atomically, and if it was
//    not SIG_DFL after all, it is put back and the next signal is tried.
//  - Once installed, threadleak's handler stays for the life of the process.
//    Restoring SIG_DFL would let a late queued probe (sent before a timeout,
//    delivered after) terminate the process: that is the default action of a
//    real-time signal.
//  - A signal is taken only while its action is SIG_DFL, so there is never an
//    earlier handler to chain to. One that reaches the handler but is not a
//    live probe (sent with kill() or sigqueue() by anyone, or a late probe
//    whose capture gave up) is dropped: its previous action, SIG_DFL, would
//    have ended the process. A library that installs its own handler later
//    takes the signal over (the probe then stops using it, see
//    ProbeSignalIsOurs); if it chains to threadleak's, the same applies.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

bool IsDefault(const struct sigaction& action) {
  return !(action.sa_flags & SA_SIGINFO) && action.sa_handler == SIG_DFL;
}

bool SignalIsFree(int sig, const ThreadStatus& main_thread) {
  struct sigaction current;
  if (sigaction(sig, nullptr, &current) != 0 || !IsDefault(current)) return false;
  const uint64_t bit = 1ull << (sig - 1);
  if ((main_thread.blocked & bit) || (main_thread.shared_pending & bit)) return false;
  sigset_t mine;
  return pthread_sigmask(SIG_BLOCK, nullptr, &mine) == 0 && !sigismember(&mine, sig);
}

bool TakeSignal(int sig, SignalHandler handler) {
  struct sigaction ours;
  memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = handler;
  // Every signal is blocked while the handler runs, its own included (no
  // SA_NODEFER): a probe sent while the thread is still returning from the
  // previous one waits until it has returned instead of nesting on its stack.
  ours.sa_flags = SA_SIGINFO | SA_RESTART;
  sigfillset(&ours.sa_mask);
  struct sigaction previous;
  if (sigaction(sig, &ours, &previous) != 0) return false;
  if (!IsDefault(previous)) {
    sigaction(sig, &previous, nullptr);  // taken between the check and now: give it back
    return false;
  }
  return true;
}

}  // namespace

int InstallProbeSignal(SignalHandler handler, std::string* problem) {
  ThreadStatus main_thread;
  if (int e = ReadThreadStatus(getpid(), &main_thread)) {
    *problem = std::string("cannot read the main thread's signal mask: ") + strerror(e);
    return 0;
  }
  const int lowest = SIGRTMIN, highest = SIGRTMAX;
  const std::string range = " (real-time signals are " + std::to_string(lowest) + ".." + std::to_string(highest) + ")";
  if (const char* env = getenv("THREADLEAK_STACK_SIGNAL"); env && *env) {
    const std::string quoted = std::string("THREADLEAK_STACK_SIGNAL=") + env;
    char* end = nullptr;
    errno = 0;
    const long wanted = strtol(env, &end, 10);
    if (errno != 0 || end == env || *end != '\0') {
      *problem = quoted + " is not a signal number" + range;
    } else if (wanted == 0) {
      *problem = quoted + " turns the probe off";
    } else if (wanted < lowest || wanted > highest || wanted >= 128) {
      *problem = quoted + " is not a real-time signal" + range;
    } else if (!SignalIsFree(static_cast<int>(wanted), main_thread) || !TakeSignal(static_cast<int>(wanted), handler)) {
      *problem = quoted + " is already handled, ignored, blocked or pending";
    } else {
      return static_cast<int>(wanted);
    }
    return 0;
  }
  for (int sig = highest; sig >= lowest + 2 && sig < 128; --sig) {
    if (SignalIsFree(sig, main_thread) && TakeSignal(sig, handler)) return sig;
  }
  *problem = "every real-time signal is in use" + range;
  return 0;
}

bool ProbeSignalIsOurs(int sig, SignalHandler handler) {
  struct sigaction current;
  return sigaction(sig, nullptr, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
         current.sa_sigaction == handler;
}

}  // namespace linux_stack
}  // namespace threadleak
