// stat_fd_cache_linux.h — reading this process's threads through descriptors
// kept open on their stat files, and the keys that tell a thread from an
// earlier one with the same tid and start tick. Used by threads_linux.cc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "procfs_linux.h"
#include "threads.h"

namespace threadleak {
namespace linux_threads {

// Fills *record from a parsed stat line. Key: "<tid>@<start ticks>", and
// "<tid>@<start ticks>#<generation>" for a later thread that got the same tid
// within the same tick (generation >= 1).
void FillRecord(uint64_t tid, const procfs::StatFields& fields, uint32_t generation, ThreadRecord* record);

// An fd this cache opened, with the identity fstat gave at open: the number
// alone proves nothing, since other code may close it and get it back for a
// file of its own.
struct StatFd {
  int fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
};

// What the last walk knew of one thread of this process.
struct KnownThread {
  StatFd stat;  // fd -1: not cached
  uint64_t start_ticks = 0;
  uint32_t generation = 0;
  uint64_t seen_in_walk = 0;  // the last walk that read it
};

// One walk over this process's threads (or the look-up of one thread),
// holding the process-wide table's lock from construction to destruction.
// Read() each listed tid, then Finish() when every tid of the task directory
// was read: threads it did not read have then ended. Without Finish() (an
// error, or a look-up of one thread) the others are kept as they were.
class SelfWalk {
 public:
  explicit SelfWalk(int task_dirfd);
  ~SelfWalk();
  SelfWalk(const SelfWalk&) = delete;
  SelfWalk& operator=(const SelfWalk&) = delete;

  // Reads thread `tid` (`rel` is "<tid>/stat" under the task directory) into
  // *record, key included. Returns 1, 0 when the thread is gone (or its line
  // malformed), or -1 with errno set.
  int Read(uint64_t tid, const char* rel, ThreadRecord* record);
  void Finish() { finished_ = true; }

 private:
  ssize_t ReadFresh(const char* rel, char* buf, size_t cap, StatFd* keep);
  void TurnOff();
  void Retire(uint64_t tid, const KnownThread& thread);
  uint32_t NextGeneration(uint64_t tid, uint64_t start_ticks) const;

  struct Table {
    std::mutex mutex;
    std::unordered_map<uint64_t, KnownThread> known;  // tid -> what the walks so far knew
    uint64_t walks = 0;
    // (tid, start ticks) -> highest generation of an ended thread, kept while
    // a new thread could still get that tick (see the .cc).
    std::map<std::pair<uint64_t, uint64_t>, uint32_t> retired;
  };
  static Table& TheTable();

  Table& table_;
  std::unique_lock<std::mutex> lock_;
  int dirfd_;
  size_t limit_ = 0;      // at most this many cached fds
  long high_water_ = 0;   // no cached fds while fd numbers reach this
  bool off_ = false;      // no cached fds for the rest of this walk
  uint64_t start_tick_;   // the boot-time clock when the walk began
  bool finished_ = false;
  uint64_t walk_;         // this walk's number
  size_t cached_ = 0;     // fds kept by this walk so far
};

}  // namespace linux_threads
}  // namespace threadleak
