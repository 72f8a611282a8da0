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
  std::string raw_state;      // the OS's own word for the state ('S', 'TH_STATE_WAITING', 'Waiting/WrQueue', ...)
  double user_cpu_ms = 0;
  double system_cpu_ms = 0;
  bool has_start_time = false;
  double start_time_ms = 0;   // ms since the Unix epoch
  // Names one thread for its whole life, even when the OS later hands the
  // same id to another thread, and no other thread of the process before or
  // after (Linux: "<tid>@<start ticks>", "#<n>" appended for a tid reused
  // within one tick; Windows: "<id>@<creation time>", the creation time in
  // ms since the Unix epoch written exactly from the FILETIME's 100 ns count
  // (fraction digits only where needed, no floating point), or "<id>" alone for a thread of
  // another process that cannot be opened; macOS: "<thread_id>", never reused).
  std::string key;
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

// The key ListThreads(0) would give thread `tid` of this process now (the
// same one it gave before, while that thread lives), or '' when this process
// has no thread `tid`. Lets a caller check that a tid still names the thread
// it listed before acting on it.
std::string CurrentThreadKey(uint64_t tid);

// The OS thread id of the calling thread.
uint64_t CurrentThreadId();

// Keeps this addon loaded until the process ends. Node unloads an addon when
// the last Worker that loaded it ends; a probe signal handler or an exit
// watchdog thread left in unloaded code would crash the process, and a reload
// would forget what this process already said once. Linux: linked with
// -z nodelete instead (binding.gyp), so nothing to do here. macOS (ld64 has
// no such flag): one more dyld reference to the image, never released.
void KeepAddonLoaded();

}  // namespace threadleak
