// stat_fd_cache_linux.cc — see stat_fd_cache_linux.h.
//
// Quirks handled here:
//  - Listing this process keeps one fd open on each live thread's stat
//    between calls: a pread at offset 0 makes the kernel format the line
//    afresh without openat's path walk and the close, about a third of the
//    cost per thread. An fd pins its task: once that thread exits, pread
//    fails with ESRCH and never reads a newer thread that reused the tid.
//  - The cached fd numbers are the process's: a library with a double close()
//    may close one, and its next open() then gets that number. So each fd's
//    identity (st_dev, st_ino from fstat) is recorded at open and checked with
//    fstat before every pread and every close: a pread could even block (a
//    FUSE file), and a close would take the other code's file away. An fd
//    that fails the check is forgotten, never closed. The check before a
//    close also wants O_NONBLOCK in the file's flags (opened with it here; it
//    changes nothing for procfs): the one file fstat cannot tell apart is the
//    same stat file opened by the other code itself, and that open is almost
//    never O_NONBLOCK. Reading through such an fd reads the right line anyway.
//  - The cache must not starve the process of fds: it holds at most an eighth
//    of the soft limit (4096 at most), closing what is over (the limit may
//    have been lowered), and nothing at all while the process uses half of
//    its limit or more (an fd number is the lowest free one, so an open
//    returning n means the n fds below it are in use: checked on the task
//    directory's fd at each call and on each new stat fd) or after EMFILE.
//  - starttime (stat field 22) counts ticks (10 ms here) of the boot-time
//    clock, so two threads can have the same tid and start tick: the first
//    exits and the tid is reused within the tick. A cached fd tells them
//    apart (ESRCH), and so does a walk that no longer lists the tid. The
//    later thread gets the next generation, which the table remembers with
//    it (stable across walks). An ended thread is remembered as retired only
//    while the boot-time clock is still in its start tick at the start of a
//    walk: after that no new thread can get that tick, and any that got it
//    existed when the walk began, so the walk met it. Without a cached fd
//    (cache full or off) and without a walk in between, a reuse within one
//    tick cannot be seen: the later thread then keeps the earlier key.
#include "stat_fd_cache_linux.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>

namespace threadleak {
namespace linux_threads {
namespace {

// True when s.fd still names the file this cache opened.
bool StillOurs(const StatFd& s) {
  struct stat st;
  return fstat(s.fd, &st) == 0 && st.st_dev == s.dev && st.st_ino == s.ino;
}

// Opens `rel` under dirfd and records its identity. False with errno set.
bool OpenStat(int dirfd, const char* rel, StatFd* out) {
  const int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int saved = errno;
    close(fd);  // opened just above: ours
    errno = saved;
    return false;
  }
  out->fd = fd;
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  return true;
}

// Closes s->fd if it is still ours, forgets it either way. Keeps errno.
void Release(StatFd* s) {
  if (s->fd < 0) return;
  const int saved = errno;
  if (StillOurs(*s)) {
    const int flags = fcntl(s->fd, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) != 0) close(s->fd);
  }
  s->fd = -1;
  errno = saved;
}

}  // namespace

void FillRecord(uint64_t tid, const procfs::StatFields& fields, uint32_t generation, ThreadRecord* record) {
  record->id = tid;
  record->name.assign(fields.name, fields.name_length);
  record->raw_state.assign(1, fields.state);
  const double ms_per_tick = 1000.0 / static_cast<double>(procfs::ClockTicksPerSecond());
  record->user_cpu_ms = static_cast<double>(fields.utime) * ms_per_tick;
  record->system_cpu_ms = static_cast<double>(fields.stime) * ms_per_tick;
  const double boot_ms = procfs::BootTimeMs();
  if (boot_ms > 0) {
    record->has_start_time = true;
    record->start_time_ms = boot_ms + static_cast<double>(fields.start_ticks) * ms_per_tick;
  }
  char key[64];  // 20 + 1 + 20 + 1 + 10 characters at most
  char* const digits_end = key + sizeof key - 1;  // a separator always fits after digits
  char* end = std::to_chars(key, digits_end, tid).ptr;
  *end++ = '@';
  end = std::to_chars(end, digits_end, fields.start_ticks).ptr;
  if (generation != 0) {
    *end++ = '#';
    end = std::to_chars(end, digits_end, generation).ptr;
  }
  record->key.assign(key, end);
}

SelfWalk::Table& SelfWalk::TheTable() {
  static Table* table = new Table;  // never destroyed: a Worker may list threads while the process exits
  return *table;
}

SelfWalk::SelfWalk(int task_dirfd)
    : table_(TheTable()), lock_(table_.mutex), dirfd_(task_dirfd), start_tick_(procfs::BootTicksNow()) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    limit_ = 4096;
    high_water_ = 1L << 30;
  } else {
    limit_ = static_cast<size_t>(limit.rlim_cur / 8 < 4096 ? limit.rlim_cur / 8 : 4096);
    high_water_ = static_cast<long>(limit.rlim_cur / 2);
  }
  walk_ = ++table_.walks;
  // dirfd got the lowest free number: every fd below it is in use.
  if (dirfd_ >= high_water_) TurnOff();
}

SelfWalk::~SelfWalk() {
  if (finished_) {
    // Not listed: ended.
    for (auto it = table_.known.begin(); it != table_.known.end();) {
      if (it->second.seen_in_walk == walk_) {
        ++it;
        continue;
      }
      Release(&it->second.stat);
      Retire(it->first, it->second);
      it = table_.known.erase(it);
    }
    // A retired (tid, tick) with a tick before this walk's start can have no
    // successor this walk did not meet.
    for (auto it = table_.retired.begin(); it != table_.retired.end();) {
      it = it->first.second < start_tick_ ? table_.retired.erase(it) : std::next(it);
    }
  }
  // Else the threads this walk did not read are kept as they were.
}

void SelfWalk::TurnOff() {
  off_ = true;
  for (auto& entry : table_.known) Release(&entry.second.stat);
  cached_ = 0;
}

void SelfWalk::Retire(uint64_t tid, const KnownThread& thread) {
  uint32_t& highest = table_.retired[{tid, thread.start_ticks}];
  if (thread.generation > highest) highest = thread.generation;
}

uint32_t SelfWalk::NextGeneration(uint64_t tid, uint64_t start_ticks) const {
  auto it = table_.retired.find({tid, start_ticks});
  return it == table_.retired.end() ? 0 : it->second + 1;
}

// Reads `rel` without the cached fd of its tid: through a new fd that the
// cache keeps (*keep) when the budget allows, else with open-read-close.
ssize_t SelfWalk::ReadFresh(const char* rel, char* buf, size_t cap, StatFd* keep) {
  if (off_ || cached_ >= limit_) return procfs::ReadSmallFile(dirfd_, rel, buf, cap);
  StatFd opened;
  if (!OpenStat(dirfd_, rel, &opened)) {
    if (errno != EMFILE && errno != ENFILE) return -1;
    // Out of descriptors: give back every cached one, then read uncached.
    TurnOff();
    return procfs::ReadSmallFile(dirfd_, rel, buf, cap);
  }
  const ssize_t n = procfs::PreadSmallFile(opened.fd, buf, cap);
  if (n > 0 && opened.fd < high_water_) {
    *keep = opened;
    return n;
  }
  const bool crowded = opened.fd >= high_water_;
  Release(&opened);
  // The process uses half of its fds or more: keep none of them.
  if (crowded) TurnOff();
  return n;
}

int SelfWalk::Read(uint64_t tid, const char* rel, ThreadRecord* record) {
  auto it = table_.known.find(tid);
  const bool had = it != table_.known.end();
  KnownThread was = had ? it->second : KnownThread();
  if (had) it->second.stat.fd = -1;  // held in `was` now
  char line[1024];  // a stat line is ~300 bytes; comm is at most 15 bytes
  ssize_t n = -1;
  bool ended = false;  // proof that the thread `was` has ended
  StatFd keep;
  if (was.stat.fd >= 0) {
    if (StillOurs(was.stat)) {
      n = procfs::PreadSmallFile(was.stat.fd, line, sizeof line);
      if (n > 0) {
        keep = was.stat;
      } else {
        // ESRCH: that thread ended, and a thread listed under its tid now is
        // a new one.
        ended = n < 0 && errno == ESRCH;
        Release(&was.stat);
      }
    }
    was.stat.fd = -1;  // kept in `keep`, closed, or someone else's now
  }
  if (keep.fd >= 0) {
    // The limit may have been lowered since the fd was cached.
    if (off_ || cached_ >= limit_) Release(&keep);
  } else {
    n = ReadFresh(rel, line, sizeof line, &keep);
  }
  procfs::StatFields fields;
  if (n <= 0 || !procfs::ParseStatLine(line, &fields)) {
    const int saved = errno;
    Release(&keep);
    // ENOENT / ESRCH / an empty read: the thread ended mid-walk.
    const bool gone = n == 0 || (n < 0 && (errno == ENOENT || errno == ESRCH));
    if (had && gone) {
      Retire(tid, was);
      table_.known.erase(it);
    }  // else an error or a malformed line: nothing learnt, the entry stays (uncached)
    errno = saved;
    return n < 0 && !gone ? -1 : 0;
  }
  KnownThread now;
  now.seen_in_walk = walk_;
  now.stat = keep;
  now.start_ticks = fields.start_ticks;
  if (had && !ended && was.start_ticks == fields.start_ticks) {
    now.generation = was.generation;  // the same thread
  } else {
    if (had) Retire(tid, was);
    now.generation = NextGeneration(tid, fields.start_ticks);
  }
  if (now.stat.fd >= 0) cached_++;
  if (had) it->second = now;
  else table_.known.emplace(tid, now);
  FillRecord(tid, fields, now.generation, record);
  return 1;
}

}  // namespace linux_threads
}  // namespace threadleak
