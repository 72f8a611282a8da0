// stack_walk_darwin.cc — walking a copied stack by its frame records, and
// the calling thread's own stack.
//
// Strategy: both macOS ABIs keep a frame pointer in every function that has
// a frame (x86_64: RBP; arm64: X29, which Apple's ABI requires to address a
// valid frame record at all times), and a frame record is two words: the
// caller's frame pointer, then the return address. The walk follows that
// chain through the copy made while the thread was suspended, never through
// the live stack, and stops at the first record that leaves the copy, does
// not lie strictly above the previous one, is misaligned, or holds a 0 (the
// outermost record, set up by thread_start / start, links to a 0).
//
// Quirks handled here:
//  - A frameless function (a leaf, the system call stubs of
//    libsystem_kernel that every blocked thread sits in, a prologue or
//    epilogue) has no record of its own: the frame pointer is still its
//    caller's, so the chain skips the caller. Its return address is in LR
//    (arm64) or at [SP] (x86_64). That word is shown as the second frame
//    only when it is certainly a return address of the PC's caller: it is not
//    the chain's first return address, it follows a call instruction in a
//    loaded image, and it lies in another function than the PC (a function
//    with a frame that has returned from a call still has that stale return
//    address, into itself, in LR). When the PC's function cannot be told
//    (JIT code aside), the word is left out: a missing frame over a made-up one.
//  - arm64 return addresses may carry a pointer authentication code in their
//    top bits: arm64e code signs them (pacibsp), and the system libraries of
//    Apple silicon are arm64e even in an arm64 process. <ptrauth.h>'s
//    ptrauth_strip is a no-op when this file is built for plain arm64 (no
//    ptrauth intrinsics), so the bits are masked instead: user addresses on
//    macOS arm64 lie below MACH_VM_MAX_ADDRESS (0x7FFFFE000000, 47 bits), so
//    clearing bits 47-63 strips any code and changes no real address.
#include <execinfo.h>
#include <mach/mach.h>

#include <cstring>
#include <string>

#include "stack_darwin.h"

namespace threadleak {
namespace darwin_stack {
namespace {

constexpr size_t kMaxSelfFrames = 128;

#if defined(__arm64__) || defined(__aarch64__)
constexpr uintptr_t kAddressMask = (uintptr_t{1} << 47) - 1;
static_assert(MACH_VM_MAX_ADDRESS - 1 <= kAddressMask, "macOS arm64 user addresses fit in 47 bits");
#endif

// One word of the copy at the thread's address `address`.
bool ReadCopy(const StackCopy& copy, uintptr_t address, uintptr_t* value) {
  if (address < copy.sp || address - copy.sp > copy.size || copy.size - (address - copy.sp) < sizeof(uintptr_t)) {
    return false;
  }
  memcpy(value, copy.bytes + (address - copy.sp), sizeof(uintptr_t));
  return true;
}

#if defined(__x86_64__)
// The length of the `FF /2` (call r/m64) instruction at `op`, 0 when the
// `available` bytes there do not start one (a REX prefix before FF does not
// change where it ends).
size_t IndirectCallLength(const unsigned char* op, size_t available) {
  if (available < 2 || op[0] != 0xFF || ((op[1] >> 3) & 7) != 2) return 0;
  const unsigned mod = op[1] >> 6, rm = op[1] & 7;
  if (mod == 3) return 2;  // call *%reg
  size_t length = 2;
  if (rm == 4) {  // a SIB byte follows
    if (available < 3) return 0;
    length++;
    if (mod == 0 && (op[2] & 7) == 5) length += 4;  // no base: disp32
  } else if (mod == 0 && rm == 5) {
    length += 4;  // call *disp32(%rip)
  }
  if (mod == 1) length += 1;
  if (mod == 2) length += 4;
  return length;
}
#endif

// True when the instruction just before `address` is a call.
bool FollowsCall(uintptr_t address) {
#if defined(__x86_64__)
  constexpr size_t kLongest = 7;  // FF /2 with SIB and disp32
  unsigned char code[kLongest];
  if (address < kLongest || !ReadOwnMemory(address - kLongest, code, kLongest)) return false;
  if (code[kLongest - 5] == 0xE8) return true;  // call rel32
  for (size_t length = 2; length <= kLongest; length++) {
    if (IndirectCallLength(code + kLongest - length, length) == length) return true;
  }
  return false;
#elif defined(__arm64__) || defined(__aarch64__)
  uint32_t insn = 0;
  if (address < 4 || address % 4 != 0 || !ReadOwnMemory(address - 4, &insn, sizeof insn)) return false;
  return (insn & 0xFC000000u) == 0x94000000u ||  // BL
         (insn & 0xFFFFFC1Fu) == 0xD63F0000u ||  // BLR
         (insn & 0xFFFFF81Fu) == 0xD63F081Fu ||  // BLRAAZ, BLRABZ
         (insn & 0xFFFFF800u) == 0xD73F0800u;    // BLRAA, BLRAB
#else
  (void)address;
  return false;
#endif
}

// The return address of a frameless innermost function (see the header
// comment), or 0.
uintptr_t FramelessCaller(const Registers& regs, const StackCopy& copy, uintptr_t first_return) {
#if defined(__x86_64__)
  uintptr_t candidate = 0;
  if (!ReadCopy(copy, copy.sp, &candidate)) return 0;
#else
  (void)copy;
  const uintptr_t candidate = regs.lr;
#endif
  if (candidate == 0 || candidate == first_return || !FollowsCall(candidate)) return 0;
  uintptr_t caller_start = 0, pc_start = 0;
  if (!FunctionContaining(candidate - 1, &caller_start)) return 0;
  if (FunctionContaining(regs.pc, &pc_start)) {
    if (pc_start == 0 || caller_start == 0 || pc_start == caller_start) return 0;
  }
  return candidate;
}

}  // namespace

uintptr_t StripCodePointer(uintptr_t address) {
#if defined(__arm64__) || defined(__aarch64__)
  return address & kAddressMask;
#else
  return address;
#endif
}

bool ReadOwnMemory(uintptr_t address, void* out, size_t size) {
  vm_size_t done = 0;
  return vm_read_overwrite(mach_task_self(), address, size, reinterpret_cast<vm_address_t>(out), &done) == KERN_SUCCESS &&
         done == size;
}

void WalkCopy(const Registers& regs, const StackCopy& copy, size_t max_frames, std::vector<RawFrame>* out) {
  std::vector<uintptr_t> returns;
  returns.reserve(max_frames);
  uintptr_t fp = regs.fp, previous = 0;
  while (returns.size() + 2 < max_frames) {
    if (fp % sizeof(uintptr_t) != 0 || (previous != 0 && fp <= previous)) break;
    uintptr_t next = 0, ret = 0;
    if (!ReadCopy(copy, fp, &next) || !ReadCopy(copy, fp + sizeof(uintptr_t), &ret)) break;
    ret = StripCodePointer(ret);
    if (ret == 0) break;
    // The outermost record (its caller's frame pointer is 0) may hold no
    // return address at all: x86_64 thread_start pushes the initial 0 RBP
    // over whatever word was there. Taken only when a call precedes it.
    if (next == 0 && !FollowsCall(ret)) break;
    returns.push_back(ret);
    if (next == 0) break;
    previous = fp;
    fp = next;
  }
  RawFrame pc;
  pc.address = regs.pc;
  pc.exact = true;
  out->push_back(pc);
  const uintptr_t caller = FramelessCaller(regs, copy, returns.empty() ? 0 : returns[0]);
  if (caller != 0) {
    RawFrame f;
    f.address = caller;
    out->push_back(f);
  }
  for (const uintptr_t ret : returns) {
    RawFrame f;
    f.address = ret;
    out->push_back(f);
  }
}

void CaptureSelf(StackResult* result) {
  void* addresses[kMaxSelfFrames];
  // backtrace() walks this thread's frame records within its own stack's bounds.
  const int n = backtrace(addresses, static_cast<int>(kMaxSelfFrames));
  std::vector<RawFrame> raw(1);
  raw[0].address = reinterpret_cast<uintptr_t>(&CaptureSelf);  // names this addon's module
  raw[0].exact = true;
  for (int i = 0; i < n && addresses[i] != nullptr; i++) {
    RawFrame f;
    f.address = StripCodePointer(reinterpret_cast<uintptr_t>(addresses[i]));
    raw.push_back(f);
  }
  Symbolize(raw, &result->frames);
  const std::string own = result->frames[0].module;
  size_t first = 1;
  while (first < result->frames.size() && !own.empty() && result->frames[first].module == own) first++;
  result->frames.erase(result->frames.begin(), result->frames.begin() + first);
}

}  // namespace darwin_stack
}  // namespace threadleak
