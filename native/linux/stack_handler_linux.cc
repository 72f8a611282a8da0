// stack_handler_linux.cc — the signal handler that answers a stack probe on
// the target thread, and what installing it takes.
//
// Strategy: the handler takes the interrupted PC and SP from the ucontext,
// unwinds with libgcc's _Unwind_Backtrace into the slot its token names (or,
// where unwinding in a handler is not known to be lock-free, copies the raw
// stack there to be scanned later) and wakes the requester with a futex
// (stack_probe_linux.cc sends the probe and waits).
//
// Quirks handled here:
//  - A timed-out probe can still be delivered later, even into the next
//    capture. The handler claims the slot only if its token is the one armed
//    now (compare-and-swap), so a late signal never writes into reused memory.
//  - The handler never sleeps before it has claimed the slot (the requester
//    tells a probe taken without the handler by that).
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
//  - The unwinder is the process's own (dlsym(RTLD_DEFAULT): libgcc_s, which
//    Node loads), not whichever one this addon was linked with: a prebuild
//    made with zig carries LLVM's libunwind statically, built without
//    _dl_find_object, so it would always take the loader lock; libgcc_s of a
//    glibc 2.35+ system does not. The three functions come from one provider
//    (their context structs differ between implementations); where the
//    process has none, the linked-in one is used.
//  - The handler blocks every signal while it runs, its own included, so
//    probes never nest on the target's stack.
//  - The slots are never freed: a Worker may capture a stack while the
//    process exits and runs static destructors.
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {

std::atomic<ProbeSlot*> g_probe_slots[kSlotCount] = {};

namespace {

// The unwinder in use: the process's, or the one linked in (see above).
struct Unwinder {
  // decltype: GCC's and LLVM's unwind.h spell the return types differently.
  decltype(&_Unwind_Backtrace) backtrace = &_Unwind_Backtrace;
  decltype(&_Unwind_GetIPInfo) get_ip_info = &_Unwind_GetIPInfo;
  decltype(&_Unwind_GetCFA) get_cfa = &_Unwind_GetCFA;
};
Unwinder g_unwinder;
std::once_flag g_unwinder_once;

void ResolveUnwinder() {
  std::call_once(g_unwinder_once, [] {
    void* backtrace = dlsym(RTLD_DEFAULT, "_Unwind_Backtrace");
    void* get_ip_info = dlsym(RTLD_DEFAULT, "_Unwind_GetIPInfo");
    void* get_cfa = dlsym(RTLD_DEFAULT, "_Unwind_GetCFA");
    Dl_info a{}, b{}, c{};
    // All three from one object, or none of them.
    if (backtrace == nullptr || get_ip_info == nullptr || get_cfa == nullptr || dladdr(backtrace, &a) == 0 ||
        dladdr(get_ip_info, &b) == 0 || dladdr(get_cfa, &c) == 0 || a.dli_fbase != b.dli_fbase ||
        a.dli_fbase != c.dli_fbase) {
      return;
    }
    g_unwinder.backtrace = reinterpret_cast<decltype(g_unwinder.backtrace)>(backtrace);
    g_unwinder.get_ip_info = reinterpret_cast<decltype(g_unwinder.get_ip_info)>(get_ip_info);
    g_unwinder.get_cfa = reinterpret_cast<decltype(g_unwinder.get_cfa)>(get_cfa);
  });
}

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
  uintptr_t ip = g_unwinder.get_ip_info(context, &before_insn);
  if (!walk->started) {
    if (walk->start_pc != 0 && ip != walk->start_pc) return _URC_NO_REASON;
    walk->started = true;
  }
  if (ip == 0 || walk->count >= walk->capacity) return _URC_END_OF_STACK;
  walk->exact[walk->count] = before_insn != 0;
  walk->frames[walk->count++] = ip;
  walk->last_sp = g_unwinder.get_cfa(context);
  return _URC_NO_REASON;
}

// True when kUnwindBytes of stack are left below the caller (the handler).
__attribute__((noinline)) bool RoomToUnwind() {
  char here;
  return ReadableBelow(reinterpret_cast<uintptr_t>(&here), kUnwindBytes) >= kUnwindBytes;
}

void Handler(int, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const uint64_t token = reinterpret_cast<uintptr_t>(info->si_value.sival_ptr);
  const bool ours = info->si_code == SI_QUEUE && info->si_pid == getpid() && (token & kProbeTagMask) == kProbeTag;
  if (!ours) {
    errno = saved_errno;  // not a probe: dropped (see stack_signal_linux.cc)
    return;
  }
  ProbeSlot* slot = g_probe_slots[(token >> kSlotShift) % kSlotCount].load(std::memory_order_acquire);
  uint64_t expected = token;
  if (slot == nullptr || slot->target.load(std::memory_order_relaxed) != Gettid() ||
      !slot->claim.compare_exchange_strong(expected, token | kClaimed, std::memory_order_acq_rel)) {
    errno = saved_errno;  // a late probe: its capture has given up
    return;
  }
  slot->has_registers = RegistersFrom(context, &slot->pc, &slot->sp);
  if (slot->unwind && slot->has_registers && (!slot->check_room || RoomToUnwind())) {
    Walk walk{slot->frames, slot->exact, kMaxFrames, 0, slot->pc, false, 0};
    g_unwinder.backtrace(Collect, &walk);
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
  if (dladdr1(reinterpret_cast<void*>(g_unwinder.backtrace), &info, reinterpret_cast<void**>(&map),
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

}  // namespace

int InstallProbeHandler(bool* unwind_in_handler, std::string* problem) {
  ResolveUnwinder();
  const char* unwind_env = getenv("THREADLEAK_STACK_UNWIND");
  *unwind_in_handler = !(unwind_env && strcmp(unwind_env, "0") == 0) && UnwindIsLockFree();

  // Warm up everything the handler calls.
  uintptr_t frames[4];
  bool exact[4];
  Walk walk{frames, exact, 4, 0, 0, false, 0};
  g_unwinder.backtrace(Collect, &walk);
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

  return InstallProbeSignal(Handler, problem);
}


bool ProbeHandlerIsOurs(int sig) { return ProbeSignalIsOurs(sig, Handler); }

void UnwindHere(std::vector<RawFrame>* raw) {
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  ResolveUnwinder();
  Walk walk{frames, exact, kMaxFrames, 0, 0, false, 0};
  g_unwinder.backtrace(Collect, &walk);
  for (int i = 0; i < walk.count; i++) {
    RawFrame f;
    f.address = frames[i];
    f.exact = exact[i];
    raw->push_back(f);
  }
}

}  // namespace linux_stack
}  // namespace threadleak
