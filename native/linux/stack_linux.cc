// stack_linux.cc — the native stack of one thread of this process, on Linux:
// the capture sequence.
//
// Strategy: a thread that can safely run the probe's signal handler (checked
// by stack_checks_linux.cc) is probed (stack_probe_linux.cc); one that cannot (it blocks the signal, is stopped,
// stays in uninterruptible sleep, would take the signal as its own, has too
// little stack left for a signal frame, or does not answer in time) gets an error plus
// the kernel's view: PC and SP from procfs and a scan of its stack
// (stack_procfs_linux.cc). The calling thread itself is unwound directly.
// Symbolization comes last, outside any handler (stack_symbols_linux.cc).
//
// Quirks handled here:
//  - Which signal, and why it is never given back: stack_signal_linux.cc.
//  - What is checked before a probe, and why: stack_checks_linux.cc.
//  - A probed thread blocked in nanosleep, poll, epoll_wait... returns EINTR
//    even with SA_RESTART.
//  - Thread ids are reused, and a capture takes milliseconds: the thread asked
//    for may exit and its id go to a new thread at any point. The capture
//    pins the thread it starts with (ThreadPin: an fd on its stat file fails
//    with ESRCH once that thread is gone, whoever has the id by then), checks
//    the caller's key against it, and keeps frames only if the pinned thread
//    is still alive after they were read: alive then means it had the id all
//    along, so the probe or the kernel view reached it and no other.
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "procfs_linux.h"
#include "stack_linux.h"
#include "threads.h"

namespace threadleak {
namespace {

using linux_stack::RawFrame;

#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__)
constexpr bool kCpuSupported = true;  // RegistersFrom and the scan's call check know it
#else
constexpr bool kCpuSupported = false;
#endif
constexpr int64_t kRunningRetryNs = 10 * 1000 * 1000;  // how long the kernel view waits for a running thread
constexpr int64_t kUninterruptibleWaitNs = 50 * 1000 * 1000;  // how long a probe waits for a thread in D

pid_t Gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// The calling thread: unwind here, then drop this addon's own frames.
void CaptureSelf(StackResult* result) {
  // The first frame only tells which module is this addon. Symbolized
  // together: dladdr is slow in big executables (a linear walk of node's
  // ~100k dynamic symbols), and Symbolize caches what it finds.
  std::vector<RawFrame> raw(1);
  raw[0].address = reinterpret_cast<uintptr_t>(&linux_stack::UnwindHere);
  raw[0].exact = true;
  linux_stack::UnwindHere(&raw);
  linux_stack::Symbolize(raw, &result->frames);
  const std::string own = result->frames[0].module;
  size_t first = 1;
  while (first < result->frames.size() && !own.empty() && result->frames[first].module == own) first++;
  result->frames.erase(result->frames.begin(), result->frames.begin() + first);
}

// The thread that has an id when the capture begins (see the header comment).
class ThreadPin {
 public:
  explicit ThreadPin(pid_t tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
    fd_ = open(path, O_RDONLY | O_CLOEXEC);
    open_errno_ = fd_ < 0 ? errno : 0;
  }
  ~ThreadPin() {
    if (fd_ >= 0) close(fd_);
  }
  ThreadPin(const ThreadPin&) = delete;
  ThreadPin& operator=(const ThreadPin&) = delete;

  int open_errno() const { return open_errno_; }
  // True while the pinned thread lives (a zombie still reads).
  bool Alive() const {
    char line[512];
    return fd_ >= 0 && procfs::PreadSmallFile(fd_, line, sizeof line) > 0;
  }

 private:
  int fd_ = -1;
  int open_errno_ = 0;
};

void SetExited(StackResult* result, const char* detail) {
  result->error = "exited";
  result->detail = detail;
}

}  // namespace

void CaptureStack(uint64_t tid64, double timeout_ms, const std::string& key, StackResult* result) {
  *result = StackResult();
  const int64_t start = linux_stack::NowNs();
  if (tid64 == 0 || tid64 > static_cast<uint64_t>(INT_MAX)) {
    result->error = "not-found";
    return;
  }
  const pid_t tid = static_cast<pid_t>(tid64);
  if (!kCpuSupported) {
    result->error = "unsupported";
    result->detail = "no stack probe for this CPU architecture yet";
    return;
  }
  if (tid == Gettid()) {
    CaptureSelf(result);
    return;
  }
  ThreadPin pin(tid);
  if (int e = pin.open_errno()) {
    const bool gone = e == ENOENT || e == ESRCH;
    result->error = gone ? (key.empty() ? "not-found" : "exited") : "os-error";
    if (!gone) result->detail = std::string("cannot open its stat: ") + strerror(e);
    return;
  }
  if (!key.empty() && CurrentThreadKey(tid64) != key) {
    SetExited(result, "its id now names another thread");
    return;
  }
  linux_stack::ThreadStatus status;
  if (int e = linux_stack::ReadThreadStatus(tid, &status)) {
    result->error = e == ENOENT || e == ESRCH ? "not-found" : "os-error";
    if (result->error == "os-error") result->detail = std::string("cannot read its status: ") + strerror(e);
    return;
  }
  if (status.state == 'Z' || status.state == 'X') {
    result->error = "exited";
    return;
  }
  const double capped = timeout_ms > 0 ? (timeout_ms < 1e7 ? timeout_ms : 1e7) : 0;
  const int64_t deadline = start + static_cast<int64_t>(capped * 1e6);
  std::vector<RawFrame> raw;
  bool probed = false;
  if (capped == 0) {
    result->error = "not-probed";
  } else {
    const int slot = linux_stack::ClaimSlot(tid, deadline);
    if (slot < 0) {
      result->error = "busy";
    } else {
      std::string problem;
      result->signal = linux_stack::ProbeSignal(&problem);
      if (result->signal == 0) {
        result->error = "no-signal";
        result->detail = problem;
      } else if (linux_stack::MayProbe(tid, result->signal, deadline, &status, result)) {
        const bool check_room = tid != getpid() && linux_stack::OwnMemoryReadable();
        // A thread in uninterruptible sleep takes the probe when it leaves
        // it, usually in a moment (a page fault, a vfork, another capture's
        // procfs read holding its memory map lock). Not waited for longer.
        const bool uninterruptible = status.state == 'D';
        const int64_t probe_deadline =
            uninterruptible ? std::min(deadline, linux_stack::NowNs() + kUninterruptibleWaitNs) : deadline;
        // The checks took a while: a thread gone since is not probed (its id
        // may be another thread's by now).
        probed = pin.Alive() && linux_stack::Probe(slot, tid, check_room, probe_deadline, &raw, result);
        if (!probed && result->error.empty()) SetExited(result, "");
        if (!probed && uninterruptible && result->error == "timeout" && result->detail.empty()) {
          result->error = "uninterruptible";
        }
        if (!probed && result->detail == linux_stack::kTookProbe) linux_stack::RememberSignalTaker(tid);
      }
      linux_stack::ReleaseSlot(slot);
    }
  }
  if (!probed && result->error != "exited") {
    // A thread that runs now may block in a moment: look again for a while,
    // within the timeout (not at all for timeout 0) and at most kRunningRetryNs.
    const int64_t retry_until = std::min(deadline, linux_stack::NowNs() + kRunningRetryNs);
    linux_stack::AppendKernelView(tid, retry_until, &raw);
  }
  // Frames read after the pinned thread exited may be another thread's.
  if (!pin.Alive()) {
    raw.clear();
    if (result->error != "exited") SetExited(result, "");
  }
  linux_stack::Symbolize(raw, &result->frames);
}

}  // namespace threadleak
