// procfs_linux.h — the small procfs readers every part of the Linux backend
// shares: one read of a small file, the parse of a stat line, the clocks a
// start time is measured in, and errno names.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace threadleak {
namespace procfs {

// Reads a small file (path relative to dirfd, or AT_FDCWD) in one read() into
// buf, NUL-terminated: the kernel formats a procfs file whole per read, so one
// read is the only consistent view. Returns the bytes read, or -1 with errno.
ssize_t ReadSmallFile(int dirfd, const char* path, char* buf, size_t cap);
inline ssize_t ReadSmallFile(const char* path, char* buf, size_t cap) {
  return ReadSmallFile(AT_FDCWD, path, buf, cap);
}

// The same through an fd already open: a pread at offset 0 (the kernel
// formats the file afresh). Returns the bytes read, or -1 with errno.
ssize_t PreadSmallFile(int fd, char* buf, size_t cap);

// The fields of /proc/.../stat that threadleak reads (1-based, man 5 proc):
// 2 comm, 3 state, 14 utime, 15 stime, 22 starttime (clock ticks).
struct StatFields {
  const char* name = nullptr;  // into the parsed line, not NUL-terminated
  size_t name_length = 0;
  char state = 0;
  unsigned long long utime = 0, stime = 0, start_ticks = 0;
};

// Parses one stat line. False when the line is malformed. comm may hold ')'
// and spaces, so the name runs from the first '(' to the LAST ')'.
bool ParseStatLine(const char* line, StatFields* fields);

long ClockTicksPerSecond();  // sysconf(_SC_CLK_TCK), 100 when unknown

// Boot time in ms since the epoch (0 when unknown): start ticks count the
// boot-time clock, so a start time is this plus ticks.
double BootTimeMs();

// The boot-time clock now, in clock ticks: the starttime a thread created at
// this instant gets. 0 when unknown.
uint64_t BootTicksNow();

// The symbolic name of an errno ("ENOTDIR"); "E<number>" for one the table
// does not know, never another errno's name.
std::string ErrnoName(int errno_value);

}  // namespace procfs
}  // namespace threadleak
