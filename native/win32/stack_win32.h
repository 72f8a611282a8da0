// stack_win32.h — what the parts of the Windows stack backend share (no
// N-API, no <windows.h> here: plain addresses and frames).
//
//   stack_win32.cc          the capture sequence: checks, suspend, copy, resume
//   stack_unwind_win32.cc   unwinding the copy of a stack (x64)
//   stack_symbols_win32.cc  module paths and export-table symbols
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "stack.h"

namespace threadleak {
namespace win32_stack {

struct RawFrame {
  uintptr_t address = 0;
  // True for a program counter (the innermost frame, the start address): it
  // is looked up as is. A return address points after its call, possibly
  // past the end of the calling function, so the call itself (address - 1)
  // is looked up; the frame still shows the return address, as on Linux.
  bool exact = false;
};

// The registers an unwind starts from, as GetThreadContext gave them, and a
// copy of the thread's stack from `sp` upwards. Addresses in the registers
// and in the copy are the thread's own (not rebased).
// Zeroed bytes after the copy in its buffer: the unwinder may read a little
// past the last copied byte (a frame's saved registers) without leaving it.
constexpr size_t kCopySlack = 4096;

struct StackCopy {
  const unsigned char* bytes = nullptr;  // followed by kCopySlack zeroed bytes
  size_t size = 0;       // bytes copied, from `sp`
  uintptr_t sp = 0;      // the thread's stack pointer when it was suspended
  bool complete = false; // the copy reaches the stack's base (not capped)
};

// Unwinds `copy` starting from `context` (a CONTEXT* of the suspended thread,
// opaque here) into at most `max_frames` frames, innermost first, the PC
// first. Reads only the copy and the code's unwind tables; never the live
// stack. x64 only (returns false elsewhere).
bool UnwindCopy(const void* context, const StackCopy& copy, size_t max_frames, std::vector<RawFrame>* out);

// Names `raw` into `out` (appended): module path, nearest export at or below
// the address, offsets. Takes the loader lock: never call it while another
// thread of this process is suspended.
void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out);

}  // namespace win32_stack
}  // namespace threadleak
