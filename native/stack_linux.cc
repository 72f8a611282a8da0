// stack_linux.cc — the native stack of one thread of this process, on Linux.
//
// Strategy: a real-time signal is queued to exactly that thread with
// rt_tgsigqueueinfo (si_code SI_QUEUE, a generation token in si_value). Its
// handler runs on the target thread, takes the interrupted PC and SP from the
// ucontext, unwinds with libgcc's _Unwind_Backtrace into a preallocated slot
// (or, where unwinding in a handler is not known to be lock-free, copies the
// raw stack there to be scanned later) and wakes the requester with a futex.
// The requester waits for a bounded time; symbolization happens afterwards,
// outside the handler (stack_procfs_linux.cc). Captures are serialized.
//
// A thread that cannot run the handler (it blocks the signal, is stopped or
// in uninterruptible sleep, or does not answer in time) gets an error plus
// the kernel's view: PC and SP from procfs and a scan of its stack.
//
// Quirks handled here:
//  - Which signal, and why it is never given back: stack_signal_linux.cc.
//  - A timed-out probe can still be delivered later, even into the next
//    capture. The handler claims the slot only if its token is the one armed
//    now (compare-and-swap), so a late signal never writes into reused memory;
//    a handler that claimed the slot but did not finish in time keeps that
//    slot for ever and the next capture gets a new one.
//  - The first call of the unwinder and lazily bound PLT entries are not
//    async-signal-safe: everything the handler calls is called once when
//    installing (and the addon is linked with -z now).
//  - libgcc finds unwind tables without locks only from GCC 12 on glibc 2.35+
//    (_dl_find_object); elsewhere it takes the loader lock, which the target
//    thread may hold, so the handler only copies the stack (THREADLEAK_STACK_UNWIND=0
//    forces that mode). Residual risk: unwind info registered at run time
//    with __register_frame (some JITs) makes libgcc take its own mutex.
//  - The handler blocks every signal while it runs, its own included, so
//    probes never nest on the target's stack; SigBlk shows that mask, so the
//    thread that answered the previous probe may look for a moment as if it
//    blocked the signal: for that thread the check waits for it to clear.
//  - A probed thread blocked in nanosleep, poll, epoll_wait... returns EINTR
//    even with SA_RESTART; the handler itself uses about 5 KB of its stack.
#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "stack_linux.h"

namespace threadleak {
namespace {

using linux_stack::RawFrame;

constexpr uint64_t kTag = 0x71ea000000000000ull;  // marks a token as threadleak's
constexpr uint64_t kTagMask = 0xffff000000000000ull;
constexpr uint64_t kClaimed = 1ull << 47;          // set by the handler that owns the slot
constexpr uint64_t kGenerationMask = kClaimed - 1;
constexpr int kMaxFrames = 128;
constexpr int64_t kClaimedGraceNs = 20 * 1000 * 1000;  // a claimed handler gets this much more
#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__)
constexpr bool kCpuSupported = true;  // RegistersFrom and the scan's call check know it
#else
constexpr bool kCpuSupported = false;
#endif
constexpr int64_t kRunningRetryNs = 10 * 1000 * 1000;  // how long the kernel view waits for a running thread

// The memory a handler writes into. Allocated outside any handler.
struct Slot {
  std::atomic<uint64_t> claim{0};  // armed token, token | kClaimed, or 0 when idle
  std::atomic<uint32_t> done{0};   // futex word: 1 once the handler has finished
  std::atomic<pid_t> target{0};
  bool unwind = false;             // unwind in the handler, or only copy the stack
  bool has_registers = false;
  uintptr_t pc = 0, sp = 0;
  int count = 0;
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  size_t copied = 0;
  unsigned char stack[linux_stack::kScanBytes];
};
static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint64_t>::is_always_lock_free,
              "the handler needs lock-free atomics and a 32-bit futex word");

std::timed_mutex g_capture_mutex;  // one capture at a time; guards everything below but g_slot
bool g_install_tried = false;
int g_signal = 0;
std::string g_signal_problem;      // why there is no signal
bool g_unwind_in_handler = false;
uint64_t g_generation = 0;
pid_t g_last_answered = 0;         // the thread that answered the latest probe
std::atomic<Slot*> g_slot{nullptr};

pid_t Gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool RegistersFrom(void* context, uintptr_t* pc, uintptr_t* sp) {
  auto* uc = static_cast<ucontext_t*>(context);
#if defined(__x86_64__)
  *pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  *sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  *pc = static_cast<uintptr_t>(uc->uc_mcontext.pc);
  *sp = static_cast<uintptr_t>(uc->uc_mcontext.sp);
#elif defined(__i386__)
  *pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_EIP]);
  *sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_ESP]);
#else
  (void)uc;
  return false;
#endif
  return true;
}

// Unwinding state: frames are recorded from the interrupted PC on, skipping
// the handler's own frames and the kernel's signal trampoline.
struct Walk {
  uintptr_t* frames;
  bool* exact;
  int capacity;
  int count;
  uintptr_t start_pc;  // 0: record from the first frame
  bool started;
};

_Unwind_Reason_Code Collect(struct _Unwind_Context* context, void* arg) {
  auto* walk = static_cast<Walk*>(arg);
  int before_insn = 0;
  uintptr_t ip = _Unwind_GetIPInfo(context, &before_insn);
  if (!walk->started) {
    if (walk->start_pc != 0 && ip != walk->start_pc) return _URC_NO_REASON;
    walk->started = true;
  }
  if (ip == 0 || walk->count >= walk->capacity) return _URC_END_OF_STACK;
  walk->exact[walk->count] = before_insn != 0;
  walk->frames[walk->count++] = ip;
  return _URC_NO_REASON;
}

void Handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uint64_t token = reinterpret_cast<uintptr_t>(info->si_value.sival_ptr);
  const bool ours = info->si_code == SI_QUEUE && info->si_pid == getpid() && (token & kTagMask) == kTag;
  if (!ours) {
    linux_stack::ChainToPrevious(sig, info, context);
    errno = saved_errno;
    return;
  }
  Slot* slot = g_slot.load(std::memory_order_acquire);
  uint64_t expected = token;
  if (slot == nullptr || slot->target.load(std::memory_order_relaxed) != Gettid() ||
      !slot->claim.compare_exchange_strong(expected, token | kClaimed, std::memory_order_acq_rel)) {
    errno = saved_errno;  // a late probe: its capture has given up
    return;
  }
  slot->has_registers = RegistersFrom(context, &slot->pc, &slot->sp);
  if (slot->unwind && slot->has_registers) {
    Walk walk{slot->frames, slot->exact, kMaxFrames, 0, slot->pc, false};
    _Unwind_Backtrace(Collect, &walk);
    slot->count = walk.count;
  }
  // The unwinder stopped at once (JIT code has no unwind tables) or was not
  // used: keep the raw stack for a scan.
  if (slot->count <= 1 && slot->has_registers) {
    slot->copied = linux_stack::CopyOwnMemory(slot->sp, slot->stack, sizeof slot->stack);
  }
  slot->done.store(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&slot->done), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  errno = saved_errno;
}

// GCC 12's libgcc_s (symbol version GCC_12.0.0) looks unwind tables up with
// glibc 2.35's lock-free _dl_find_object when glibc has it.
bool UnwindIsLockFree() {
  if (dlsym(RTLD_DEFAULT, "_dl_find_object") == nullptr) return false;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&_Unwind_Backtrace), &info) == 0 || info.dli_fname == nullptr) return false;
  void* libgcc = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (libgcc == nullptr) return false;
  const bool gcc12 = dlvsym(libgcc, "__extendhfsf2", "GCC_12.0.0") != nullptr;
  dlclose(libgcc);
  return gcc12;
}

void Install() {
  g_install_tried = true;
  const char* unwind_env = getenv("THREADLEAK_STACK_UNWIND");
  g_unwind_in_handler = !(unwind_env && strcmp(unwind_env, "0") == 0) && UnwindIsLockFree();

  // Warm up everything the handler calls.
  uintptr_t frames[4];
  bool exact[4];
  Walk walk{frames, exact, 4, 0, 0, false};
  _Unwind_Backtrace(Collect, &walk);
  unsigned char probe[16];
  linux_stack::CopyOwnMemory(reinterpret_cast<uintptr_t>(&walk), probe, sizeof probe);
  std::atomic<uint32_t> dummy{0};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&dummy), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  (void)Gettid();
  (void)getpid();

  // The handler's code must outlive any unload of this addon.
  Dl_info self{};
  if (dladdr(reinterpret_cast<void*>(&Handler), &self) != 0 && self.dli_fname != nullptr) {
    if (void* pinned = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)) dlclose(pinned);
  }

  Slot* slot = new (std::nothrow) Slot;
  if (slot == nullptr) {
    g_signal_problem = "out of memory for the probe's buffer";
    return;
  }
  g_slot.store(slot, std::memory_order_release);

  g_signal = linux_stack::InstallProbeSignal(Handler, &g_signal_problem);
}

// Waits until the slot is done or `deadline` passes. True when done.
bool WaitDone(Slot* slot, int64_t deadline) {
  while (slot->done.load(std::memory_order_acquire) == 0) {
    const int64_t left = deadline - NowNs();
    if (left <= 0) return false;
    struct timespec relative = {static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    // EINTR, EAGAIN (already done) and ETIMEDOUT all just loop.
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&slot->done), FUTEX_WAIT_PRIVATE, 0, &relative, nullptr, 0);
  }
  return true;
}

// The thread that answered the previous probe may still be returning from
// the handler, which blocks every signal until it returns: SigBlk shows the
// probe signal blocked for that moment. Wait for it to clear, within the
// deadline. True when it did (and *status is fresh).
bool WaitUnblocked(pid_t tid, int64_t deadline, linux_stack::ThreadStatus* status) {
  const uint64_t bit = 1ull << (g_signal - 1);
  while (NowNs() < deadline) {
    sched_yield();
    struct timespec pause = {0, 20000};
    nanosleep(&pause, nullptr);
    if (linux_stack::ReadThreadStatus(tid, status) != 0) return false;
    if (!(status->blocked & bit)) return true;
  }
  g_last_answered = 0;  // it blocks the signal for good: do not wait for it again
  return false;
}

// Probes `tid`; on success appends its frames. Otherwise sets the error.
bool Probe(pid_t tid, int64_t deadline, std::vector<RawFrame>* raw, StackResult* result) {
  Slot* slot = g_slot.load(std::memory_order_relaxed);
  const uint64_t token = kTag | (++g_generation & kGenerationMask);
  slot->target.store(tid, std::memory_order_relaxed);
  slot->unwind = g_unwind_in_handler;
  slot->has_registers = false;
  slot->count = 0;
  slot->copied = 0;
  slot->done.store(0, std::memory_order_relaxed);
  slot->claim.store(token, std::memory_order_release);  // armed

  siginfo_t info;
  memset(&info, 0, sizeof info);
  info.si_signo = g_signal;
  info.si_code = SI_QUEUE;
  info.si_pid = getpid();
  info.si_uid = getuid();
  info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(token));
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, g_signal, &info) != 0) {
    const int e = errno;
    slot->claim.store(0, std::memory_order_release);
    if (e == ESRCH) {
      result->error = "exited";
    } else {
      result->error = "os-error";
      result->detail = std::string("rt_tgsigqueueinfo failed: ") + strerror(e) +
                       (e == EAGAIN ? " (the queue of pending signals is full, see RLIMIT_SIGPENDING)" : "");
    }
    return false;
  }
  if (!WaitDone(slot, deadline)) {
    uint64_t armed = token;
    if (slot->claim.compare_exchange_strong(armed, 0, std::memory_order_acq_rel)) {
      // Disarmed before any handler started: a late delivery will be ignored.
      result->error = linux_stack::ThreadExists(tid) ? "timeout" : "exited";
      return false;
    }
    if (!WaitDone(slot, NowNs() + kClaimedGraceNs)) {
      // A handler owns the slot and has not finished: leave the slot to it.
      Slot* fresh = new (std::nothrow) Slot;
      g_slot.store(fresh, std::memory_order_release);
      if (fresh == nullptr) {
        g_signal_problem = "out of memory for the probe's buffer";
        g_signal = 0;
      }
      result->error = "timeout";
      result->detail = "its signal handler started but did not finish in time";
      return false;
    }
  }
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
  if (slot->copied > 0) {
    std::vector<linux_stack::Mapping> maps;
    if (linux_stack::ReadMaps(&maps)) linux_stack::ScanStack(slot->sp, slot->stack, slot->copied, maps, raw);
  }
  slot->claim.store(0, std::memory_order_release);  // idle
  g_last_answered = tid;
  return true;
}

// The calling thread: unwind here. The caller drops this addon's own frames.
void CaptureSelf(std::vector<RawFrame>* raw) {
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  Walk walk{frames, exact, kMaxFrames, 0, 0, false};
  _Unwind_Backtrace(Collect, &walk);
  for (int i = 0; i < walk.count; i++) {
    RawFrame f;
    f.address = frames[i];
    f.exact = exact[i];
    raw->push_back(f);
  }
}

}  // namespace

void CaptureStack(uint64_t tid64, double timeout_ms, StackResult* result) {
  *result = StackResult();
  const int64_t start = NowNs();
  std::vector<RawFrame> raw;
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
    // Symbolized first: dladdr is slow in big executables (a linear walk of
    // node's ~100k dynamic symbols), and Symbolize caches what it finds.
    RawFrame self;
    self.address = reinterpret_cast<uintptr_t>(&CaptureSelf);
    self.exact = true;
    raw.push_back(self);
    CaptureSelf(&raw);
    linux_stack::Symbolize(raw, &result->frames);
    const std::string own = result->frames[0].module;
    size_t first = 1;
    while (first < result->frames.size() && !own.empty() && result->frames[first].module == own) first++;
    result->frames.erase(result->frames.begin(), result->frames.begin() + first);
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
  bool probed = false;
  if (capped == 0) {
    result->error = "not-probed";
  } else {
    std::unique_lock<std::timed_mutex> lock(g_capture_mutex, std::defer_lock);
    if (!lock.try_lock_for(std::chrono::nanoseconds(deadline - NowNs()))) {
      result->error = "busy";
    } else {
      if (!g_install_tried) Install();
      if (g_signal != 0 && !linux_stack::ProbeSignalIsOurs(g_signal, Handler)) {
        g_signal_problem = "signal " + std::to_string(g_signal) + " was taken over by another handler";
        g_signal = 0;
      }
      result->signal = g_signal;
      if (g_signal == 0) {
        result->error = "no-signal";
        result->detail = g_signal_problem;
      } else if (status.state == 'T' || status.state == 't') {
        result->error = "stopped";
      } else if (status.state == 'D') {
        result->error = "uninterruptible";
      } else if ((status.blocked & (1ull << (g_signal - 1))) &&
                 !(tid == g_last_answered && WaitUnblocked(tid, deadline, &status))) {
        result->error = "signal-blocked";
      } else {
        probed = Probe(tid, deadline, &raw, result);
      }
    }
  }
  if (!probed && result->error != "exited") {
    // A thread that runs now may block in a moment: look again for a while,
    // within the timeout (not at all for timeout 0) and at most kRunningRetryNs.
    const int64_t retry_until = std::min(deadline, NowNs() + kRunningRetryNs);
    if (!linux_stack::AppendKernelView(tid, retry_until, &raw) && !linux_stack::ThreadExists(tid)) {
      result->error = "exited";
      result->detail.clear();
    }
  }
  linux_stack::Symbolize(raw, &result->frames);
}

}  // namespace threadleak
