// stack_win32.cc — the native stack of one thread of this process, on Windows:
// the capture sequence.
//
// Strategy: the thread is opened (the handle pins the thread object, so its
// id cannot go to another thread while the capture holds it), checked against
// the caller's key, then suspended just long enough to read its registers
// (GetThreadContext) and copy its stack into a buffer allocated beforehand
// (ReadProcessMemory on this process), and resumed. Unwinding
// (stack_unwind_win32.cc) and naming (stack_symbols_win32.cc) run on the copy
// after the thread runs again. The calling thread itself is walked with
// RtlCaptureStackBackTrace.
//
// Quirks handled here:
//  - While another thread is suspended, this thread may take no lock the
//    suspended one could hold: no heap, no loader lock, no
//    RtlLookupFunctionEntry (it locks the dynamic function table list, which
//    V8 updates), no std::string or printf. Between SuspendThread and
//    ResumeThread only system calls run: GetThreadContext, ReadProcessMemory
//    (which also makes an unreadable page an error instead of a fault).
//  - SuspendThread returns before the thread has stopped on another CPU;
//    GetThreadContext waits for the suspension to take effect.
//  - Two threads suspending each other at once would both stay suspended
//    forever. One process-wide lock makes suspensions by this addon take
//    turns; it is waited for at most max(timeout_ms, kMinSuspendTurnWaitMs) ("busy"
//    after that). That is the only wait: suspension interrupts no system call
//    (there is no EINTR on Windows), so timeout 0 reads the whole stack too,
//    and leak reports and Worker matching, which ask for timeout 0, get full
//    frames.
//  - A thread already suspended by someone else (its previous suspend count
//    is above 0) is read the same way, without an error: its registers are
//    those it was stopped with.
//  - The copy runs from RSP to the stack base that the thread's TEB
//    (NT_TIB.StackBase) gives at the moment of suspension, capped at
//    kMaxCopyBytes: a deeper stack loses its outermost frames, and the
//    attribution then falls back to the thread's start address.
//  - The start address (NtQueryInformationThread, ThreadQuerySetWin32StartAddress)
//    is the function given to CreateThread, or the C runtime's thread entry
//    for _beginthreadex/std::thread.
//  - x64 only for other threads; ARM64 answers "unsupported" for them.
#include <windows.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "stack_win32.h"
#include "suspend_turn.h"
#include "threads.h"

namespace threadleak {
namespace {

using win32_stack::RawFrame;

constexpr size_t kMaxFrames = 128;
constexpr LONG kStatusSuccess = 0;
constexpr int kThreadQuerySetWin32StartAddress = 9;

// THREAD_BASIC_INFORMATION (winternl.h does not define it everywhere).
struct ThreadBasicInformation {
  LONG exit_status;
  PVOID teb;
  HANDLE process_id;
  HANDLE thread_id;
  ULONG_PTR affinity_mask;
  LONG priority;
  LONG base_priority;
};

using NtQueryInformationThreadFn = LONG(WINAPI*)(HANDLE, int, PVOID, ULONG, PULONG);

NtQueryInformationThreadFn QueryThread() {
  static const NtQueryInformationThreadFn fn = [] {
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    return ntdll ? reinterpret_cast<NtQueryInformationThreadFn>(
                       reinterpret_cast<void*>(GetProcAddress(ntdll, "NtQueryInformationThread")))
                 : nullptr;
  }();
  return fn;
}

std::string Win32Message(const char* call, DWORD code) {
  wchar_t* text = nullptr;
  const DWORD n = FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM |
                                     FORMAT_MESSAGE_IGNORE_INSERTS,
                                 nullptr, code, 0, reinterpret_cast<LPWSTR>(&text), 0, nullptr);
  std::string out = std::string(call) + " failed (error " + std::to_string(code);
  if (n > 0 && text != nullptr) {
    DWORD len = n;
    while (len > 0 && (text[len - 1] == L'\r' || text[len - 1] == L'\n' || text[len - 1] == L' ' ||
                       text[len - 1] == L'.')) {
      len--;
    }
    const int bytes = WideCharToMultiByte(CP_UTF8, 0, text, static_cast<int>(len), nullptr, 0, nullptr, nullptr);
    if (bytes > 0) {
      std::string message(static_cast<size_t>(bytes), '\0');
      WideCharToMultiByte(CP_UTF8, 0, text, static_cast<int>(len), &message[0], bytes, nullptr, nullptr);
      out += ": " + message;
    }
  }
  if (text != nullptr) LocalFree(text);
  return out + ")";
}

void SetOsError(StackResult* result, const char* call, DWORD code) {
  result->error = "os-error";
  result->detail = Win32Message(call, code);
}

class Handle {
 public:
  explicit Handle(HANDLE h) : h_(h) {}
  ~Handle() {
    if (h_ != nullptr) CloseHandle(h_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  HANDLE get() const { return h_; }

 private:
  HANDLE h_;
};

bool HasExited(HANDLE thread) { return WaitForSingleObject(thread, 0) == WAIT_OBJECT_0; }

// The calling thread: walk here, then drop this addon's own frames.
void CaptureSelf(StackResult* result) {
  void* addresses[kMaxFrames];
  const USHORT n = RtlCaptureStackBackTrace(0, static_cast<DWORD>(kMaxFrames), addresses, nullptr);
  std::vector<RawFrame> raw(1);
  raw[0].address = reinterpret_cast<uintptr_t>(&CaptureSelf);  // names this addon's module
  raw[0].exact = true;
  // Past the thread's entry, RtlCaptureStackBackTrace may go on with a 0.
  for (USHORT i = 0; i < n && addresses[i] != nullptr; i++) {
    RawFrame f;
    f.address = reinterpret_cast<uintptr_t>(addresses[i]);
    raw.push_back(f);
  }
  win32_stack::Symbolize(raw, &result->frames);
  const std::string own = result->frames[0].module;
  size_t first = 1;
  while (first < result->frames.size() && !own.empty() && result->frames[first].module == own) first++;
  result->frames.erase(result->frames.begin(), result->frames.begin() + first);
}

#if defined(_M_X64) || defined(__x86_64__)

constexpr size_t kMaxCopyBytes = 1024 * 1024;  // of the stack copied, from RSP upwards
constexpr size_t kGrowthRoom = 64 * 1024;     // the stack may grow between sizing and suspension
constexpr int kThreadBasicInformation = 0;

// A thread on its way out (its TEB or stack already freed, its context gone)
// makes the reads fail before its handle is signaled: a failed read is blamed
// on the exit when the thread ends within kExitWaitMs (waited only after a
// failure; generous, as the end can lag under load, under wine most of all).
constexpr DWORD kExitWaitMs = 100;
bool IsExiting(HANDLE thread) { return WaitForSingleObject(thread, kExitWaitMs) == WAIT_OBJECT_0; }

// Resumes the thread on every path out of the suspended section.
class Suspension {
 public:
  explicit Suspension(HANDLE thread) : thread_(thread), previous_(SuspendThread(thread)) {}
  ~Suspension() {
    if (ok()) ResumeThread(thread_);
  }
  Suspension(const Suspension&) = delete;
  Suspension& operator=(const Suspension&) = delete;
  bool ok() const { return previous_ != static_cast<DWORD>(-1); }

 private:
  HANDLE thread_;
  DWORD previous_;
};

bool ReadOwn(uintptr_t address, void* out, size_t size) {
  SIZE_T done = 0;
  return ReadProcessMemory(GetCurrentProcess(), reinterpret_cast<const void*>(address), out, size, &done) &&
         done == size;
}

void CaptureOther(HANDLE thread, double timeout_ms, std::vector<RawFrame>* raw, StackResult* result) {
  // Everything that allocates happens here, before the suspension.
  ThreadBasicInformation basic{};
  NT_TIB tib{};
  const NtQueryInformationThreadFn query = QueryThread();
  if (query == nullptr) {
    result->error = "unsupported";
    result->detail = "ntdll has no NtQueryInformationThread";
    return;
  }
  LONG status = query(thread, kThreadBasicInformation, &basic, sizeof basic, nullptr);
  if (status != kStatusSuccess || basic.teb == nullptr) {
    if (IsExiting(thread)) {
      result->error = "exited";
      return;
    }
    char text[96];
    snprintf(text, sizeof text, "NtQueryInformationThread(ThreadBasicInformation) failed (status 0x%08lx)",
             static_cast<unsigned long>(status));
    result->error = "os-error";
    result->detail = text;
    return;
  }
  const uintptr_t teb = reinterpret_cast<uintptr_t>(basic.teb);
  if (!ReadOwn(teb, &tib, sizeof tib)) {
    const DWORD error = GetLastError();
    // An exiting thread's TEB is freed before its handle is signaled.
    if (IsExiting(thread)) {
      result->error = "exited";
      return;
    }
    SetOsError(result, "ReadProcessMemory(TEB)", error);
    return;
  }
  const uintptr_t base0 = reinterpret_cast<uintptr_t>(tib.StackBase), limit0 = reinterpret_cast<uintptr_t>(tib.StackLimit);
  size_t capacity = base0 > limit0 ? base0 - limit0 + kGrowthRoom : kMaxCopyBytes;
  if (capacity > kMaxCopyBytes) capacity = kMaxCopyBytes;
  std::vector<unsigned char> buffer(capacity + win32_stack::kCopySlack, 0);
  alignas(16) CONTEXT context;
  memset(&context, 0, sizeof context);
  context.ContextFlags = CONTEXT_CONTROL | CONTEXT_INTEGER;
  win32_stack::StackCopy copy;
  copy.bytes = buffer.data();
  DWORD context_error = 0, copy_error = 0;
  bool have_context = false, suspend_failed = false;
  DWORD suspend_error = 0;
  {
    SuspendTurn turn(timeout_ms);
    if (!turn.held()) {
      result->error = "busy";
      return;
    }
    Suspension suspension(thread);
    if (!suspension.ok()) {
      suspend_failed = true;
      suspend_error = GetLastError();
    } else if (!GetThreadContext(thread, &context)) {
      context_error = GetLastError();
    } else {
      have_context = true;
      // The stack base now (a fiber switch since the TEB was first read moves it).
      NT_TIB now{};
      uintptr_t top = ReadOwn(teb, &now, sizeof now) ? reinterpret_cast<uintptr_t>(now.StackBase) : base0;
      const uintptr_t sp = context.Rsp;
      if (top <= sp || top - sp > capacity) {
        copy.size = top > sp ? capacity : 0;
      } else {
        copy.size = top - sp;
        copy.complete = true;
      }
      copy.sp = sp;
      if (copy.size > 0 && !ReadOwn(sp, buffer.data(), copy.size)) {
        copy_error = GetLastError();
        copy.size = 0;
      }
    }
  }  // resumed, then the turn released
  if (!have_context || copy.size == 0) {
    if (IsExiting(thread)) {
      result->error = "exited";
      return;
    }
  }
  if (suspend_failed) {
    SetOsError(result, "SuspendThread", suspend_error);
    return;
  }
  if (!have_context) {
    SetOsError(result, "GetThreadContext", context_error);
    return;
  }
  if (copy.size == 0) {
    // Only the PC is known.
    RawFrame pc;
    pc.address = static_cast<uintptr_t>(context.Rip);
    pc.exact = true;
    raw->push_back(pc);
    if (copy_error != 0) {
      SetOsError(result, "ReadProcessMemory(stack)", copy_error);
    } else {
      result->error = "os-error";
      result->detail = "its stack pointer lies outside its stack";
    }
    return;
  }
  win32_stack::UnwindCopy(&context, copy, kMaxFrames, raw);
}

#else

void CaptureOther(HANDLE, double, std::vector<RawFrame>*, StackResult* result) {
  result->error = "unsupported";
  result->detail = "other threads' stacks are read on x64 only for now";
}

#endif

}  // namespace

void CaptureStack(uint64_t tid, double timeout_ms, const std::string& key, StackResult* result) {
  *result = StackResult();
  if (tid == 0 || tid > 0xffffffffull) {
    result->error = "not-found";
    return;
  }
  const DWORD id = static_cast<DWORD>(tid);
  if (id == GetCurrentThreadId()) {
    CaptureSelf(result);
    return;
  }
  const DWORD query = THREAD_QUERY_INFORMATION | THREAD_QUERY_LIMITED_INFORMATION;
  const DWORD access = THREAD_SUSPEND_RESUME | THREAD_GET_CONTEXT | SYNCHRONIZE;
  HANDLE opened = OpenThread(access | query, FALSE, id);
  // A thread whose security descriptor refuses full query rights: without the
  // start address.
  if (opened == nullptr && GetLastError() == ERROR_ACCESS_DENIED) {
    opened = OpenThread(access | THREAD_QUERY_LIMITED_INFORMATION, FALSE, id);
  }
  if (opened == nullptr) {
    const DWORD e = GetLastError();
    if (e == ERROR_INVALID_PARAMETER) {
      result->error = key.empty() ? "not-found" : "exited";
    } else {
      SetOsError(result, "OpenThread", e);
    }
    return;
  }
  Handle thread(opened);
  const DWORD owner = GetProcessIdOfThread(thread.get());
  if (owner == 0) {
    SetOsError(result, "GetProcessIdOfThread", GetLastError());
    return;
  }
  if (owner != GetCurrentProcessId()) {  // a thread of another process
    result->error = key.empty() ? "not-found" : "exited";
    return;
  }
  // Checked with the handle open: the thread it names can no longer go away
  // and leave its id to another one.
  if (!key.empty() && CurrentThreadKey(tid) != key) {
    result->error = "exited";
    result->detail = "its id now names another thread";
    return;
  }
  if (HasExited(thread.get())) {
    result->error = "exited";
    return;
  }
  RawFrame start;
  start.exact = true;
  PVOID start_address = nullptr;
  const NtQueryInformationThreadFn query_thread = QueryThread();
  if (query_thread != nullptr &&
      query_thread(thread.get(), kThreadQuerySetWin32StartAddress, &start_address, sizeof start_address, nullptr) ==
          kStatusSuccess) {
    start.address = reinterpret_cast<uintptr_t>(start_address);
  }
  std::vector<RawFrame> raw;
  CaptureOther(thread.get(), timeout_ms, &raw, result);
  if (result->error == "exited") return;
  if (start.address != 0) raw.push_back(start);
  win32_stack::Symbolize(raw, &result->frames);
  if (start.address != 0) {
    result->start = std::move(result->frames.back());
    result->frames.pop_back();
  }
}

}  // namespace threadleak
