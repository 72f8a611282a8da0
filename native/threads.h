// threads.h — the plain C++ interface every OS backend implements.
//
// No N-API here: a backend fills plain structs and reports failures as an
// OsError (a stable code such as "ESRCH" plus the syscall and errno), and
// addon.cc alone turns them into JavaScript values or exceptions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace threadleak {

struct ThreadRecord {
  uint64_t id = 0;            // Linux tid, macOS thread_id, Windows thread id
  std::string name;           // '' when the thread has none
  std::string raw_state;      // the OS's own word for the state ('S', 'TH_STATE_WAITING', ...)
  double user_cpu_ms = 0;
  double system_cpu_ms = 0;
  bool has_start_time = false;
  double start_time_ms = 0;   // ms since the Unix epoch
  // A value that, together with id, names one thread for its whole life even
  // when the OS later hands the same id to another thread (Linux: start time
  // in clock ticks since boot; Windows: creation FILETIME; macOS: 0, since
  // thread_id is never reused).
  uint64_t identity = 0;
};

struct OsError {
  std::string code;     // "ESRCH", "EACCES", "EPERM", "ENOTSUP", ...
  int errno_value = 0;  // the raw OS error number, 0 when not from errno
  std::string syscall;  // the call that failed ("opendir", "read", ...)
  std::string message;  // human-readable detail, formatted by the backend
};

// Lists the threads of process `pid`, or of the calling process when pid == 0.
// Threads that exit while being read are skipped, never reported as errors.
// Returns false and fills *error when the process cannot be read at all.
bool ListThreads(int64_t pid, std::vector<ThreadRecord>* out, OsError* error);

// The OS thread id of the calling thread.
uint64_t CurrentThreadId();

// The platform this backend serves, e.g. "linux"; used in messages.
const char* BackendName();

}  // namespace threadleak
