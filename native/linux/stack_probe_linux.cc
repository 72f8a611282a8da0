// stack_probe_linux.cc — one stack probe: a real-time signal queued to
// exactly one thread of this process, and the handler that answers it.
//
// Strategy: rt_tgsigqueueinfo (si_code SI_QUEUE, a generation token in
// si_value) makes the handler run on the target thread. The handler takes the
// interrupted PC and SP from the ucontext, unwinds with libgcc's
// _Unwind_Backtrace into a preallocated slot (or, where unwinding in a handler
// is not known to be lock-free, copies the raw stack there to be scanned
// later) and wakes the requester with a futex. The requester waits for a
// bounded time. Probes are serialized by ProbeMutex().
//
// Quirks handled here:
//  - A timed-out probe can still be delivered later, even into the next
//    capture. The handler claims the slot only if its token is the one armed
//    now (compare-and-swap), so a late signal never writes into reused memory;
//    a handler that claimed the slot but did not finish in time keeps that
//    slot for ever and the next capture gets a new one.
//  - The first call of the unwinder and lazily bound PLT entries are not
//    async-signal-safe: everything the handler calls is called once when
//    installing (and the addon is linked with -z now).
//  - libgcc finds unwind tables without locks only when it was built to use
//    glibc 2.35's _dl_find_object (GCC 12+): elsewhere it takes the loader
//    lock, which the target thread may hold, and the handler would deadlock
//    the thread. A GCC 12 version tag is not proof (a libgcc_s built against
//    an older glibc, as conda ships, has it too), so the handler unwinds only
//    when the libgcc_s in use imports _dl_find_object; otherwise it only copies
//    the stack (THREADLEAK_STACK_UNWIND=0 forces that). Residual risk: unwind
//    info registered at run time with __register_frame (some JITs) makes
//    libgcc take its own mutex.
//  - The handler runs on the target's own stack, below the kernel's signal
//    frame. The unwinder needs about 1.2 KB more than a copy of the stack, so
//    before unwinding the handler checks that kUnwindBytes below it are
//    readable (a guard page is not) and only copies otherwise. (The main
//    thread's stack grows on demand, so there is no such check there.)
//  - The handler blocks every signal while it runs, its own included, so
//    probes never nest on the target's stack.
//  - The unwinder stops at the first frame without unwind tables (hand
//    written assembly, code built without them: libvips's glib stops at
//    g_cond_wait_until), short of the thread's entry. When the last frame
//    reached is not the C runtime's thread start, the stack above it is
//    scanned (live, after the handler) for the rest.
//  - This state is never destroyed: a Worker may capture a stack while the
//    process exits and runs static destructors.
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr uint64_t kTag = 0x71ea000000000000ull;  // marks a token as threadleak's
constexpr uint64_t kTagMask = 0xffff000000000000ull;
constexpr uint64_t kClaimed = 1ull << 47;          // set by the handler that owns the slot
constexpr uint64_t kGenerationMask = kClaimed - 1;
constexpr int kMaxFrames = 128;
constexpr int64_t kClaimedGraceNs = 20 * 1000 * 1000;  // a claimed handler gets this much more
constexpr int64_t kRecentNs = 100 * 1000 * 1000;       // an answer this old means the handler has returned

// The memory a handler writes into. Allocated outside any handler.
struct Slot {
  std::atomic<uint64_t> claim{0};  // armed token, token | kClaimed, or 0 when idle
  std::atomic<uint32_t> done{0};   // futex word: 1 once the handler has finished
  std::atomic<pid_t> target{0};
  bool unwind = false;             // unwind in the handler, or only copy the stack
  bool check_room = false;         // unwind only with kUnwindBytes of stack left
  bool has_registers = false;
  uintptr_t pc = 0, sp = 0;
  int count = 0;
  uintptr_t last_sp = 0;           // the stack pointer in the outermost unwound frame
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  size_t copied = 0;
  unsigned char stack[kScanBytes];
};
static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint64_t>::is_always_lock_free,
              "the handler needs lock-free atomics and a 32-bit futex word");

// Guarded by `mutex`, except `slot`, which the handler reads.
struct State {
  std::timed_mutex mutex;
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
  std::atomic<Slot*> slot{nullptr};
};
State& g = *new State;  // never destroyed (see the header comment)

pid_t Gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

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
  uintptr_t last_sp;   // the CFA the unwinder had reached: the SP in the last frame recorded
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
  walk->last_sp = _Unwind_GetCFA(context);
  return _URC_NO_REASON;
}

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

// True when kUnwindBytes of stack are left below the caller (the handler).
__attribute__((noinline)) bool RoomToUnwind() {
  char here;
  return ReadableBelow(reinterpret_cast<uintptr_t>(&here), kUnwindBytes) >= kUnwindBytes;
}

void Handler(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uint64_t token = reinterpret_cast<uintptr_t>(info->si_value.sival_ptr);
  const bool ours = info->si_code == SI_QUEUE && info->si_pid == getpid() && (token & kTagMask) == kTag;
  if (!ours) {
    ChainToPrevious(sig, info, context);
    errno = saved_errno;
    return;
  }
  Slot* slot = g.slot.load(std::memory_order_acquire);
  uint64_t expected = token;
  if (slot == nullptr || slot->target.load(std::memory_order_relaxed) != Gettid() ||
      !slot->claim.compare_exchange_strong(expected, token | kClaimed, std::memory_order_acq_rel)) {
    errno = saved_errno;  // a late probe: its capture has given up
    return;
  }
  slot->has_registers = RegistersFrom(context, &slot->pc, &slot->sp);
  if (slot->unwind && slot->has_registers && (!slot->check_room || RoomToUnwind())) {
    Walk walk{slot->frames, slot->exact, kMaxFrames, 0, slot->pc, false, 0};
    _Unwind_Backtrace(Collect, &walk);
    slot->count = walk.count;
    slot->last_sp = walk.last_sp;
  }
  // The unwinder stopped at once (JIT code has no unwind tables) or was not
  // used: keep the raw stack for a scan.
  if (slot->count <= 1 && slot->has_registers) {
    slot->copied = CopyOwnMemory(slot->sp, slot->stack, sizeof slot->stack);
  }
  slot->done.store(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&slot->done), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  errno = saved_errno;
}

// True when the shared object that defines _Unwind_Backtrace imports glibc's
// lock-free _dl_find_object: its dynamic string table names it.
bool UnwindIsLockFree() {
#if defined(__GLIBC__)
  if (dlsym(RTLD_DEFAULT, "_dl_find_object") == nullptr) return false;
  Dl_info info{};
  struct link_map* map = nullptr;
  if (dladdr1(reinterpret_cast<void*>(&_Unwind_Backtrace), &info, reinterpret_cast<void**>(&map),
              RTLD_DL_LINKMAP) == 0 || map == nullptr || map->l_ld == nullptr) {
    return false;
  }
  uintptr_t strtab = 0;
  size_t strsz = 0;
  for (const ElfW(Dyn)* d = map->l_ld; d->d_tag != DT_NULL; ++d) {
    if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    if (d->d_tag == DT_STRSZ) strsz = d->d_un.d_val;
  }
  // ld.so relocates these entries in place on most CPUs, not on all.
  if (strtab != 0 && strtab < map->l_addr) strtab += map->l_addr;
  static const char kName[] = "\0_dl_find_object";  // with the NUL before it and after it
  return strtab != 0 && strsz > sizeof kName &&
         memmem(reinterpret_cast<const void*>(strtab), strsz, kName, sizeof kName) != nullptr;
#else
  return false;  // musl's dl_iterate_phdr, which libgcc falls back to, takes a lock
#endif
}

void Install() {
  g.install_tried = true;
  const char* unwind_env = getenv("THREADLEAK_STACK_UNWIND");
  g.unwind_in_handler = !(unwind_env && strcmp(unwind_env, "0") == 0) && UnwindIsLockFree();

  // Warm up everything the handler calls.
  uintptr_t frames[4];
  bool exact[4];
  Walk walk{frames, exact, 4, 0, 0, false, 0};
  _Unwind_Backtrace(Collect, &walk);
  unsigned char probe[16];
  CopyOwnMemory(reinterpret_cast<uintptr_t>(&walk), probe, sizeof probe);
  (void)RoomToUnwind();
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
    g.signal_problem = "out of memory for the probe's buffer";
    return;
  }
  g.slot.store(slot, std::memory_order_release);

  g.signal = InstallProbeSignal(Handler, &g.signal_problem);
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

}  // namespace

std::timed_mutex& ProbeMutex() { return g.mutex; }

int ProbeSignal(std::string* problem) {
  if (!g.install_tried) Install();
  if (g.signal != 0 && !ProbeSignalIsOurs(g.signal, Handler)) {
    g.signal_problem = "signal " + std::to_string(g.signal) + " was taken over by another handler";
    g.signal = 0;
  }
  if (g.signal == 0) *problem = g.signal_problem;
  return g.signal;
}

bool AnsweredRecently(pid_t tid) {
  const int64_t now = NowNs();
  for (const State::Answer& answer : g.answered) {
    if (answer.tid == tid && now - answer.at_ns < kRecentNs) return true;
  }
  return false;
}

void ForgetAnswered(pid_t tid) {
  for (State::Answer& answer : g.answered) {
    if (answer.tid == tid) answer.tid = 0;
  }
}

bool Probe(pid_t tid, bool check_room, int64_t deadline, std::vector<RawFrame>* raw, StackResult* result) {
  Slot* slot = g.slot.load(std::memory_order_relaxed);
  const uint64_t token = kTag | (++g.generation & kGenerationMask);
  slot->target.store(tid, std::memory_order_relaxed);
  slot->unwind = g.unwind_in_handler;
  slot->check_room = check_room;
  slot->has_registers = false;
  slot->count = 0;
  slot->last_sp = 0;
  slot->copied = 0;
  slot->done.store(0, std::memory_order_relaxed);
  slot->claim.store(token, std::memory_order_release);  // armed

  siginfo_t info;
  memset(&info, 0, sizeof info);
  info.si_signo = g.signal;
  info.si_code = SI_QUEUE;
  info.si_pid = getpid();
  info.si_uid = getuid();
  info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(token));
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, g.signal, &info) != 0) {
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
      result->error = ThreadExists(tid) ? "timeout" : "exited";
      return false;
    }
    if (!WaitDone(slot, NowNs() + kClaimedGraceNs)) {
      // A handler owns the slot and has not finished: leave the slot to it.
      Slot* fresh = new (std::nothrow) Slot;
      g.slot.store(fresh, std::memory_order_release);
      if (fresh == nullptr) {
        g.signal_problem = "out of memory for the probe's buffer";
        g.signal = 0;
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
    std::vector<Mapping> maps;
    if (ReadMaps(&maps)) ScanStack(slot->sp, slot->stack, slot->copied, maps, raw);
  } else if (slot->count > 1 && slot->last_sp != 0 && tid != getpid()) {
    // Unwound, but did it reach the thread's entry? A thread's outermost
    // frames are the C runtime's (start_thread, clone). When the last frame
    // is elsewhere the unwinder stopped at code without unwind tables: scan
    // the stack on from there for the frames it could not reach. The thread
    // runs again by now; it is read where it was only if it is still there,
    // which a parked thread is, and the scanned frames say so.
    std::vector<Mapping> maps;
    if (!IsThreadEntryRuntime(LoadedPath(slot->frames[slot->count - 1])) && ReadMaps(&maps)) {
      ScanStack(slot->last_sp, nullptr, 0, maps, raw);
    }
  }
  slot->claim.store(0, std::memory_order_release);  // idle
  g.answered[g.next_answered++ % (sizeof g.answered / sizeof g.answered[0])] = {tid, NowNs()};
  return true;
}

void UnwindHere(std::vector<RawFrame>* raw) {
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  Walk walk{frames, exact, kMaxFrames, 0, 0, false, 0};
  _Unwind_Backtrace(Collect, &walk);
  for (int i = 0; i < walk.count; i++) {
    RawFrame f;
    f.address = frames[i];
    f.exact = exact[i];
    raw->push_back(f);
  }
}

}  // namespace linux_stack
}  // namespace threadleak
