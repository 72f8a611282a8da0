// stack_darwin.cc — the native stack of one thread of this process, on
// macOS: the capture sequence.
//
// Strategy: the thread's Mach port is found by its id (task_threads +
// THREAD_IDENTIFIER_INFO; the send right pins the thread object, and ids are
// never reused, so the id cannot come to name another thread), checked
// against the caller's key, then suspended (thread_suspend) just long enough
// to read its registers (thread_get_state) and copy its stack into a buffer
// allocated beforehand (vm_read_overwrite on this task), and resumed.
// The walk over the copy (stack_walk_darwin.cc) and the naming of frames
// (stack_symbols_darwin.cc) run after the thread runs again. The calling
// thread itself is walked with backtrace(), never suspended.
//
// Quirks handled here:
//  - While another thread is suspended, this thread may take no lock the
//    suspended one could hold: no malloc, no pthread calls (they take
//    libpthread's list lock), no dladdr (dyld's lock), no std::string.
//    Between thread_suspend and thread_resume only Mach calls run:
//    thread_get_state, vm_region_64, vm_read_overwrite. They are requests
//    to the kernel (MIG stubs that use this thread's own reply port), and
//    the last one makes an unreadable page an error instead of a fault. (The
//    vm_* forms are the mach_vm_* ones for a 64-bit task, and are declared by
//    <mach/mach.h> in every SDK, mach/mach_vm.h not in all.)
//  - pthread_from_mach_thread_np and pthread_get_stackaddr_np /
//    pthread_get_stacksize_np take libpthread's list lock, so the stack's
//    bounds are read before the suspension. The last two answer ESRCH cast
//    to an address, and a default size, for a thread that has ended: such
//    bounds are refused. A thread libpthread did not create (no pthread_t),
//    or whose SP is not inside its pthread stack (an alternate signal stack,
//    a coroutine's stack), is bounded by the VM region that holds its SP
//    instead (vm_region_64, a kernel request, inside the suspension).
//  - thread_suspend returns once the thread is off its CPU (the kernel's
//    thread_wait), and thread_get_state waits for that too: the registers
//    are those it stopped with. Suspension interrupts no system call (no
//    EINTR, unlike a signal), so timeout 0 reads the whole stack too, and
//    leak reports, Worker matching and the exit watchdog get full frames.
//    A thread suspended by someone else (a debugger) is read the same way.
//  - Two threads suspending each other at once would both stay suspended
//    forever, and a capture that suspended a thread holding a lock another
//    capture needs before its own suspension would wait for it. One
//    process-wide lock makes captures by this addon take turns; it is waited
//    for at most max(timeout_ms, kMinSuspendTurnWaitMs) ("busy" after that), and
//    is the only wait ("timeout" is never answered).
//  - A thread that ends meanwhile makes the Mach calls answer
//    KERN_TERMINATED or MACH_SEND_INVALID_DEST: "exited".
//  - The copy runs from SP to the top of the stack, capped at kMaxCopyBytes:
//    a deeper stack loses its outermost frames. Where the whole range cannot
//    be read at once, it is read page by page up to the first unreadable one.
//  - The start routine is not told by Mach (THREAD_IDENTIFIER_INFO has none):
//    `start` stays empty, and attribution uses the outermost frames.
//  - x86_64 and arm64 only (the architectures macOS runs); under Rosetta an
//    x86_64 process reads x86_64 registers as usual.
#include <mach/mach.h>
#include <pthread.h>

#include <memory>
#include <new>

#include "stack_darwin.h"
#include "suspend_turn.h"
#include "threads.h"
#include "threads_darwin.h"

namespace threadleak {
namespace {

using darwin_stack::RawFrame;
using darwin_stack::Registers;
using darwin_stack::StackCopy;

constexpr size_t kMaxFrames = 128;
constexpr size_t kMaxCopyBytes = 1024 * 1024;  // of the stack copied, from SP upwards
constexpr uintptr_t kLowestStackTop = 0x10000;  // below: an error code, not an address

// Resumes the thread on every path out of the suspended section.
class Suspension {
 public:
  explicit Suspension(thread_act_t thread) : thread_(thread), status_(thread_suspend(thread)) {}
  ~Suspension() {
    if (status_ == KERN_SUCCESS) thread_resume(thread_);
  }
  Suspension(const Suspension&) = delete;
  Suspension& operator=(const Suspension&) = delete;
  kern_return_t status() const { return status_; }

 private:
  thread_act_t thread_;
  kern_return_t status_;
};

// The pthread stack of a thread, [bottom, top); empty when unknown.
struct StackBounds {
  uintptr_t bottom = 0;
  uintptr_t top = 0;
  bool Holds(uintptr_t sp) const { return top != 0 && sp >= bottom && sp < top; }
};

// Takes libpthread's list lock: before the suspension only.
StackBounds PthreadStackBounds(thread_act_t thread) {
  StackBounds bounds;
  pthread_t pthread = pthread_from_mach_thread_np(thread);
  if (pthread == nullptr) return bounds;  // not created by libpthread
  const uintptr_t top = reinterpret_cast<uintptr_t>(pthread_get_stackaddr_np(pthread));
  const size_t size = pthread_get_stacksize_np(pthread);
  if (top < kLowestStackTop || size == 0 || size > top) return bounds;  // it ended meanwhile
  bounds.top = top;
  bounds.bottom = top - size;
  return bounds;
}

void SetOsError(StackResult* result, const char* call, kern_return_t kr) {
  result->error = "os-error";
  result->detail = darwin::KernMessage(call, kr);
}

// Inside the suspension: a kernel request, nothing else.
kern_return_t ReadRegisters(thread_act_t thread, Registers* regs) {
#if defined(__x86_64__)
  x86_thread_state64_t state;
  mach_msg_type_number_t count = x86_THREAD_STATE64_COUNT;
  const kern_return_t kr = thread_get_state(thread, x86_THREAD_STATE64, reinterpret_cast<thread_state_t>(&state), &count);
  if (kr != KERN_SUCCESS) return kr;
  regs->pc = state.__rip;
  regs->sp = state.__rsp;
  regs->fp = state.__rbp;
  return KERN_SUCCESS;
#elif defined(__arm64__) || defined(__aarch64__)
  arm_thread_state64_t state;
  mach_msg_type_number_t count = ARM_THREAD_STATE64_COUNT;
  const kern_return_t kr = thread_get_state(thread, ARM_THREAD_STATE64, reinterpret_cast<thread_state_t>(&state), &count);
  if (kr != KERN_SUCCESS) return kr;
  // The accessors read the fields whether or not the state is opaque
  // (arm64e); the stripping is ours (see stack_walk_darwin.cc).
  regs->pc = darwin_stack::StripCodePointer(static_cast<uintptr_t>(arm_thread_state64_get_pc(state)));
  regs->lr = darwin_stack::StripCodePointer(static_cast<uintptr_t>(arm_thread_state64_get_lr(state)));
  regs->sp = static_cast<uintptr_t>(arm_thread_state64_get_sp(state));
  regs->fp = static_cast<uintptr_t>(arm_thread_state64_get_fp(state));
  return KERN_SUCCESS;
#else
#error "the macOS stack backend supports x86_64 and arm64"
#endif
}

// Inside the suspension: the top of the stack that holds `sp` (the pthread
// stack, else the VM region around sp), 0 when sp lies in no mapped region.
uintptr_t StackTop(uintptr_t sp, const StackBounds& bounds, mach_port_t* region_object) {
  if (bounds.Holds(sp)) return bounds.top;
  vm_address_t address = sp;
  vm_size_t size = 0;
  vm_region_basic_info_data_64_t info;
  mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
  if (vm_region_64(mach_task_self(), &address, &size, VM_REGION_BASIC_INFO_64, reinterpret_cast<vm_region_info_t>(&info),
                   &count, region_object) != KERN_SUCCESS) {
    return 0;
  }
  return address <= sp && sp - address < size ? address + size : 0;
}

// Inside the suspension: copies [sp, top) into `buffer`, at most `capacity`
// bytes. The kern_return_t of the first failed read, KERN_SUCCESS otherwise.
kern_return_t CopyStack(uintptr_t sp, uintptr_t top, unsigned char* buffer, size_t capacity, StackCopy* copy) {
  copy->sp = sp;
  const size_t wanted = top - sp > capacity ? capacity : top - sp;
  vm_size_t done = 0;
  kern_return_t kr = vm_read_overwrite(mach_task_self(), sp, wanted, reinterpret_cast<vm_address_t>(buffer), &done);
  if (kr == KERN_SUCCESS && done == wanted) {
    copy->size = wanted;
    copy->complete = wanted == top - sp;
    return KERN_SUCCESS;
  }
  size_t copied = 0;  // page by page, up to the first page that cannot be read
  while (copied < wanted) {
    const uintptr_t at = sp + copied;
    size_t chunk = vm_page_size - at % vm_page_size;
    if (chunk > wanted - copied) chunk = wanted - copied;
    kr = vm_read_overwrite(mach_task_self(), at, chunk, reinterpret_cast<vm_address_t>(buffer + copied), &done);
    if (kr != KERN_SUCCESS || done != chunk) break;
    copied += chunk;
  }
  copy->size = copied;
  copy->complete = false;
  return kr;
}

// After the resume: whether the thread has terminated, or (for a thread that
// libpthread knew before the suspension) its pthread is being torn down, so a
// failed copy means "exited".
bool ThreadIsEnding(thread_act_t thread, bool was_pthread) {
  thread_basic_info_data_t info;
  mach_msg_type_number_t count = THREAD_BASIC_INFO_COUNT;
  const kern_return_t kr = thread_info(thread, THREAD_BASIC_INFO, reinterpret_cast<thread_info_t>(&info), &count);
  if (kr != KERN_SUCCESS) return darwin::IsThreadGone(kr);
  return was_pthread && pthread_from_mach_thread_np(thread) == nullptr;
}

void CaptureOther(thread_act_t thread, double timeout_ms, std::vector<RawFrame>* raw, StackResult* result) {
  Registers regs;
  StackCopy copy;
  std::unique_ptr<unsigned char[]> buffer;
  kern_return_t suspend_kr = KERN_SUCCESS, state_kr = KERN_SUCCESS, copy_kr = KERN_SUCCESS;
  mach_port_t region_object = MACH_PORT_NULL;
  bool was_pthread = false;
  {
    SuspendTurn turn(timeout_ms);
    if (!turn.held()) {
      result->error = "busy";
      return;
    }
    // Everything that locks or allocates happens here, before the suspension.
    const StackBounds bounds = PthreadStackBounds(thread);
    was_pthread = bounds.top != 0;
    const size_t stack_size = bounds.top - bounds.bottom;
    const size_t capacity = bounds.top != 0 && stack_size < kMaxCopyBytes ? stack_size : kMaxCopyBytes;
    buffer.reset(new (std::nothrow) unsigned char[capacity]);
    if (!buffer) {
      result->error = "os-error";
      result->detail = "no memory for a copy of its stack";
      return;
    }
    copy.bytes = buffer.get();
    Suspension suspension(thread);
    suspend_kr = suspension.status();
    if (suspend_kr == KERN_SUCCESS) state_kr = ReadRegisters(thread, &regs);
    if (suspend_kr == KERN_SUCCESS && state_kr == KERN_SUCCESS) {
      const uintptr_t top = StackTop(regs.sp, bounds, &region_object);
      if (top > regs.sp) copy_kr = CopyStack(regs.sp, top, buffer.get(), capacity, &copy);
    }
  }  // resumed, then the turn released
  if (region_object != MACH_PORT_NULL) mach_port_deallocate(mach_task_self(), region_object);
  if (suspend_kr != KERN_SUCCESS || state_kr != KERN_SUCCESS) {
    const kern_return_t kr = suspend_kr != KERN_SUCCESS ? suspend_kr : state_kr;
    if (darwin::IsThreadGone(kr)) {
      result->error = "exited";
    } else {
      SetOsError(result, suspend_kr != KERN_SUCCESS ? "thread_suspend" : "thread_get_state", kr);
    }
    return;
  }
  if (copy.size == 0 && ThreadIsEnding(thread, was_pthread)) {
    // A finishing thread unmaps its own stack just before it terminates: a
    // capture that caught it there found no stack to copy. It is gone, not an OS error.
    result->error = "exited";
    return;
  }
  if (copy.size == 0) {
    // Only the PC is known.
    RawFrame pc;
    pc.address = regs.pc;
    pc.exact = true;
    raw->push_back(pc);
    if (copy_kr != KERN_SUCCESS) {
      SetOsError(result, "vm_read_overwrite(stack)", copy_kr);
    } else {
      result->error = "os-error";
      result->detail = "its stack pointer lies in no mapped region";
    }
    return;
  }
  darwin_stack::WalkCopy(regs, copy, kMaxFrames, raw);
}

}  // namespace

void CaptureStack(uint64_t tid, double timeout_ms, const std::string& key, StackResult* result) {
  *result = StackResult();
  if (tid == 0) {
    result->error = "not-found";
    return;
  }
  // Thread ids are never reused: a key is "<tid>" or names another thread.
  if (!key.empty() && key != darwin::KeyOf(tid)) {
    result->error = "exited";
    result->detail = "the key names another thread";
    return;
  }
  if (tid == CurrentThreadId()) {
    darwin_stack::CaptureSelf(result);
    return;
  }
  darwin::ThreadPort port;
  const char* call = "task_threads";
  const kern_return_t kr = darwin::FindThread(tid, &port, &call);
  if (kr != KERN_SUCCESS) {
    SetOsError(result, call, kr);
    return;
  }
  if (port.get() == MACH_PORT_NULL) {
    result->error = key.empty() ? "not-found" : "exited";
    return;
  }
  std::vector<RawFrame> raw;
  raw.reserve(kMaxFrames);
  CaptureOther(port.get(), timeout_ms, &raw, result);
  if (result->error == "exited" || result->error == "busy") return;
  darwin_stack::Symbolize(raw, &result->frames);
}

}  // namespace threadleak
