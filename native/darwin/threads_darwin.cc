// threads_darwin.cc — thread enumeration on macOS.
//
// Strategy: this process is read through Mach: task_threads(mach_task_self())
// gives a send right to each thread, and thread_info answers
// THREAD_IDENTIFIER_INFO (the 64-bit thread_id, system-wide and never reused,
// which is also the key) and THREAD_EXTENDED_INFO (name, run state, user and
// system time). Another process is read through libproc, never through
// task_for_pid (which can block on the taskgated daemon on a headless
// machine, and is refused for most processes anyway):
// proc_pidinfo(PROC_PIDLISTTHREADIDS) lists its thread ids, and
// proc_pidinfo(PROC_PIDTHREADID64INFO, id) reads each one. Both views give the
// same thread_id, name and times: the kernel fills THREAD_EXTENDED_INFO and
// proc_threadinfo from one routine (mach/thread_info.h says so).
//
// Quirks handled here:
//  - Every send right task_threads returns is released and its array
//    vm_deallocate'd on every path (TaskThreads); a leaked right would exhaust
//    the task's port names in a long-lived process that lists often.
//  - A thread can end between task_threads and thread_info: the call then
//    answers KERN_TERMINATED, MACH_SEND_INVALID_DEST or KERN_INVALID_ARGUMENT,
//    and the thread is skipped. The same for PROC_PIDTHREADID64INFO, which
//    answers ESRCH for an id that is gone.
//  - PROC_PIDLISTTHREADIDS (28) is not in the public headers (sys/proc_info.h
//    has PROC_PIDLISTTHREADS, 6, which lists thread handles, not ids); it is
//    defined here by hand. The kernel fills at most the buffer's room and
//    returns the bytes written: a full buffer may mean more threads, so it is
//    grown and the call repeated.
//  - libproc's proc_pidinfo returns 0 both for an error (with errno) and for
//    0 bytes: errno is cleared before each call to tell them apart.
//  - No start time: Mach and libproc tell none for a thread (not
//    THREAD_EXTENDED_INFO, not proc_threadinfo), so has_start_time stays false
//    rather than being made up.
//  - Times come in nanoseconds (microsecond resolution) in both views.
//  - binding.gyp sets MACOSX_DEPLOYMENT_TARGET in target_conditions: the
//    node-addon-api dependency's settings (except.gypi, 10.7) would otherwise
//    override a target-level value.
#include "threads_darwin.h"

#include <dlfcn.h>
#include <errno.h>
#include <libproc.h>
#include <mach/mach_error.h>
#include <pthread.h>
#include <signal.h>
#include <sys/proc_info.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>

#include "threads.h"

namespace threadleak {
namespace darwin {

TaskThreads::TaskThreads() : status_(task_threads(mach_task_self(), &list_, &count_)) {
  if (status_ != KERN_SUCCESS) {
    list_ = nullptr;
    count_ = 0;
  }
}

TaskThreads::~TaskThreads() {
  if (list_ == nullptr) return;
  for (mach_msg_type_number_t i = 0; i < count_; i++) {
    if (list_[i] != MACH_PORT_NULL) mach_port_deallocate(mach_task_self(), list_[i]);
  }
  vm_deallocate(mach_task_self(), reinterpret_cast<vm_address_t>(list_), count_ * sizeof(thread_act_t));
}

thread_act_t TaskThreads::Take(size_t i) {
  const thread_act_t port = list_[i];
  list_[i] = MACH_PORT_NULL;
  return port;
}

void ThreadPort::Reset(thread_act_t port) {
  if (port_ != MACH_PORT_NULL) mach_port_deallocate(mach_task_self(), port_);
  port_ = port;
}

kern_return_t ThreadIdOf(thread_act_t thread, uint64_t* id) {
  thread_identifier_info_data_t info;
  mach_msg_type_number_t count = THREAD_IDENTIFIER_INFO_COUNT;
  const kern_return_t kr = thread_info(thread, THREAD_IDENTIFIER_INFO, reinterpret_cast<thread_info_t>(&info), &count);
  if (kr == KERN_SUCCESS) *id = info.thread_id;
  return kr;
}

bool IsThreadGone(kern_return_t kr) {
  return kr == KERN_TERMINATED || kr == MACH_SEND_INVALID_DEST || kr == KERN_INVALID_ARGUMENT;
}

kern_return_t FindThread(uint64_t tid, ThreadPort* port, const char** call) {
  port->Reset(MACH_PORT_NULL);
  TaskThreads threads;
  if (call != nullptr) *call = "task_threads";
  if (threads.status() != KERN_SUCCESS) return threads.status();
  if (call != nullptr) *call = "thread_info(THREAD_IDENTIFIER_INFO)";
  kern_return_t failure = KERN_SUCCESS;  // of a thread that could not be asked, when none matched
  for (size_t i = 0; i < threads.size(); i++) {
    uint64_t id = 0;
    const kern_return_t kr = ThreadIdOf(threads.at(i), &id);
    if (kr == KERN_SUCCESS && id == tid) {
      port->Reset(threads.Take(i));
      return KERN_SUCCESS;
    }
    if (kr != KERN_SUCCESS && !IsThreadGone(kr) && failure == KERN_SUCCESS) failure = kr;
  }
  return failure;  // KERN_SUCCESS: no such thread, and *port stays MACH_PORT_NULL
}

std::string KernMessage(const char* call, kern_return_t kr) {
  char text[200];
  snprintf(text, sizeof text, "%s failed: %s (kern_return_t 0x%x)", call, mach_error_string(kr),
           static_cast<unsigned>(kr));
  return text;
}

}  // namespace darwin

namespace {

// Not in the public headers (see the header comment): xnu's
// bsd/sys/proc_info_private.h.
constexpr int kProcPidListThreadIds = 28;
constexpr size_t kFirstIdCapacity = 512;
constexpr size_t kMaxIdCapacity = size_t{1} << 20;  // far above any thread limit macOS allows

std::string ErrnoName(int e) {
  switch (e) {
#define THREADLEAK_ERRNO(name) case name: return #name;
    THREADLEAK_ERRNO(EPERM) THREADLEAK_ERRNO(ESRCH) THREADLEAK_ERRNO(EACCES) THREADLEAK_ERRNO(EINVAL)
    THREADLEAK_ERRNO(ENOMEM) THREADLEAK_ERRNO(EFAULT) THREADLEAK_ERRNO(EOVERFLOW) THREADLEAK_ERRNO(ENOTSUP)
    THREADLEAK_ERRNO(EAGAIN) THREADLEAK_ERRNO(EIO) THREADLEAK_ERRNO(ENOSYS)
#undef THREADLEAK_ERRNO
    default: return "E" + std::to_string(e);
  }
}

void SetErrno(OsError* error, int e, const char* syscall, const std::string& message) {
  error->code = ErrnoName(e);
  error->errno_value = e;
  error->syscall = syscall;
  error->message = message + ": " + strerror(e);
}

void SetKernError(OsError* error, const char* call, kern_return_t kr) {
  error->code = "UNKNOWN";  // a kern_return_t is no errno
  error->errno_value = kr;
  error->syscall = call;
  error->message = darwin::KernMessage(call, kr);
}

void SetNoSuchProcess(OsError* error, int64_t pid, const char* syscall, const char* why) {
  error->code = "ESRCH";
  error->errno_value = ESRCH;
  error->syscall = syscall;
  error->message = "pid " + std::to_string(pid) + why;
}

const char* RunStateName(int32_t state, char* number, size_t size) {
  switch (state) {
    case TH_STATE_RUNNING: return "TH_STATE_RUNNING";
    case TH_STATE_STOPPED: return "TH_STATE_STOPPED";
    case TH_STATE_WAITING: return "TH_STATE_WAITING";
    case TH_STATE_UNINTERRUPTIBLE: return "TH_STATE_UNINTERRUPTIBLE";
    case TH_STATE_HALTED: return "TH_STATE_HALTED";
    default:
      snprintf(number, size, "%d", static_cast<int>(state));  // a state newer than these headers
      return number;
  }
}

// thread_extended_info and proc_threadinfo have the same fields (see the
// header comment): one filler for both.
template <typename Info>
void FillRecord(uint64_t id, const Info& info, ThreadRecord* record) {
  record->id = id;
  record->key = darwin::KeyOf(id);
  record->name.assign(info.pth_name, strnlen(info.pth_name, sizeof info.pth_name));
  char number[16];
  record->raw_state = RunStateName(info.pth_run_state, number, sizeof number);
  record->user_cpu_ms = static_cast<double>(info.pth_user_time) / 1e6;
  record->system_cpu_ms = static_cast<double>(info.pth_system_time) / 1e6;
}

bool ListOwnThreads(std::vector<ThreadRecord>* out, OsError* error) {
  darwin::TaskThreads threads;
  if (threads.status() != KERN_SUCCESS) {
    SetKernError(error, "task_threads", threads.status());
    return false;
  }
  out->reserve(threads.size());
  for (size_t i = 0; i < threads.size(); i++) {
    const thread_act_t thread = threads.at(i);
    uint64_t id = 0;
    kern_return_t kr = darwin::ThreadIdOf(thread, &id);
    const char* call = "thread_info(THREAD_IDENTIFIER_INFO)";
    if (kr == KERN_SUCCESS) {
      thread_extended_info_data_t info;
      mach_msg_type_number_t count = THREAD_EXTENDED_INFO_COUNT;
      kr = thread_info(thread, THREAD_EXTENDED_INFO, reinterpret_cast<thread_info_t>(&info), &count);
      call = "thread_info(THREAD_EXTENDED_INFO)";
      if (kr == KERN_SUCCESS) {
        ThreadRecord record;
        FillRecord(id, info, &record);
        out->push_back(std::move(record));
        continue;
      }
    }
    if (darwin::IsThreadGone(kr)) continue;  // it ended after task_threads
    SetKernError(error, call, kr);
    return false;
  }
  return true;
}

// The thread ids of process `pid` (not this one). False with *error filled.
bool ListThreadIds(pid_t pid, std::vector<uint64_t>* ids, OsError* error) {
  const char* call = "proc_pidinfo(PROC_PIDLISTTHREADIDS)";
  for (size_t capacity = kFirstIdCapacity; capacity <= kMaxIdCapacity; capacity *= 2) {
    ids->assign(capacity, 0);
    errno = 0;
    const int bytes = proc_pidinfo(pid, kProcPidListThreadIds, 0, ids->data(), static_cast<int>(capacity * sizeof(uint64_t)));
    const int e = errno;
    if (bytes <= 0) {
      if (e != 0) {
        SetErrno(error, e, call, "pid " + std::to_string(pid));
      } else if (kill(pid, 0) != 0 && errno == ESRCH) {
        SetNoSuchProcess(error, pid, call, ": no such process");
      } else {
        SetNoSuchProcess(error, pid, call, " lists no threads (it is exiting)");
      }
      return false;
    }
    const size_t listed = static_cast<size_t>(bytes) / sizeof(uint64_t);
    if (listed < capacity) {  // room to spare: the list is whole
      ids->resize(listed);
      return true;
    }
  }
  error->code = "EOVERFLOW";
  error->errno_value = EOVERFLOW;
  error->syscall = call;
  error->message = "pid " + std::to_string(pid) + " has more than " + std::to_string(kMaxIdCapacity) + " threads";
  return false;
}

bool ListOtherThreads(pid_t pid, std::vector<ThreadRecord>* out, OsError* error) {
  std::vector<uint64_t> ids;
  if (!ListThreadIds(pid, &ids, error)) return false;
  out->reserve(ids.size());
  for (const uint64_t id : ids) {
    struct proc_threadinfo info;
    errno = 0;
    const int bytes = proc_pidinfo(pid, PROC_PIDTHREADID64INFO, id, &info, sizeof info);
    const int e = errno;
    if (bytes == static_cast<int>(sizeof info)) {
      ThreadRecord record;
      FillRecord(id, info, &record);
      out->push_back(std::move(record));
    } else if (bytes <= 0 && (e == ESRCH || e == 0)) {
      continue;  // the thread ended after the list was read
    } else {
      SetErrno(error, e != 0 ? e : EIO, "proc_pidinfo(PROC_PIDTHREADID64INFO)",
               "pid " + std::to_string(pid) + " thread " + std::to_string(id));
      return false;
    }
  }
  if (out->empty()) {  // every thread ended while it was read: the process is gone
    SetNoSuchProcess(error, pid, "proc_pidinfo(PROC_PIDTHREADID64INFO)", ": no such process");
    return false;
  }
  return true;
}

// Adds one dyld reference to this image, never released. dyld unloads an
// image only when its references drop to 0, so Node's dlclose when the last
// Worker that loaded the addon ends no longer unloads it. RTLD_NOLOAD: only
// an image already loaded is referenced (this one, by the path dyld has for
// it). RTLD_NODELETE marks the image never-unload where dyld honours it on an
// already-loaded image (dyld 4, macOS 12+, returns early for RTLD_NOLOAD and
// only counts the reference; the reference alone suffices, and is the reason
// the handle is never closed). RTLD_LOCAL: when the image was loaded local,
// a dlopen without it would make its symbols global.
bool PinThisImage() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&KeepAddonLoaded), &info) == 0 || info.dli_fname == nullptr) return false;
  return dlopen(info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;
}

}  // namespace

uint64_t CurrentThreadId() {
  uint64_t id = 0;
  pthread_threadid_np(nullptr, &id);  // nullptr: the calling thread
  return id;
}

void KeepAddonLoaded() {
  // Once per process (the image stays, so this static does too); each Worker's
  // Init calls this again.
  static const bool pinned = PinThisImage();
  (void)pinned;
}

bool ListThreads(int64_t pid, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  if (pid == 0 || pid == getpid()) return ListOwnThreads(out, error);
  if (pid < 0 || pid > INT_MAX) {
    SetNoSuchProcess(error, pid, "proc_pidinfo(PROC_PIDLISTTHREADIDS)", ": no such process");
    return false;
  }
  return ListOtherThreads(static_cast<pid_t>(pid), out, error);
}

std::string CurrentThreadKey(uint64_t tid) {
  darwin::ThreadPort port;
  if (darwin::FindThread(tid, &port) != KERN_SUCCESS || port.get() == MACH_PORT_NULL) return std::string();
  return darwin::KeyOf(tid);
}

}  // namespace threadleak
