// threads_darwin.h — what the parts of the macOS backend share: the threads
// of this task as Mach send rights, their ids, and kern_return_t text.
//
//   threads_darwin.cc        listing threads (this task: Mach; other pids: libproc)
//   stack_darwin.cc          the capture sequence: find, suspend, copy, resume
//   stack_walk_darwin.cc     walking the copy, the calling thread, naming frames
#pragma once

#include <mach/mach.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace threadleak {
namespace darwin {

// The threads of this task, as task_threads(mach_task_self()) gives them: one
// send right per thread in an array the kernel allocated in this task. On
// destruction every right still held is released (mach_port_deallocate) and
// the array is vm_deallocate'd, so that no path leaks a port name (a task has
// a bounded port name space).
class TaskThreads {
 public:
  TaskThreads();
  ~TaskThreads();
  TaskThreads(const TaskThreads&) = delete;
  TaskThreads& operator=(const TaskThreads&) = delete;

  kern_return_t status() const { return status_; }  // of task_threads
  size_t size() const { return count_; }
  thread_act_t at(size_t i) const { return list_[i]; }
  // Moves right `i` out of the list: the caller releases it from now on.
  thread_act_t Take(size_t i);

 private:
  thread_act_array_t list_ = nullptr;
  mach_msg_type_number_t count_ = 0;
  kern_return_t status_;
};

// One send right to a thread, released on destruction.
class ThreadPort {
 public:
  ThreadPort() = default;
  ~ThreadPort() { Reset(MACH_PORT_NULL); }
  ThreadPort(const ThreadPort&) = delete;
  ThreadPort& operator=(const ThreadPort&) = delete;
  thread_act_t get() const { return port_; }
  void Reset(thread_act_t port);

 private:
  thread_act_t port_ = MACH_PORT_NULL;
};

// The system-wide 64-bit id of `thread` (THREAD_IDENTIFIER_INFO), the one
// pthread_threadid_np and proc_pidinfo use. The kern_return_t of thread_info.
kern_return_t ThreadIdOf(thread_act_t thread, uint64_t* id);

// True for what a Mach call on a thread answers once that thread is gone:
// KERN_TERMINATED (it ended, its object still referenced), MACH_SEND_INVALID_DEST
// (the right became a dead name), KERN_INVALID_ARGUMENT (the name no longer
// translates to a thread).
bool IsThreadGone(kern_return_t kr);

// Finds thread `tid` of this task: *port then holds a send right to it, or
// MACH_PORT_NULL when no thread of this task has that id. Every other right
// is released. Returns the kern_return_t of task_threads, or, when no thread
// matched, of a thread_info that failed other than for a thread that is
// gone (that thread might have been the one); *call (when given) names the
// call that failed.
kern_return_t FindThread(uint64_t tid, ThreadPort* port, const char** call = nullptr);

// "<call> failed: <mach_error_string> (kern_return_t 0x...)".
std::string KernMessage(const char* call, kern_return_t kr);

// The key of thread `id`: ids are never reused, so the id alone.
inline std::string KeyOf(uint64_t id) { return std::to_string(id); }

}  // namespace darwin
}  // namespace threadleak
