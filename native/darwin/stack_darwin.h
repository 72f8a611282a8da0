// stack_darwin.h — what the parts of the macOS stack backend share (plain
// addresses and frames; no N-API).
//
//   stack_darwin.cc          the capture sequence: find, check, suspend, copy, resume
//   stack_walk_darwin.cc     walking frame records on the copy; the calling thread
//   stack_symbols_darwin.cc  module paths and symbols (dladdr, LC_FUNCTION_STARTS)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "stack.h"

namespace threadleak {
namespace darwin_stack {

struct RawFrame {
  uintptr_t address = 0;
  // True for a program counter: looked up as is. A return address points
  // after its call, possibly past the end of the calling function (a call to
  // a noreturn function), so the call itself (address - 1) is looked up; the
  // frame still shows the return address, as on Linux and Windows.
  bool exact = false;
};

// The registers a walk starts from, read from the suspended thread, with
// pointer authentication bits already stripped (arm64).
struct Registers {
  uintptr_t pc = 0;
  uintptr_t sp = 0;
  uintptr_t fp = 0;
  uintptr_t lr = 0;  // arm64: the link register; x86_64: 0 (the return address of a frameless function is at [sp])
};

// A copy of the thread's stack from `sp` upwards, made while it was
// suspended. Addresses in it are the thread's own (not rebased).
struct StackCopy {
  const unsigned char* bytes = nullptr;
  size_t size = 0;        // bytes copied, from `sp`
  uintptr_t sp = 0;       // the thread's stack pointer when it was suspended
  bool complete = false;  // the copy reaches the top of the stack (not capped, not cut short)
};

// A code address with the pointer authentication code (arm64e, and the
// return addresses arm64e system libraries sign in any process) removed;
// the address itself elsewhere.
uintptr_t StripCodePointer(uintptr_t address);

// Walks the frame records of `copy` from `regs` into at most `max_frames`
// frames, innermost first, the PC first. Reads only the copy and, to check
// a frameless function's caller, a few bytes of code through
// vm_read_overwrite. Calls dladdr: only after the thread was resumed.
void WalkCopy(const Registers& regs, const StackCopy& copy, size_t max_frames, std::vector<RawFrame>* out);

// The calling thread's own frames, this addon's frames dropped (backtrace()).
void CaptureSelf(StackResult* result);

// Names `raw` into `out` (appended): module path, symbol, offsets. Takes
// dyld's lock: never call it while another thread of this process is
// suspended.
void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out);

// True when `address` lies in a loaded image (false for JIT code, anonymous
// and unmapped memory). *start is then the start of the function that holds
// it (from the image's LC_FUNCTION_STARTS, else dladdr's symbol), or 0 when
// that cannot be told.
bool FunctionContaining(uintptr_t address, uintptr_t* start);

// Reads `size` bytes at `address` of this process without faulting
// (vm_read_overwrite: an unmapped page is an error, not a crash).
bool ReadOwnMemory(uintptr_t address, void* out, size_t size);

}  // namespace darwin_stack
}  // namespace threadleak
