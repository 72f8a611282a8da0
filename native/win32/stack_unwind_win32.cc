// stack_unwind_win32.cc — unwinds a copy of a suspended thread's stack (x64).
//
// Strategy: the thread was suspended only long enough to copy its registers
// and its stack (stack_win32.cc); unwinding runs afterwards, on the copy,
// with the OS's own unwinder (RtlLookupFunctionEntry + RtlVirtualUnwind, the
// functions RtlUnwindEx uses, and thread-safe unlike DbgHelp's StackWalk64).
// The context handed to RtlVirtualUnwind has its stack registers rebased into
// the copy, so every saved register and return address it reads comes from
// the copy, never from the live stack that has moved on since. After each
// step the registers that now hold addresses of the live stack (a saved RBP
// popped from the copy, an RSP read by a machine frame) are rebased again.
//
// Quirks handled here:
//  - RtlVirtualUnwind trusts the context: a frame pointer holding garbage, or
//    a frame bigger than what is left of the copy, would make it read outside
//    the copy and fault. Before each step the function's unwind codes are
//    summed up (how far above its frame base the unwinder may read) and the
//    walk stops unless that whole range lies inside the copy (plus its zeroed
//    slack).
//  - Code without unwind information is, by the x64 ABI, a leaf function (no
//    stack frame of its own): its return address is at RSP. That holds for the
//    innermost frame only. Further out, code without unwind information has
//    called something, so it is no leaf: it is hand-written assembly (V8's
//    PushAllRegistersAndIterateStack, under every garbage collection of a
//    busy isolate, pushes every callee-saved register and sixteen XMM
//    registers and has no .pdata entry) or JIT code no table describes.
//    Such code keeps RBP as a frame pointer, so the walk takes one
//    frame-pointer step there ([RBP] the caller's RBP, [RBP+8] the return
//    address), and stops if RBP does not point into the copy above RSP.
//    Reading RSP there instead reads a saved register (a NaN's bits, say).
//  - The walk stops at RIP 0 (RtlUserThreadStart's caller), when RSP leaves
//    the copy, when a step makes no progress, and after max_frames frames.
//  - The unwind tables read here belong to modules the thread was running in
//    when it was suspended; one unloaded in between could not be read. The
//    same holds for RtlVirtualUnwind itself; it is not guarded against.
#include <windows.h>

#include <algorithm>
#include <cstring>

#include "stack_win32.h"

namespace threadleak {
namespace win32_stack {

#if defined(_M_X64) || defined(__x86_64__)
namespace {

constexpr int kChainDepth = 8;     // chained unwind info entries followed at most
constexpr BYTE kChainInfo = 0x04;  // UNW_FLAG_CHAININFO

// What RtlVirtualUnwind may touch for one function, from its unwind codes.
struct UnwindSummary {
  unsigned prolog_size = 0;   // of the function entry found for the PC
  unsigned frame_register = 0;  // 0: none (RSP is the frame base)
  unsigned frame_offset = 0;    // scaled by 16
  uint64_t extent = 0;          // bytes above the frame base that may be read
};

uint16_t Slot(const BYTE* codes, unsigned i) {
  uint16_t v;
  memcpy(&v, codes + 2 * i, sizeof v);
  return v;
}

uint32_t Slot32(const BYTE* codes, unsigned i) { return Slot(codes, i) | (uint32_t{Slot(codes, i + 1)} << 16); }

// Sums the unwind codes of `entry` and of the entries it is chained to. False
// for codes this does not know (a newer format): the walk stops there.
bool Summarize(DWORD64 image_base, const RUNTIME_FUNCTION* entry, UnwindSummary* s) {
  uint64_t pushed = 8;  // the return address
  uint64_t saved = 0;   // the highest save slot (relative to the frame base)
  for (int depth = 0; depth < kChainDepth; depth++) {
    const BYTE* info = reinterpret_cast<const BYTE*>(image_base + entry->UnwindData);
    const unsigned flags = info[0] >> 3, count = info[2];
    if (depth == 0) s->prolog_size = info[1];
    if (s->frame_register == 0 && (info[3] & 0x0f) != 0) {
      s->frame_register = info[3] & 0x0f;
      s->frame_offset = info[3] >> 4;
    }
    const BYTE* codes = info + 4;
    for (unsigned i = 0; i < count;) {
      const unsigned op = codes[2 * i + 1] & 0x0f, op_info = codes[2 * i + 1] >> 4;
      switch (op) {
        case 0: pushed += 8; i += 1; break;                                  // UWOP_PUSH_NONVOL
        case 1:                                                              // UWOP_ALLOC_LARGE
          if (i + (op_info == 0 ? 1u : 2u) >= count) return false;
          pushed += op_info == 0 ? uint64_t{Slot(codes, i + 1)} * 8 : Slot32(codes, i + 1);
          i += op_info == 0 ? 2 : 3;
          break;
        case 2: pushed += op_info * 8 + 8; i += 1; break;                   // UWOP_ALLOC_SMALL
        case 3: i += 1; break;                                               // UWOP_SET_FPREG
        case 4:                                                              // UWOP_SAVE_NONVOL
          if (i + 1 >= count) return false;
          saved = std::max<uint64_t>(saved, uint64_t{Slot(codes, i + 1)} * 8 + 8);
          i += 2;
          break;
        case 5:                                                              // UWOP_SAVE_NONVOL_FAR
          if (i + 2 >= count) return false;
          saved = std::max<uint64_t>(saved, uint64_t{Slot32(codes, i + 1)} + 8);
          i += 3;
          break;
        case 6: i += 2; break;                       // UWOP_EPILOG (v2) / UWOP_SAVE_XMM (v1)
        case 7: i += 3; break;                       // UWOP_SAVE_XMM_FAR (v1)
        case 8:                                      // UWOP_SAVE_XMM128
          if (i + 1 >= count) return false;
          saved = std::max<uint64_t>(saved, uint64_t{Slot(codes, i + 1)} * 16 + 16);
          i += 2;
          break;
        case 9:                                      // UWOP_SAVE_XMM128_FAR
          if (i + 2 >= count) return false;
          saved = std::max<uint64_t>(saved, uint64_t{Slot32(codes, i + 1)} + 16);
          i += 3;
          break;
        case 10: pushed += 48; i += 1; break;       // UWOP_PUSH_MACHFRAME (SS, RSP, EFLAGS, CS, RIP, error code)
        default: return false;
      }
    }
    if ((flags & kChainInfo) == 0) break;
    // The chained entry follows the codes, whose count is rounded up to even.
    entry = reinterpret_cast<const RUNTIME_FUNCTION*>(codes + 2 * ((count + 1) & ~1u));
  }
  s->extent = pushed + saved;
  return true;
}

DWORD64* Registers(CONTEXT* c) { return &c->Rax; }  // RAX..R15, in unwind-code register order
constexpr int kRegisterCount = 16;

}  // namespace

bool UnwindCopy(const void* context, const StackCopy& copy, size_t max_frames, std::vector<RawFrame>* out) {
  alignas(16) CONTEXT c;
  memcpy(&c, context, sizeof c);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(copy.bytes), hi = lo + copy.size, limit = hi + kCopySlack;
  // Live-stack addresses in registers become addresses in the copy.
  auto rebase = [&]() {
    DWORD64* r = Registers(&c);
    for (int i = 0; i < kRegisterCount; i++) {
      if (r[i] >= copy.sp && r[i] - copy.sp < copy.size) r[i] = r[i] - copy.sp + lo;
    }
  };
  rebase();
  for (size_t n = 0; n < max_frames; n++) {
    const DWORD64 pc = c.Rip;
    if (pc == 0) break;
    RawFrame frame;
    frame.address = static_cast<uintptr_t>(pc);
    frame.exact = n == 0;
    out->push_back(frame);
    const DWORD64 sp = c.Rsp;
    if (sp < lo || sp + 8 > hi) break;
    DWORD64 image_base = 0;
    RUNTIME_FUNCTION* entry = RtlLookupFunctionEntry(pc, &image_base, nullptr);
    if (entry == nullptr && n == 0) {
      // A leaf function: the return address is at RSP.
      DWORD64 ret;
      memcpy(&ret, reinterpret_cast<const void*>(sp), sizeof ret);
      c.Rip = ret;
      c.Rsp = sp + 8;
    } else if (entry == nullptr) {
      // A caller without unwind information: one frame-pointer step.
      const DWORD64 fp = c.Rbp;
      if (fp < sp || fp + 16 > hi) break;  // sp >= lo was checked above
      DWORD64 saved[2];  // the caller's RBP, the return address
      memcpy(saved, reinterpret_cast<const void*>(fp), sizeof saved);
      c.Rbp = saved[0];
      c.Rip = saved[1];
      c.Rsp = fp + 16;
    } else {
      UnwindSummary s;
      if (!Summarize(image_base, entry, &s)) break;
      uint64_t base = sp;
      // Past the prolog, a function with a frame register unwinds from it.
      if (s.frame_register != 0 && pc - (image_base + entry->BeginAddress) >= s.prolog_size) {
        base = Registers(&c)[s.frame_register] - 16ull * s.frame_offset;
        if (base < lo || base >= hi) break;
      }
      if (s.extent > limit - base || s.extent > limit - sp) break;
      PVOID handler_data = nullptr;
      DWORD64 establisher = 0;
      RtlVirtualUnwind(UNW_FLAG_NHANDLER, image_base, pc, entry, &c, &handler_data, &establisher, nullptr);
    }
    rebase();
    if (c.Rsp < sp || (c.Rsp == sp && c.Rip == pc)) break;  // no progress
  }
  return true;
}

#else

bool UnwindCopy(const void*, const StackCopy&, size_t, std::vector<RawFrame>*) { return false; }

#endif

}  // namespace win32_stack
}  // namespace threadleak
