// floor.cc — the floor for bench/snapshot.js: the thread enumeration of
// native/linux/threads_linux.cc done by a plain C++ program, with no N-API and no
// JavaScript, so that the bench can tell what threads() costs on top of the
// kernel's own work.
//
//   floor <pid> <iterations> [warmup]
//
// Enumerates the threads of process <pid> (the bench passes its own pid, so
// the floor sees the very threads that threads() sees) `warmup` times
// untimed, then `iterations` times timed, and prints
//
//   threads <count of the last iteration>
//   <ns of iteration 1>
//   ...
//
// Each iteration is the same work ListThreads() does per call: open
// /proc/<pid>/task as a directory fd, getdents64 over it, for each tid
// openat(dirfd, "<tid>/stat") + one read() + close, parse fields 2, 3, 14,
// 15, 22 (name from the first '(' to the LAST ')') into a record with
// std::string name and state, and push it into a fresh std::vector. A thread
// that vanished mid-walk is skipped. Process start-up is outside the timings.
//
// Built by bench/snapshot.js with g++ -O2 into bench/build/ (gitignored).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Record {
  uint64_t id = 0;
  std::string name;
  std::string raw_state;
  double user_cpu_ms = 0;
  double system_cpu_ms = 0;
  bool has_start_time = false;
  double start_time_ms = 0;
  uint64_t identity = 0;
};

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

long g_ticks = 100;
double g_boot_ms = 0;

// Boot time in ms since the epoch, as native/linux/threads_linux.cc computes it:
// CLOCK_REALTIME - CLOCK_BOOTTIME, read once. 0 when unknown.
double BootTimeMs() {
  timespec real, boot;
  if (clock_gettime(CLOCK_REALTIME, &real) != 0 || clock_gettime(CLOCK_BOOTTIME, &boot) != 0) return 0.0;
  return (static_cast<double>(real.tv_sec) - static_cast<double>(boot.tv_sec)) * 1000.0 +
         (static_cast<double>(real.tv_nsec) - static_cast<double>(boot.tv_nsec)) / 1e6;
}

bool ParseStat(const char* line, Record* record) {
  const char* open = strchr(line, '(');
  const char* close = strrchr(line, ')');
  if (!open || !close || close < open || close[1] != ' ') return false;
  record->name.assign(open + 1, close - open - 1);
  const char* p = close + 2;  // field 3
  if (!*p) return false;
  record->raw_state.assign(p, 1);
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
  const double ms_per_tick = 1000.0 / static_cast<double>(g_ticks);
  record->user_cpu_ms = static_cast<double>(utime) * ms_per_tick;
  record->system_cpu_ms = static_cast<double>(stime) * ms_per_tick;
  record->identity = starttime;
  if (g_boot_ms > 0) {
    record->has_start_time = true;
    record->start_time_ms = g_boot_ms + static_cast<double>(starttime) * ms_per_tick;
  }
  return true;
}

// One enumeration; returns false (errno set) when the task dir cannot be read.
bool Enumerate(const char* task_path, std::vector<Record>* out) {
  out->clear();
  int dirfd = open(task_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return false;
  alignas(8) char dents[32768];
  char rel[40];
  char stat[1024];
  for (;;) {
    long nread = syscall(SYS_getdents64, dirfd, dents, sizeof dents);
    if (nread < 0) {
      if (errno == EINTR) continue;
      close(dirfd);
      return false;
    }
    if (nread == 0) break;
    for (long off = 0; off < nread;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(dents + off);
      off += d->d_reclen;
      const char* name = d->d_name;
      if (name[0] < '0' || name[0] > '9') continue;
      snprintf(rel, sizeof rel, "%s/stat", name);
      int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;  // exited mid-walk
      ssize_t n;
      do { n = read(fd, stat, sizeof stat - 1); } while (n < 0 && errno == EINTR);
      close(fd);
      if (n <= 0) continue;  // exited mid-walk
      stat[n] = '\0';
      Record record;
      record.id = strtoull(name, nullptr, 10);
      if (!ParseStat(stat, &record)) continue;
      out->push_back(std::move(record));
    }
  }
  close(dirfd);
  return true;
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s <pid> <iterations> [warmup]\n", argv[0]);
    return 2;
  }
  const long pid = strtol(argv[1], nullptr, 10);
  const long iterations = strtol(argv[2], nullptr, 10);
  const long warmup = argc > 3 ? strtol(argv[3], nullptr, 10) : 3;
  if (pid <= 0 || iterations <= 0 || warmup < 0) {
    fprintf(stderr, "floor: bad arguments\n");
    return 2;
  }
  long t = sysconf(_SC_CLK_TCK);
  g_ticks = t > 0 ? t : 100;
  g_boot_ms = BootTimeMs();

  char task_path[64];
  snprintf(task_path, sizeof task_path, "/proc/%ld/task", pid);
  std::vector<uint64_t> times(static_cast<size_t>(iterations));
  size_t count = 0;
  double checksum = 0;  // keeps the parsed values observable
  for (long i = -warmup; i < iterations; i++) {
    const uint64_t start = NowNs();
    std::vector<Record> records;  // fresh each call, as in the addon
    if (!Enumerate(task_path, &records)) {
      fprintf(stderr, "floor: %s: %s\n", task_path, strerror(errno));
      return 1;
    }
    const uint64_t end = NowNs();
    if (i >= 0) times[static_cast<size_t>(i)] = end - start;
    count = records.size();
    for (const Record& r : records) checksum += r.user_cpu_ms + static_cast<double>(r.name.size());
  }
  std::string text = "threads " + std::to_string(count) + "\n";
  for (uint64_t ns : times) text += std::to_string(ns) + "\n";
  fwrite(text.data(), 1, text.size(), stdout);
  fprintf(stderr, "%s", checksum < 0 ? "impossible\n" : "");
  return 0;
}
