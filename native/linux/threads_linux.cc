// threads_linux.cc — thread enumeration through procfs.
//
// Strategy: open /proc/<pid>/task once as a directory fd, walk it with
// getdents64, and for each tid read "<tid>/stat" relative to it in a single
// read (procfs_linux.h). Listing this process goes through descriptors kept
// open between calls, which also give keys that survive tid reuse within one
// clock tick (stat_fd_cache_linux.cc).
//
// Quirks handled here:
//  - A thread can exit between getdents and openat (ENOENT) or between
//    openat and read (ESRCH, or a read of 0 bytes): it is skipped.
//  - /proc/<tid> exists for every thread id, not only for process leaders,
//    so a pid given by the caller is checked to be a thread-group leader.
#include "threads.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "procfs_linux.h"
#include "stat_fd_cache_linux.h"

namespace threadleak {
namespace {

// Closes a file descriptor this file opened, on scope exit.
struct FdCloser {
  int fd;
  explicit FdCloser(int f) : fd(f) {}
  ~FdCloser() { if (fd >= 0) close(fd); }
};

void SetErrno(OsError* error, int e, const char* syscall, const std::string& path) {
  if (e == ENOENT) e = ESRCH;  // no /proc/<pid>: the process does not exist
  error->code = procfs::ErrnoName(e);
  error->errno_value = e;
  error->syscall = syscall;
  error->message = std::string(syscall) + " " + path + ": " + strerror(e);
}

// True when `pid` is a thread-group leader (a process), not another thread's id.
bool IsProcessLeader(int64_t pid, OsError* error) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%lld/status", static_cast<long long>(pid));
  char buf[4096];
  const ssize_t n = procfs::ReadSmallFile(path, buf, sizeof buf);
  if (n <= 0) {
    SetErrno(error, n < 0 ? errno : ESRCH, n < 0 && errno != ESRCH ? "open" : "read", path);
    return false;
  }
  const char* tgid = strstr(buf, "\nTgid:");
  if (tgid && strtoll(tgid + 6, nullptr, 10) == pid) return true;
  SetErrno(error, ESRCH, "open", path);
  error->message = "pid " + std::to_string(pid) + " is a thread of another process, not a process";
  return false;
}

// Opens the task directory of `pid` (0: this process). -1 with *error filled.
int OpenTaskDirectory(int64_t pid, char* path, size_t path_size, OsError* error) {
  if (pid == 0) {
    snprintf(path, path_size, "/proc/self/task");
  } else {
    if (pid != getpid() && !IsProcessLeader(pid, error)) return -1;
    snprintf(path, path_size, "/proc/%lld/task", static_cast<long long>(pid));
  }
  const int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) SetErrno(error, errno, "open", path);
  return dirfd;
}

// Reads one thread without the cache (another process). 1, 0 when gone, -1.
int ReadUncached(int dirfd, uint64_t tid, const char* rel, ThreadRecord* record) {
  char line[1024];
  const ssize_t n = procfs::ReadSmallFile(dirfd, rel, line, sizeof line);
  if (n < 0) return errno == ENOENT || errno == ESRCH ? 0 : -1;
  procfs::StatFields fields;
  if (n == 0 || !procfs::ParseStatLine(line, &fields)) return 0;
  linux_threads::FillRecord(tid, fields, 0, record);
  return 1;
}

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// Walks the task directory and reads every thread in it, through `walk`
// when there is one. False with *error filled.
bool ReadTaskDirectory(int dirfd, const char* path, linux_threads::SelfWalk* walk,
                       std::vector<ThreadRecord>* out, OsError* error) {
  alignas(8) char dents[32768];
  char rel[40];
  for (;;) {
    const long nread = syscall(SYS_getdents64, dirfd, dents, sizeof dents);
    if (nread < 0) {
      if (errno == EINTR) continue;
      SetErrno(error, errno, "getdents64", path);  // ENOENT: the process exited while we walked it
      return false;
    }
    if (nread == 0) return true;
    for (long off = 0; off < nread;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(dents + off);
      off += d->d_reclen;
      const char* name = d->d_name;
      if (name[0] < '0' || name[0] > '9') continue;  // ".", ".."
      const uint64_t tid = strtoull(name, nullptr, 10);
      snprintf(rel, sizeof rel, "%s/stat", name);
      ThreadRecord record;
      const int got = walk ? walk->Read(tid, rel, &record) : ReadUncached(dirfd, tid, rel, &record);
      if (got < 0) {
        SetErrno(error, errno, "read", std::string(path) + "/" + rel);
        return false;
      }
      if (got > 0) out->push_back(std::move(record));  // 0: it exited mid-walk
    }
  }
}

}  // namespace

uint64_t CurrentThreadId() { return static_cast<uint64_t>(syscall(SYS_gettid)); }

void KeepAddonLoaded() {}  // linked with -z nodelete (binding.gyp)

bool ListThreads(int64_t pid, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  char path[64];
  const int dirfd = OpenTaskDirectory(pid, path, sizeof path, error);
  if (dirfd < 0) return false;
  FdCloser closer(dirfd);
  // This process (also when named by its pid) is read through the fd cache.
  std::unique_ptr<linux_threads::SelfWalk> walk;
  if (pid == 0 || pid == getpid()) walk.reset(new linux_threads::SelfWalk(dirfd));
  if (!ReadTaskDirectory(dirfd, path, walk.get(), out, error)) return false;
  if (walk) walk->Finish();
  if (out->empty() && pid != 0) {
    // Every thread exited during the walk: the process is gone.
    SetErrno(error, ESRCH, "getdents64", path);
    return false;
  }
  return true;
}

std::string CurrentThreadKey(uint64_t tid) {
  const int dirfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return std::string();
  FdCloser closer(dirfd);
  char rel[40];
  snprintf(rel, sizeof rel, "%llu/stat", static_cast<unsigned long long>(tid));
  ThreadRecord record;
  linux_threads::SelfWalk walk(dirfd);  // not finished: the other threads are kept as they were
  return walk.Read(tid, rel, &record) > 0 ? record.key : std::string();
}

}  // namespace threadleak
