// threads_linux.cc — thread enumeration through procfs.
//
// Strategy: open /proc/<pid>/task once as a directory fd, walk it with
// getdents64, and for each tid openat(dirfd, "<tid>/stat") and read it in a
// single read(). The kernel formats the whole line per read, so one read per
// thread is both the cheapest and the only consistent view. Fields used
// (1-based, man 5 proc): 2 comm, 3 state, 14 utime, 15 stime, 22 starttime.
//
// Quirks handled here:
//  - comm may contain ')' and spaces, so the name runs from the first '(' to
//    the LAST ')' of the line.
//  - A thread can exit between getdents and openat (ENOENT) or between
//    openat and read (ESRCH, or a read of 0 bytes): it is skipped.
//  - /proc/<tid> exists for every thread id, not only for process leaders,
//    so a pid given by the caller is checked to be a thread-group leader.
//  - Listing this process keeps one fd open on each live thread's stat
//    between calls (StatFdCache): a pread at offset 0 makes the kernel format
//    the line afresh without openat's path walk and the close, about a third
//    of the cost per thread. An fd pins its thread: once that thread exits,
//    pread fails with ESRCH and never reads a newer thread that reused the
//    tid, so such an fd is closed and the tid opened afresh.
//  - The cached fd numbers are the process's: a library with a double close()
//    may close one, and its next open() then gets that number. So a cached fd
//    is trusted only while it reads "<tid> (" (a stat line of that thread); an
//    fd that reads anything else, or fails other than with ESRCH, is dropped
//    from the cache without close() unless it is still on procfs: it may be
//    someone else's file now.
//  - The cache must not starve the process of fds: it holds at most an eighth
//    of the soft limit (4096 at most), and nothing at all while the process
//    uses half of its limit or more (an fd number is the lowest free one, so
//    an open returning n means the n fds below it are in use: checked on the
//    task directory's fd at each call and on each new stat fd) or after EMFILE.
//  - starttime is in clock ticks (10 ms here) since boot, so start times are
//    exact to a tick and (tid, starttime) is an exact identity.
#include "threads.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace threadleak {
namespace {

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  explicit FdCloser(int f) : fd(f) {}
  ~FdCloser() { if (fd >= 0) close(fd); }
};

const char* ErrnoCode(int e) {
  switch (e) {
    case ESRCH: return "ESRCH";
    case ENOENT: return "ESRCH";  // no /proc/<pid>: the process does not exist
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    default: return "EIO";
  }
}

void SetErrno(OsError* error, int e, const char* syscall, const std::string& path) {
  error->code = ErrnoCode(e);
  error->errno_value = e == ENOENT ? ESRCH : e;
  error->syscall = syscall;
  error->message = std::string(syscall) + " " + path + ": " + strerror(e);
}

// Reads a whole small file in one read(); returns bytes read or -1 (errno set).
ssize_t ReadOnce(int dirfd, const char* rel, char* buf, size_t cap) {
  int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  FdCloser closer(fd);
  ssize_t n;
  do { n = read(fd, buf, cap - 1); } while (n < 0 && errno == EINTR);
  if (n >= 0) buf[n] = '\0';
  return n;
}

long ClockTicksPerSecond() {
  static const long ticks = [] {
    long t = sysconf(_SC_CLK_TCK);
    return t > 0 ? t : 100;
  }();
  return ticks;
}

// Boot time in ms since the epoch. starttime counts ticks of the boot-time
// clock, so boot time is CLOCK_REALTIME - CLOCK_BOOTTIME, read once (ms
// precision; btime in /proc/stat has only whole seconds). 0 when unknown.
double BootTimeMs() {
  static const double boot = [] {
    struct timespec real, boot_clock;
    if (clock_gettime(CLOCK_REALTIME, &real) != 0 || clock_gettime(CLOCK_BOOTTIME, &boot_clock) != 0) return 0.0;
    return (static_cast<double>(real.tv_sec) - static_cast<double>(boot_clock.tv_sec)) * 1000.0 +
           (static_cast<double>(real.tv_nsec) - static_cast<double>(boot_clock.tv_nsec)) / 1e6;
  }();
  return boot;
}

// Parses one stat line into *record. Returns false when the line is malformed.
bool ParseStat(const char* line, ThreadRecord* record) {
  const char* open = strchr(line, '(');
  const char* close = strrchr(line, ')');
  if (!open || !close || close < open || close[1] != ' ') return false;
  record->name.assign(open + 1, close - open - 1);
  const char* p = close + 2;  // field 3 starts here
  if (!*p) return false;
  record->raw_state.assign(p, 1);
  // Walk fields 3..22, separated by single spaces.
  unsigned long long utime = 0, stime = 0, starttime = 0;
  int field = 3;
  while (*p && field < 22) {
    const char* space = strchr(p, ' ');
    if (!space) return false;
    p = space + 1;
    ++field;
    if (field == 14) utime = strtoull(p, nullptr, 10);
    else if (field == 15) stime = strtoull(p, nullptr, 10);
    else if (field == 22) starttime = strtoull(p, nullptr, 10);
  }
  if (field != 22) return false;
  const double ms_per_tick = 1000.0 / static_cast<double>(ClockTicksPerSecond());
  record->user_cpu_ms = static_cast<double>(utime) * ms_per_tick;
  record->system_cpu_ms = static_cast<double>(stime) * ms_per_tick;
  record->identity = starttime;
  const double boot_ms = BootTimeMs();
  if (boot_ms > 0) {
    record->has_start_time = true;
    record->start_time_ms = boot_ms + static_cast<double>(starttime) * ms_per_tick;
  }
  return true;
}

// True when `pid` is a thread-group leader (a process), not another thread's id.
bool IsProcessLeader(int64_t pid, OsError* error) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%lld/status", static_cast<long long>(pid));
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    SetErrno(error, errno, "open", path);
    return false;
  }
  FdCloser closer(fd);
  ssize_t n;
  do { n = read(fd, buf, sizeof buf - 1); } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    SetErrno(error, n < 0 ? errno : ESRCH, "read", path);
    return false;
  }
  buf[n] = '\0';
  const char* tgid = strstr(buf, "\nTgid:");
  if (tgid && strtoll(tgid + 6, nullptr, 10) == pid) return true;
  SetErrno(error, ESRCH, "open", path);
  error->message = "pid " + std::to_string(pid) + " is a thread of another process, not a process";
  return false;
}

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// The cached stat fds of this process's threads, tid -> fd. Never destroyed
// (a Worker may list threads while the process exits); guarded by `mutex`
// because Workers share this library.
struct StatFdCache {
  std::mutex mutex;
  std::unordered_map<uint64_t, int> fds;
};

StatFdCache& Cache() {
  static StatFdCache* cache = new StatFdCache;
  return *cache;
}

// How many fds the cache may hold, and the fd number from which it holds
// none (see the header comment). `off` once the process ran out of fds or
// came close during this walk.
struct CacheBudget {
  size_t limit = 0;
  long high_water = 0;
  bool off = false;
};

CacheBudget Budget() {
  CacheBudget budget;
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    budget.limit = 4096;
    budget.high_water = 1L << 30;
  } else {
    budget.limit = static_cast<size_t>(limit.rlim_cur / 8 < 4096 ? limit.rlim_cur / 8 : 4096);
    budget.high_water = static_cast<long>(limit.rlim_cur / 2);
  }
  return budget;
}

// True when `line` is the stat line of thread `tid`: "<tid> (...".
bool IsStatOf(const char* line, uint64_t tid) {
  char* end = nullptr;
  return strtoull(line, &end, 10) == tid && end != line && end[0] == ' ' && end[1] == '(';
}

constexpr long kProcSuperMagic = 0x9fa0;  // statfs f_type of procfs

bool OnProcfs(int fd) {
  struct statfs fs;
  return fstatfs(fd, &fs) == 0 && static_cast<long>(fs.f_type) == kProcSuperMagic;
}

ssize_t PreadOnce(int fd, char* buf, size_t cap) {
  ssize_t n;
  do { n = pread(fd, buf, cap - 1, 0); } while (n < 0 && errno == EINTR);
  if (n >= 0) buf[n] = '\0';
  return n;
}

void CloseAll(std::unordered_map<uint64_t, int>* fds) {
  for (auto& entry : *fds) close(entry.second);
  fds->clear();
}

// Reads the stat of `tid` of this process into buf, through the fd cache:
// `previous` holds the fds of the last call (an entry is taken out when used),
// `next` receives the fds to keep. Returns bytes read, or -1 with errno set.
ssize_t ReadCached(int dirfd, const char* rel, uint64_t tid, char* buf, size_t cap,
                   std::unordered_map<uint64_t, int>* previous, std::unordered_map<uint64_t, int>* next,
                   CacheBudget* budget) {
  auto it = previous->find(tid);
  if (it != previous->end()) {
    const int fd = it->second;
    previous->erase(it);
    const ssize_t n = PreadOnce(fd, buf, cap);
    if (n > 0 && IsStatOf(buf, tid)) {
      next->emplace(tid, fd);
      return n;
    }
    // ESRCH: that thread exited; a thread listed under its tid now is a new
    // one. Anything else: the number may be someone else's file now.
    if ((n < 0 && errno == ESRCH) || (n <= 0 && OnProcfs(fd))) close(fd);
  }
  if (budget->off || next->size() >= budget->limit) return ReadOnce(dirfd, rel, buf, cap);
  const int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != EMFILE && errno != ENFILE) return -1;
    // Out of descriptors: give back every cached one, then read uncached.
    budget->off = true;
    CloseAll(previous);
    CloseAll(next);
    return ReadOnce(dirfd, rel, buf, cap);
  }
  const ssize_t n = PreadOnce(fd, buf, cap);
  const int saved = errno;
  if (n > 0 && fd < budget->high_water) {
    next->emplace(tid, fd);
    return n;
  }
  close(fd);
  if (fd >= budget->high_water) {
    // The process uses half of its fds or more: keep none of them.
    budget->off = true;
    CloseAll(previous);
    CloseAll(next);
  }
  errno = saved;
  return n;
}

}  // namespace

const char* BackendName() { return "linux"; }

uint64_t CurrentThreadId() { return static_cast<uint64_t>(syscall(SYS_gettid)); }

bool ListThreads(int64_t pid, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  char path[64];
  if (pid == 0) {
    snprintf(path, sizeof path, "/proc/self/task");
  } else {
    if (pid != getpid() && !IsProcessLeader(pid, error)) return false;
    snprintf(path, sizeof path, "/proc/%lld/task", static_cast<long long>(pid));
  }
  int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    SetErrno(error, errno, "open", path);
    return false;
  }
  FdCloser closer(dirfd);

  // Listing this process goes through the fd cache, held for the whole walk.
  const bool cached = pid == 0;
  std::unique_lock<std::mutex> cache_lock;
  std::unordered_map<uint64_t, int> previous, next;
  CacheBudget budget = cached ? Budget() : CacheBudget();
  if (cached) {
    cache_lock = std::unique_lock<std::mutex>(Cache().mutex);
    previous.swap(Cache().fds);
    next.reserve(previous.size() + 16);
    // dirfd got the lowest free number: every fd below it is in use.
    if (dirfd >= budget.high_water) {
      budget.off = true;
      CloseAll(&previous);
    }
  }
  struct Finish {  // on every return: close the fds of threads that are gone, keep the rest
    bool cached;
    std::unordered_map<uint64_t, int>& previous;
    std::unordered_map<uint64_t, int>& next;
    ~Finish() {
      CloseAll(&previous);
      if (cached) Cache().fds.swap(next);
    }
  } finish{cached, previous, next};

  alignas(8) char dents[32768];
  char rel[40];
  char stat[1024];  // a stat line is ~300 bytes; comm is at most 15 bytes
  for (;;) {
    long nread = syscall(SYS_getdents64, dirfd, dents, sizeof dents);
    if (nread < 0) {
      if (errno == EINTR) continue;
      // The process exited while we walked it.
      SetErrno(error, errno == ENOENT ? ESRCH : errno, "getdents64", path);
      return false;
    }
    if (nread == 0) break;
    for (long off = 0; off < nread;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(dents + off);
      off += d->d_reclen;
      const char* name = d->d_name;
      if (name[0] < '0' || name[0] > '9') continue;  // ".", ".."
      const uint64_t tid = strtoull(name, nullptr, 10);
      snprintf(rel, sizeof rel, "%s/stat", name);
      const ssize_t n = cached ? ReadCached(dirfd, rel, tid, stat, sizeof stat, &previous, &next, &budget)
                               : ReadOnce(dirfd, rel, stat, sizeof stat);
      if (n <= 0) {
        // ENOENT / ESRCH / empty read: the thread exited mid-walk. Skip it.
        if (n == 0 || errno == ENOENT || errno == ESRCH) continue;
        SetErrno(error, errno, "read", std::string(path) + "/" + rel);
        return false;
      }
      ThreadRecord record;
      record.id = tid;
      if (!ParseStat(stat, &record)) continue;
      out->push_back(std::move(record));
    }
  }
  if (out->empty() && pid != 0) {
    // Every thread exited during the walk: the process is gone.
    SetErrno(error, ESRCH, "getdents64", path);
    return false;
  }
  return true;
}

}  // namespace threadleak
