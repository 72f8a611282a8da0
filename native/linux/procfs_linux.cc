// procfs_linux.cc — see procfs_linux.h.
#include "procfs_linux.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace threadleak {
namespace procfs {

ssize_t PreadSmallFile(int fd, char* buf, size_t cap) {
  ssize_t n;
  do { n = pread(fd, buf, cap - 1, 0); } while (n < 0 && errno == EINTR);
  if (n >= 0) buf[n] = '\0';
  return n;
}

ssize_t ReadSmallFile(int dirfd, const char* path, char* buf, size_t cap) {
  const int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = PreadSmallFile(fd, buf, cap);  // at offset 0 of a new fd: a plain read
  const int saved = errno;
  close(fd);  // opened just above: ours
  errno = saved;
  return n;
}

bool ParseStatLine(const char* line, StatFields* fields) {
  const char* open = strchr(line, '(');
  const char* close = strrchr(line, ')');
  if (!open || !close || close < open || close[1] != ' ') return false;
  fields->name = open + 1;
  fields->name_length = static_cast<size_t>(close - open - 1);
  const char* p = close + 2;  // field 3 starts here
  if (!*p) return false;
  fields->state = *p;
  // Walk fields 3..22, separated by single spaces.
  int field = 3;
  while (*p && field < 22) {
    const char* space = strchr(p, ' ');
    if (!space) return false;
    p = space + 1;
    ++field;
    if (field == 14) fields->utime = strtoull(p, nullptr, 10);
    else if (field == 15) fields->stime = strtoull(p, nullptr, 10);
    else if (field == 22) fields->start_ticks = strtoull(p, nullptr, 10);
  }
  return field == 22;
}

long ClockTicksPerSecond() {
  static const long ticks = [] {
    const long t = sysconf(_SC_CLK_TCK);
    return t > 0 ? t : 100;
  }();
  return ticks;
}

// CLOCK_REALTIME - CLOCK_BOOTTIME, read once (ms precision; btime in
// /proc/stat has only whole seconds).
double BootTimeMs() {
  static const double boot = [] {
    struct timespec real, boot_clock;
    if (clock_gettime(CLOCK_REALTIME, &real) != 0 || clock_gettime(CLOCK_BOOTTIME, &boot_clock) != 0) return 0.0;
    return (static_cast<double>(real.tv_sec) - static_cast<double>(boot_clock.tv_sec)) * 1000.0 +
           (static_cast<double>(real.tv_nsec) - static_cast<double>(boot_clock.tv_nsec)) / 1e6;
  }();
  return boot;
}

// The kernel computes starttime as start_boottime_ns / (1e9 / USER_HZ),
// truncated, on the same boot-time clock (shifted alike in a time namespace).
uint64_t BootTicksNow() {
  struct timespec now;
  if (clock_gettime(CLOCK_BOOTTIME, &now) != 0) return 0;
  const uint64_t ns = static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
  return ns / (1000000000ull / static_cast<uint64_t>(ClockTicksPerSecond()));
}

std::string ErrnoName(int errno_value) {
  // The errnos the calls of this backend can give (open, read, getdents64,
  // fstat, process_vm_readv, signals); aliases (EWOULDBLOCK, EOPNOTSUPP) are
  // the same numbers on Linux and take the first name.
  switch (errno_value) {
#define THREADLEAK_ERRNO(name) case name: return #name;
    THREADLEAK_ERRNO(EPERM) THREADLEAK_ERRNO(ENOENT) THREADLEAK_ERRNO(ESRCH) THREADLEAK_ERRNO(EINTR)
    THREADLEAK_ERRNO(EIO) THREADLEAK_ERRNO(ENXIO) THREADLEAK_ERRNO(E2BIG) THREADLEAK_ERRNO(EBADF)
    THREADLEAK_ERRNO(EAGAIN) THREADLEAK_ERRNO(ENOMEM) THREADLEAK_ERRNO(EACCES) THREADLEAK_ERRNO(EFAULT)
    THREADLEAK_ERRNO(EBUSY) THREADLEAK_ERRNO(ENODEV) THREADLEAK_ERRNO(ENOTDIR) THREADLEAK_ERRNO(EISDIR)
    THREADLEAK_ERRNO(EINVAL) THREADLEAK_ERRNO(ENFILE) THREADLEAK_ERRNO(EMFILE) THREADLEAK_ERRNO(ENOSPC)
    THREADLEAK_ERRNO(EROFS) THREADLEAK_ERRNO(ENAMETOOLONG) THREADLEAK_ERRNO(ENOSYS) THREADLEAK_ERRNO(ELOOP)
    THREADLEAK_ERRNO(EOVERFLOW) THREADLEAK_ERRNO(ENOTSUP) THREADLEAK_ERRNO(ETIMEDOUT) THREADLEAK_ERRNO(ESTALE)
    THREADLEAK_ERRNO(ENOTCONN) THREADLEAK_ERRNO(ENOLINK) THREADLEAK_ERRNO(EDEADLK) THREADLEAK_ERRNO(ECHILD)
#undef THREADLEAK_ERRNO
    default: return "E" + std::to_string(errno_value);
  }
}

}  // namespace procfs
}  // namespace threadleak
