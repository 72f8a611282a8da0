// threads_win32.h — what the two Windows thread readers share.
//
// threads_win32.cc reads every thread of a process from one
// NtQuerySystemInformation(SystemProcessInformation) call;
// threads_toolhelp_win32.cc reads them with Toolhelp32 + OpenThread +
// GetThreadTimes, the fallback where that call is missing or fails. Both build
// keys, times and names with the helpers below, so that a thread gets the same
// key whichever reader listed it (and from CurrentThreadKey).
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cstdint>
#include <string>
#include <vector>

#include "threads.h"

namespace threadleak {
namespace win32_threads {

// A FILETIME as one 64-bit count of 100 ns intervals since 1601-01-01 UTC.
inline uint64_t FileTimeValue(const FILETIME& ft) {
  return (static_cast<uint64_t>(ft.dwHighDateTime) << 32) | ft.dwLowDateTime;
}

// "<id>@<creation time>", the creation time in ms since the Unix epoch written
// exactly from the 100 ns count (e.g. "5012@1764640181234.5678"; no floating
// point, so the NT reader, the Toolhelp reader and CurrentThreadKey give
// identical strings, and two threads that reuse an id within 1 ms differ).
std::string KeyOf(uint64_t id, uint64_t create_time_100ns);

// Fills the times of `record` from creation time and CPU times in 100 ns units.
void SetTimes(uint64_t create_time_100ns, uint64_t user_100ns, uint64_t kernel_100ns, ThreadRecord* record);

// An open thread handle, closed on scope exit.
class ThreadHandle {
 public:
  // OpenThread(THREAD_QUERY_LIMITED_INFORMATION); check ok() / error().
  explicit ThreadHandle(DWORD tid);
  ~ThreadHandle() { if (handle_) CloseHandle(handle_); }
  ThreadHandle(const ThreadHandle&) = delete;
  ThreadHandle& operator=(const ThreadHandle&) = delete;
  bool ok() const { return handle_ != nullptr; }
  DWORD error() const { return error_; }
  HANDLE get() const { return handle_; }

  // The creation time in 100 ns units since 1601, and the CPU times; false
  // when GetThreadTimes fails.
  bool Times(uint64_t* create_100ns, uint64_t* user_100ns, uint64_t* kernel_100ns) const;

  // The thread's description (GetThreadDescription, Windows 10 1607+) in
  // UTF-8; '' when it has none or the function does not exist.
  std::string Description() const;

 private:
  HANDLE handle_ = nullptr;
  DWORD error_ = 0;
};

// Fills *error from a Win32 error code of `syscall`. ERROR_INVALID_PARAMETER
// (the answer for a pid no process has) is ESRCH and ERROR_ACCESS_DENIED is
// EPERM; anything else keeps "UNKNOWN" with the number in errno.
void SetWin32Error(OsError* error, DWORD code, const char* syscall, const std::string& what);

// ESRCH for a pid that no process has.
void SetNoSuchProcess(OsError* error, int64_t pid, const char* syscall);

// The Toolhelp32 reader: every thread of process `pid` (never 0).
bool ListWithToolhelp(DWORD pid, std::vector<ThreadRecord>* out, OsError* error);

}  // namespace win32_threads
}  // namespace threadleak
