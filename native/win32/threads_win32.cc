// threads_win32.cc — thread enumeration on Windows.
//
// Strategy: one NtQuerySystemInformation(SystemProcessInformation) call
// returns every process of the system, each followed by its threads with id,
// scheduling state and wait reason, CPU times and creation time, all read at
// one instant. The entry of the pid is found and turned into records; each
// thread is then opened once (OpenThread(THREAD_QUERY_LIMITED_INFORMATION))
// for its name (GetThreadDescription). Where NtQuerySystemInformation is
// missing or fails, or THREADLEAK_WIN32_TOOLHELP=1 is set when the first
// thread list is read, the Toolhelp32 reader (threads_toolhelp_win32.cc)
// answers instead.
//
// Quirks handled here:
//  - The list grows between the size query and the read: the buffer is grown
//    and the call retried on STATUS_INFO_LENGTH_MISMATCH, a bounded number of
//    times; the last size that fitted is remembered for the next call.
//  - A thread id can be reused between the snapshot and OpenThread: a name is
//    only taken from a handle whose creation time is the snapshot's.
//  - A thread that ended after the snapshot cannot be opened
//    (ERROR_INVALID_PARAMETER): it keeps the name ''. A thread that has ended
//    but whose object is still referenced is listed with state Terminated.
//  - rawState: "Waiting/<KWAIT_REASON name>" for a waiting thread, the
//    KTHREAD_STATE name alone otherwise (the wait reason of a thread that is
//    not waiting is stale); a number where the value has no known name.
//    Wine reports state 0 (Initialized) for every thread.
#include "threads_win32.h"

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>

namespace threadleak {
namespace {

using win32_threads::ThreadHandle;

// The layouts below are the documented ones (learn.microsoft.com,
// "NtQuerySystemInformation function", SYSTEM_PROCESS_INFORMATION and
// SYSTEM_THREAD_INFORMATION), with the fields it calls Reserved named after the
// Windows Driver Kit / Geoff Chappell's descriptions. Only fields up to the
// ones read are declared; the thread array starts right after the full
// process structure, whose size is 256 bytes on x64 (checked below).
struct NtUnicodeString {
  USHORT length;
  USHORT maximum_length;
  PWSTR buffer;
};

struct NtProcessEntry {
  ULONG next_entry_offset;  // 0 for the last entry
  ULONG number_of_threads;
  LARGE_INTEGER reserved1[6];  // working-set private size, hard faults, cycle time, create/user/kernel time
  NtUnicodeString image_name;
  LONG base_priority;
  HANDLE unique_process_id;
  HANDLE inherited_from_unique_process_id;
  ULONG handle_count;
  ULONG session_id;
  ULONG_PTR unique_process_key;
  SIZE_T peak_virtual_size, virtual_size;
  ULONG page_fault_count;
  SIZE_T peak_working_set_size, working_set_size;
  SIZE_T quota_peak_paged_pool_usage, quota_paged_pool_usage;
  SIZE_T quota_peak_non_paged_pool_usage, quota_non_paged_pool_usage;
  SIZE_T pagefile_usage, peak_pagefile_usage, private_page_count;
  LARGE_INTEGER reserved7[6];  // read/write/other operation and transfer counts
};

struct NtThreadEntry {
  LARGE_INTEGER kernel_time;  // 100 ns units
  LARGE_INTEGER user_time;    // 100 ns units
  LARGE_INTEGER create_time;  // 100 ns units since 1601-01-01 UTC
  ULONG wait_time;
  PVOID start_address;
  HANDLE unique_process;  // CLIENT_ID
  HANDLE unique_thread;
  LONG priority;
  LONG base_priority;
  ULONG context_switches;
  ULONG thread_state;  // KTHREAD_STATE
  ULONG wait_reason;   // KWAIT_REASON
};

#if defined(_WIN64)
static_assert(offsetof(NtProcessEntry, image_name) == 56, "SYSTEM_PROCESS_INFORMATION.ImageName");
static_assert(offsetof(NtProcessEntry, unique_process_id) == 80, "SYSTEM_PROCESS_INFORMATION.UniqueProcessId");
static_assert(sizeof(NtProcessEntry) == 256, "SYSTEM_PROCESS_INFORMATION size");
static_assert(offsetof(NtThreadEntry, unique_thread) == 48, "SYSTEM_THREAD_INFORMATION.ClientId.UniqueThread");
static_assert(offsetof(NtThreadEntry, thread_state) == 68, "SYSTEM_THREAD_INFORMATION.ThreadState");
static_assert(sizeof(NtThreadEntry) == 80, "SYSTEM_THREAD_INFORMATION size");
#endif

using NtQuerySystemInformationFn = LONG(NTAPI*)(ULONG, PVOID, ULONG, PULONG);
constexpr ULONG kSystemProcessInformation = 5;
constexpr LONG kStatusInfoLengthMismatch = static_cast<LONG>(0xC0000004L);
constexpr int kMaxAttempts = 8;
constexpr ULONG kMaxBufferBytes = 512u << 20;
constexpr ULONG kSlackBytes = 64u << 10;  // room for what starts between two attempts

NtQuerySystemInformationFn NtQuerySystemInformationFunction() {
  static const NtQuerySystemInformationFn fn = [] {
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");  // mapped into every process
    FARPROC proc = ntdll ? GetProcAddress(ntdll, "NtQuerySystemInformation") : nullptr;
    return reinterpret_cast<NtQuerySystemInformationFn>(reinterpret_cast<void (*)(void)>(proc));
  }();
  return fn;
}

bool ToolhelpForced() {
  static const bool forced = [] {
    // The process environment, which process.env assignments also change
    // (the CRT's getenv copy would not see them). Read once, on first use.
    char value[4];
    const DWORD length = GetEnvironmentVariableA("THREADLEAK_WIN32_TOOLHELP", value, sizeof value);
    return length == 1 && value[0] == '1';
  }();
  return forced;
}

const char* const kStateNames[] = {"Initialized", "Ready", "Running", "Standby", "Terminated",
                                   "Waiting", "Transition", "DeferredReady", "GateWaitObsolete",
                                   "WaitingForProcessInSwap"};
constexpr ULONG kWaiting = 5;

const char* const kWaitReasonNames[] = {
    "Executive", "FreePage", "PageIn", "PoolAllocation", "DelayExecution", "Suspended",
    "UserRequest", "WrExecutive", "WrFreePage", "WrPageIn", "WrPoolAllocation",
    "WrDelayExecution", "WrSuspended", "WrUserRequest", "WrSpare0", "WrQueue",
    "WrLpcReceive", "WrLpcReply", "WrVirtualMemory", "WrPageOut", "WrRendezvous",
    "WrKeyedEvent", "WrTerminated", "WrProcessInSwap", "WrCpuRateControl", "WrCalloutStack",
    "WrKernel", "WrResource", "WrPushLock", "WrMutex", "WrQuantumEnd", "WrDispatchInt",
    "WrPreempted", "WrYieldExecution", "WrFastMutex", "WrGuardedMutex", "WrRundown",
    "WrAlertByThreadId", "WrDeferredPreempt", "WrPhysicalFault", "WrIoRing", "WrMdlCache"};

template <size_t N>
std::string NameOf(const char* const (&names)[N], ULONG value) {
  return value < N ? std::string(names[value]) : std::to_string(value);
}

std::string RawState(ULONG state, ULONG wait_reason) {
  if (state != kWaiting) return NameOf(kStateNames, state);
  return NameOf(kStateNames, state) + "/" + NameOf(kWaitReasonNames, wait_reason);
}

// The whole SystemProcessInformation list, 8-byte aligned. False when the
// call is missing or fails (the caller falls back to Toolhelp32).
bool QueryProcessList(std::unique_ptr<uint64_t[]>* buffer, ULONG* used) {
  static std::atomic<ULONG> last_size{256u << 10};
  const NtQuerySystemInformationFn query = NtQuerySystemInformationFunction();
  if (!query) return false;
  ULONG size = last_size.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < kMaxAttempts; attempt++) {
    size = (size + 7u) & ~7u;
    buffer->reset(new (std::nothrow) uint64_t[size / 8]);
    if (!*buffer) return false;
    ULONG needed = 0;
    const LONG status = query(kSystemProcessInformation, buffer->get(), size, &needed);
    if (status >= 0) {  // NT_SUCCESS
      *used = needed <= size ? needed : size;
      last_size.store(size, std::memory_order_relaxed);
      return true;
    }
    if (status != kStatusInfoLengthMismatch) return false;
    const ULONG grown = needed > size ? needed : size * 2;
    if (grown > kMaxBufferBytes - kSlackBytes) return false;
    size = grown + kSlackBytes;
  }
  return false;
}

// The entry of `pid` in the list, or nullptr; every offset is bounds-checked.
const NtProcessEntry* FindProcess(const unsigned char* base, ULONG used, DWORD pid) {
  size_t offset = 0;
  while (offset + sizeof(NtProcessEntry) <= used) {
    const auto* entry = reinterpret_cast<const NtProcessEntry*>(base + offset);
    if (reinterpret_cast<ULONG_PTR>(entry->unique_process_id) == pid) return entry;
    if (entry->next_entry_offset == 0) break;
    offset += entry->next_entry_offset;
  }
  return nullptr;
}

// The name of thread `tid`, '' when it cannot be opened or the id now names a
// thread created at another time (reused after the snapshot).
std::string ThreadName(DWORD tid, uint64_t create_100ns) {
  ThreadHandle thread(tid);
  uint64_t create = 0, user = 0, kernel = 0;
  if (!thread.Times(&create, &user, &kernel) || create != create_100ns) return std::string();
  return thread.Description();
}

// 1 listed, 0 not in the list (ESRCH), -1 the call failed (use Toolhelp32).
int ListWithNtQuery(DWORD pid, std::vector<ThreadRecord>* out) {
  std::unique_ptr<uint64_t[]> buffer;
  ULONG used = 0;
  if (!QueryProcessList(&buffer, &used)) return -1;
  const auto* base = reinterpret_cast<const unsigned char*>(buffer.get());
  const NtProcessEntry* process = FindProcess(base, used, pid);
  if (!process) return 0;
  const size_t first = static_cast<size_t>(reinterpret_cast<const unsigned char*>(process) - base) + sizeof(NtProcessEntry);
  const size_t room = first <= used ? (used - first) / sizeof(NtThreadEntry) : 0;
  const size_t count = process->number_of_threads < room ? process->number_of_threads : room;
  const auto* threads = reinterpret_cast<const NtThreadEntry*>(base + first);
  out->reserve(count);
  for (size_t i = 0; i < count; i++) {
    const NtThreadEntry& t = threads[i];
    ThreadRecord record;
    record.id = static_cast<uint64_t>(reinterpret_cast<ULONG_PTR>(t.unique_thread));
    const uint64_t create = static_cast<uint64_t>(t.create_time.QuadPart);
    win32_threads::SetTimes(create, static_cast<uint64_t>(t.user_time.QuadPart),
                            static_cast<uint64_t>(t.kernel_time.QuadPart), &record);
    record.raw_state = RawState(t.thread_state, t.wait_reason);
    record.name = ThreadName(static_cast<DWORD>(record.id), create);
    out->push_back(std::move(record));
  }
  return 1;
}

}  // namespace

uint64_t CurrentThreadId() { return GetCurrentThreadId(); }

void KeepAddonLoaded() {
  // Pinned: FreeLibrary no longer unloads the module that holds this function.
  HMODULE self = nullptr;
  GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                     reinterpret_cast<LPCWSTR>(&KeepAddonLoaded), &self);
}

bool ListThreads(int64_t pid, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  const DWORD self = GetCurrentProcessId();
  if (pid < 0 || pid > 0xFFFFFFFFLL) {  // Windows pids are DWORDs
    win32_threads::SetNoSuchProcess(error, pid, "OpenProcess");
    return false;
  }
  const DWORD target = pid == 0 ? self : static_cast<DWORD>(pid);
  if (!ToolhelpForced()) {
    const int listed = ListWithNtQuery(target, out);
    if (listed > 0) return true;
    if (listed == 0) {
      win32_threads::SetNoSuchProcess(error, pid, "NtQuerySystemInformation");
      return false;
    }
    out->clear();
  }
  return win32_threads::ListWithToolhelp(target, out, error);
}

std::string CurrentThreadKey(uint64_t tid) {
  if (tid == 0 || tid > 0xFFFFFFFFULL) return std::string();
  ThreadHandle thread(static_cast<DWORD>(tid));
  // A thread of another process opens too: only this process's threads count.
  if (!thread.ok() || GetProcessIdOfThread(thread.get()) != GetCurrentProcessId()) return std::string();
  uint64_t create = 0, user = 0, kernel = 0;
  if (!thread.Times(&create, &user, &kernel)) return std::string();
  return win32_threads::KeyOf(tid, create);
}

}  // namespace threadleak
