// threads_toolhelp_win32.cc — the Toolhelp32 thread reader and the per-thread
// helpers both Windows readers use (keys, times, names, errors).
//
// Strategy (fallback reader): CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD)
// snapshots every thread of the system; the ones whose th32OwnerProcessID is
// the pid are opened one by one with OpenThread(THREAD_QUERY_LIMITED_INFORMATION)
// for GetThreadTimes (creation and CPU times) and GetThreadDescription (name).
// Toolhelp tells no scheduling state: rawState is '' (state 'unknown').
//
// Quirks handled here:
//  - A thread in the snapshot can end before OpenThread: OpenThread then fails
//    with ERROR_INVALID_PARAMETER and the thread is left out.
//  - A thread of another process that cannot be opened (ERROR_ACCESS_DENIED,
//    protected processes) is still listed, with no times, no name and the key
//    "<id>" alone: nothing better names it.
//  - GetThreadDescription exists from Windows 10 1607 on, in kernel32 on
//    some builds and only in KernelBase on others: looked up at run time.
#include "threads_win32.h"

#include <tlhelp32.h>

#include <cstddef>
#include <cstdio>

namespace threadleak {
namespace win32_threads {
namespace {

// 100 ns intervals between 1601-01-01 and 1970-01-01 (both UTC).
constexpr uint64_t kUnixEpochIn100ns = 116444736000000000ULL;

using GetThreadDescriptionFn = HRESULT(WINAPI*)(HANDLE, PWSTR*);

// GetProcAddress returns a FARPROC; casting through void(*)(void) is the
// conversion GCC's -Wcast-function-type accepts and MSVC allows.
template <typename Fn>
Fn LookUp(const wchar_t* module, const char* name) {
  HMODULE handle = GetModuleHandleW(module);  // both modules are always loaded: no LoadLibrary
  if (handle == nullptr) return nullptr;
  FARPROC proc = GetProcAddress(handle, name);
  return reinterpret_cast<Fn>(reinterpret_cast<void (*)(void)>(proc));
}

GetThreadDescriptionFn GetThreadDescriptionFunction() {
  static const GetThreadDescriptionFn fn = [] {
    GetThreadDescriptionFn found = LookUp<GetThreadDescriptionFn>(L"kernel32.dll", "GetThreadDescription");
    return found ? found : LookUp<GetThreadDescriptionFn>(L"KernelBase.dll", "GetThreadDescription");
  }();
  return fn;
}

std::string Utf8(const wchar_t* wide) {
  const int size = WideCharToMultiByte(CP_UTF8, 0, wide, -1, nullptr, 0, nullptr, nullptr);
  if (size <= 1) return std::string();  // empty, or not convertible
  std::string out(static_cast<size_t>(size), '\0');
  if (WideCharToMultiByte(CP_UTF8, 0, wide, -1, &out[0], size, nullptr, nullptr) != size) return std::string();
  out.resize(static_cast<size_t>(size) - 1);  // drop the terminating '\0'
  return out;
}

// Closes a Toolhelp32 snapshot on scope exit.
struct SnapshotCloser {
  HANDLE handle;
  ~SnapshotCloser() { CloseHandle(handle); }
};

// Maps OpenProcess's answer for another pid to ESRCH/EPERM; true when it opens.
bool CheckProcess(DWORD pid, OsError* error) {
  HANDLE process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (process == nullptr) {
    SetWin32Error(error, GetLastError(), "OpenProcess", "pid " + std::to_string(pid));
    return false;
  }
  // A pid whose process has exited but whose object is still referenced opens
  // fine: its exit code tells.
  DWORD exit_code = 0;
  const bool exited = GetExitCodeProcess(process, &exit_code) && exit_code != STILL_ACTIVE;
  CloseHandle(process);
  if (exited) {
    SetNoSuchProcess(error, pid, "GetExitCodeProcess");
    return false;
  }
  return true;
}

}  // namespace

std::string KeyOf(uint64_t id, uint64_t create_time_100ns) {
  char key[64];
  if (create_time_100ns < kUnixEpochIn100ns) {
    // Not a real creation time (never seen): still exact, in 100 ns units.
    snprintf(key, sizeof key, "%llu@%llu00ns", static_cast<unsigned long long>(id),
             static_cast<unsigned long long>(create_time_100ns));
    return key;
  }
  // Milliseconds since the Unix epoch, written exactly from the integer count:
  // whole ms, then the 0.1 us digits without trailing zeros.
  const uint64_t since_epoch = create_time_100ns - kUnixEpochIn100ns;
  unsigned fraction = static_cast<unsigned>(since_epoch % 10000);
  int digits = 4;
  while (digits > 0 && fraction % 10 == 0) {
    fraction /= 10;
    digits--;
  }
  if (digits == 0) {
    snprintf(key, sizeof key, "%llu@%llu", static_cast<unsigned long long>(id),
             static_cast<unsigned long long>(since_epoch / 10000));
  } else {
    snprintf(key, sizeof key, "%llu@%llu.%0*u", static_cast<unsigned long long>(id),
             static_cast<unsigned long long>(since_epoch / 10000), digits, fraction);
  }
  return key;
}

void SetTimes(uint64_t create_100ns, uint64_t user_100ns, uint64_t kernel_100ns, ThreadRecord* record) {
  record->user_cpu_ms = static_cast<double>(user_100ns) / 1e4;
  record->system_cpu_ms = static_cast<double>(kernel_100ns) / 1e4;
  record->has_start_time = create_100ns > kUnixEpochIn100ns;
  if (record->has_start_time) {
    // Subtract in integers first: the difference fits a double exactly for
    // dates far beyond any thread's, and the division keeps 0.1 µs steps.
    record->start_time_ms = static_cast<double>(create_100ns - kUnixEpochIn100ns) / 1e4;
  }
  record->key = KeyOf(record->id, create_100ns);
}

ThreadHandle::ThreadHandle(DWORD tid) {
  handle_ = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, FALSE, tid);
  if (handle_ == nullptr) error_ = GetLastError();
}

bool ThreadHandle::Times(uint64_t* create_100ns, uint64_t* user_100ns, uint64_t* kernel_100ns) const {
  FILETIME create, exit_time, kernel, user;
  if (!handle_ || !GetThreadTimes(handle_, &create, &exit_time, &kernel, &user)) return false;
  *create_100ns = FileTimeValue(create);
  *user_100ns = FileTimeValue(user);
  *kernel_100ns = FileTimeValue(kernel);
  return true;
}

std::string ThreadHandle::Description() const {
  const GetThreadDescriptionFn get_description = GetThreadDescriptionFunction();
  if (!handle_ || !get_description) return std::string();
  PWSTR description = nullptr;
  if (FAILED(get_description(handle_, &description))) return std::string();
  std::string name = description ? Utf8(description) : std::string();
  if (description) LocalFree(description);  // allocated by the system with LocalAlloc
  return name;
}

void SetWin32Error(OsError* error, DWORD code, const char* syscall, const std::string& what) {
  error->code = code == ERROR_INVALID_PARAMETER ? "ESRCH" : code == ERROR_ACCESS_DENIED ? "EPERM" : "UNKNOWN";
  error->errno_value = static_cast<int>(code);
  error->syscall = syscall;
  char message[320];
  snprintf(message, sizeof message, "%s %s: Windows error %lu", syscall, what.c_str(), static_cast<unsigned long>(code));
  error->message = message;
}

void SetNoSuchProcess(OsError* error, int64_t pid, const char* syscall) {
  error->code = "ESRCH";
  error->errno_value = ERROR_INVALID_PARAMETER;  // what OpenProcess answers for such a pid
  error->syscall = syscall;
  error->message = "no process has pid " + std::to_string(pid);
}

bool ListWithToolhelp(DWORD pid, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  const bool self = pid == GetCurrentProcessId();
  if (!self && !CheckProcess(pid, error)) return false;
  HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  if (snapshot == INVALID_HANDLE_VALUE) {
    SetWin32Error(error, GetLastError(), "CreateToolhelp32Snapshot", "TH32CS_SNAPTHREAD");
    // ERROR_INVALID_PARAMETER here is no statement about the pid.
    if (error->code == "ESRCH") error->code = "UNKNOWN";
    return false;
  }
  SnapshotCloser closer{snapshot};
  THREADENTRY32 entry;
  entry.dwSize = sizeof entry;
  constexpr DWORD kNeeded = static_cast<DWORD>(offsetof(THREADENTRY32, th32OwnerProcessID) + sizeof(DWORD));
  for (BOOL more = Thread32First(snapshot, &entry); more; more = Thread32Next(snapshot, &entry)) {
    // Toolhelp may fill fewer bytes than asked for; the two fields used must be there.
    if (entry.dwSize >= kNeeded && entry.th32OwnerProcessID == pid) {
      ThreadRecord record;
      record.id = entry.th32ThreadID;
      ThreadHandle thread(entry.th32ThreadID);
      uint64_t create = 0, user = 0, kernel = 0;
      if (thread.ok() && thread.Times(&create, &user, &kernel)) {
        SetTimes(create, user, kernel, &record);
        record.name = thread.Description();
      } else if (!thread.ok() && thread.error() == ERROR_INVALID_PARAMETER) {
        continue;  // it ended after the snapshot
      } else {
        record.key = std::to_string(record.id);  // not ours to open: nothing but the id is known
      }
      out->push_back(std::move(record));
    }
    entry.dwSize = sizeof entry;
  }
  const DWORD last = GetLastError();
  if (last != ERROR_NO_MORE_FILES) {
    SetWin32Error(error, last, "Thread32Next", "pid " + std::to_string(pid));
    if (error->code == "ESRCH") error->code = "UNKNOWN";
    return false;
  }
  if (out->empty()) {  // every thread ended: the process is gone
    SetNoSuchProcess(error, pid, "Thread32Next");
    return false;
  }
  return true;
}

}  // namespace win32_threads
}  // namespace threadleak
