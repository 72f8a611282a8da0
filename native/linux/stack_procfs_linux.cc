// stack_procfs_linux.cc — what the kernel shows about a thread of this
// process, reads of our own memory that cannot fault, and the return-address
// scan.
//
// Strategy: a thread that cannot run the probe's signal handler (it blocks
// the signal, is stopped, or did not answer) is still visible to the kernel:
// /proc/self/task/TID/syscall gives its SP and PC while it is blocked, and its
// stack is in our own address space. The stack is read with process_vm_readv
// on our own pid, never dereferenced, so a page unmapped under our feet (the
// thread exited and its stack was freed) ends the read with EFAULT instead of
// crashing. Words that point just after a call instruction in an executable
// mapping are reported as scanned frames: a heuristic (stale words left by
// earlier calls also match), but a good one for attribution.
//
// Quirks handled here:
//  - /proc/self/task/TID/syscall shows registers only while the thread is off
//    CPU (the kernel waits for it to be), and "running" otherwise.
//  - process_vm_readv stops at the first iovec it cannot read, so one iovec
//    per page turns its count into "how much of this range is mapped and
//    readable" without a fault. Guard pages (PROT_NONE) are not readable; a
//    main-thread stack's not-yet-grown part below its mapping is not either
//    (the callers know the main thread's stack grows on demand).
//  - Some seccomp profiles deny process_vm_readv (EPERM): then nothing is
//    readable this way, and OwnMemoryReadable() says so once.
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "procfs_linux.h"
#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr size_t kMaxScannedFrames = 128;
constexpr size_t kPage = 4096;  // iovec granularity; any page size >= 4 KiB works

using procfs::ReadSmallFile;

uint64_t HexField(const char* text, const char* name) {
  const char* p = strstr(text, name);
  return p ? strtoull(p + strlen(name), nullptr, 16) : 0;
}

// True when the bytes just before `address` end with a call instruction.
bool FollowsCall(uintptr_t address, const Mapping& m) {
  if (!m.readable) return false;  // execute-only code cannot be checked
#if defined(__x86_64__) || defined(__i386__)
  // The encodings a compiler emits for calls, by length (b[7] is the byte
  // just before `address`): E8 rel32; FF /2 with ModRM forms: register (2),
  // [reg] (2), [reg+disp8] (3), [SIB] (3), [SIB+disp8] (4), [rip+disp32] and
  // [reg+disp32] (6), [SIB+disp32] (7).
  unsigned char b[8] = {0};
  uintptr_t from = address - m.start < 7 ? m.start : address - 7;
  size_t want = address - from;
  if (want < 2) return false;
  // Right-aligned, so that b[7] is the byte at address - 1.
  if (CopyOwnMemory(from, b + 8 - want, want) != want) return false;
  auto at = [&](size_t back) -> int { return back <= want ? b[8 - back] : -1; };
  if (at(5) == 0xE8) return true;
  if (at(2) == 0xFF) {
    int modrm = at(1);
    if ((modrm & 0xF8) == 0xD0) return true;                                           // call reg
    if ((modrm & 0xF8) == 0x10 && (modrm & 7) != 4 && (modrm & 7) != 5) return true;  // call [reg]
  }
  if (at(3) == 0xFF) {
    int modrm = at(2);
    if ((modrm & 0xF8) == 0x50 && (modrm & 7) != 4) return true;  // call [reg+disp8]
    if (modrm == 0x14) return true;                               // call [SIB]
  }
  if (at(4) == 0xFF && at(3) == 0x54) return true;  // call [SIB+disp8]
  if (at(6) == 0xFF) {
    int modrm = at(5);
    if (modrm == 0x15 || ((modrm & 0xF8) == 0x90 && (modrm & 7) != 4)) return true;  // [rip/reg+disp32]
  }
  if (at(7) == 0xFF && at(6) == 0x94) return true;  // call [SIB+disp32]
  return false;
#elif defined(__aarch64__)
  if (address - 4 < m.start || (address & 3) != 0) return false;
  uint32_t insn = 0;
  if (CopyOwnMemory(address - 4, &insn, 4) != 4) return false;
  if ((insn & 0xFC000000u) == 0x94000000u) return true;  // BL imm26
  if ((insn & 0xFFFFFC1Fu) == 0xD63F0000u) return true;  // BLR Xn
  if ((insn & 0xFEFFF800u) == 0xD63F0800u) return true;  // BLRAA/BLRAB/BLRAAZ/BLRABZ (pointer auth)
  return false;
#else
  (void)address;
  return true;  // no decoder for this CPU: any word into code counts
#endif
}

}  // namespace

const Mapping* FindMapping(const std::vector<Mapping>& maps, uintptr_t address) {
  auto it = std::upper_bound(maps.begin(), maps.end(), address,
                             [](uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it == maps.begin()) return nullptr;
  --it;
  return address < it->end ? &*it : nullptr;
}

int ReadThreadStatus(pid_t tid, ThreadStatus* status) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/self/task/%d/status", static_cast<int>(tid));
  ssize_t n = ReadSmallFile(path, buf, sizeof buf);
  if (n < 0) return errno;
  if (n == 0) return ESRCH;
  const char* state = strstr(buf, "\nState:");
  if (state == nullptr) return EIO;
  state += 7;
  while (*state == ' ' || *state == '\t') state++;
  status->state = *state;
  status->blocked = HexField(buf, "\nSigBlk:");
  status->shared_pending = HexField(buf, "\nShdPnd:");
  status->pending = HexField(buf, "\nSigPnd:");
  const char* voluntary = strstr(buf, "\nvoluntary_ctxt_switches:");
  const char* nonvoluntary = strstr(buf, "\nnonvoluntary_ctxt_switches:");
  status->voluntary_switches = voluntary ? strtoull(voluntary + 25, nullptr, 10) : 0;
  status->involuntary_switches = nonvoluntary ? strtoull(nonvoluntary + 28, nullptr, 10) : 0;
  return 0;
}

uint64_t ThreadStartTicks(pid_t tid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  procfs::StatFields fields;
  if (ReadSmallFile(path, buf, sizeof buf) <= 0 || !procfs::ParseStatLine(buf, &fields)) return 0;
  return fields.start_ticks;
}

bool ThreadExists(pid_t tid) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/task/%d", static_cast<int>(tid));
  return access(path, F_OK) == 0;
}

int64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

KernelRegisters ReadKernelRegisters(pid_t tid, KernelView* view) {
  // "running", or "NR ARG1..ARG6 SP PC" in a system call, or "-1 SP PC" when
  // blocked outside one. The kernel waits until the thread is off CPU to read
  // them, and prints "running" if it runs again meanwhile.
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(tid));
  if (ReadSmallFile(path, buf, sizeof buf) <= 0) return KernelRegisters::kUnavailable;
  if (strncmp(buf, "running", 7) == 0) return KernelRegisters::kRunning;
  char* tokens[10];
  int count = 0;
  for (char* save = nullptr, *t = strtok_r(buf, " \n", &save); t && count < 10; t = strtok_r(nullptr, " \n", &save)) {
    tokens[count++] = t;
  }
  if (count != 3 && count != 9) return KernelRegisters::kUnavailable;
  view->syscall = strtol(tokens[0], nullptr, 10);
  view->sp = strtoull(tokens[count - 2], nullptr, 16);
  view->pc = strtoull(tokens[count - 1], nullptr, 16);
  return view->sp != 0 ? KernelRegisters::kKnown : KernelRegisters::kUnavailable;
}

bool ReadMaps(std::vector<Mapping>* maps) {
  maps->clear();
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char chunk[16384];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(chunk, static_cast<size_t>(n));
  }
  close(fd);
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    unsigned long start, end, inode = 0;
    char perms[5] = {0};
    int path_at = -1;
    if (sscanf(line.c_str(), "%lx-%lx %4s %*s %*s %lu %n", &start, &end, perms, &inode, &path_at) < 3) continue;
    Mapping m;
    m.start = start;
    m.end = end;
    m.inode = inode;
    m.readable = perms[0] == 'r';
    m.executable = perms[2] == 'x';
    if (path_at > 0 && static_cast<size_t>(path_at) < line.size()) m.path = line.substr(path_at);
    // A file replaced on disk after it was mapped.
    static const char kDeleted[] = " (deleted)";
    if (m.path.size() > sizeof kDeleted && m.path.compare(m.path.size() - (sizeof kDeleted - 1), std::string::npos, kDeleted) == 0) {
      m.path.resize(m.path.size() - (sizeof kDeleted - 1));
    }
    maps->push_back(std::move(m));
  }
  return !maps->empty();
}

size_t CopyOwnMemory(uintptr_t address, void* buffer, size_t length) {
  // One remote iovec per page: process_vm_readv stops at the first iovec it
  // cannot read, so the count returned is always a prefix of whole pages (or
  // of the first, partial one). 16 pages per call.
  int saved = errno;
  size_t done = 0;
  while (done < length) {
    struct iovec local, remote[16];
    size_t chunk = 0;
    int count = 0;
    while (count < 16 && done + chunk < length) {
      uintptr_t at = address + done + chunk;
      size_t in_page = kPage - (at % kPage);
      size_t take = std::min(in_page, length - done - chunk);
      remote[count].iov_base = reinterpret_cast<void*>(at);
      remote[count].iov_len = take;
      count++;
      chunk += take;
    }
    local.iov_base = static_cast<char*>(buffer) + done;
    local.iov_len = chunk;
    long n = syscall(SYS_process_vm_readv, static_cast<long>(getpid()), &local, 1L, remote,
                     static_cast<long>(count), 0L);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < chunk) break;
  }
  errno = saved;
  return done;
}

size_t ReadableBelow(uintptr_t address, size_t limit) {
  // One byte of each page of [address - limit, address), from the highest
  // page down: the count read is the number of readable pages below address.
  if (limit == 0 || address <= limit) return 0;
  const int saved = errno;
  const uintptr_t bottom = (address - limit) & ~(kPage - 1);
  uintptr_t page = (address - 1) & ~(kPage - 1);
  size_t readable = 0;
  for (;;) {
    char sink[16];
    struct iovec local, remote[16];
    int count = 0;
    for (; count < 16 && page >= bottom + count * kPage; count++) {
      remote[count].iov_base = reinterpret_cast<void*>(page - count * kPage);
      remote[count].iov_len = 1;
    }
    local.iov_base = sink;
    local.iov_len = static_cast<size_t>(count);
    const long n = syscall(SYS_process_vm_readv, static_cast<long>(getpid()), &local, 1L, remote,
                           static_cast<long>(count), 0L);
    if (n > 0) readable = address - reinterpret_cast<uintptr_t>(remote[n - 1].iov_base);
    if (n < count || page < bottom + count * kPage) break;
    page -= count * kPage;
  }
  errno = saved;
  return std::min(readable, limit);
}

bool OwnMemoryReadable() {
  static const bool readable = [] {
    const char probe = 1;
    char copy = 0;
    return CopyOwnMemory(reinterpret_cast<uintptr_t>(&probe), &copy, 1) == 1 && copy == 1;
  }();
  return readable;
}

void ScanStack(uintptr_t sp, const unsigned char* copy, size_t copy_length,
               const std::vector<Mapping>& maps, std::vector<RawFrame>* out) {
  constexpr size_t kWord = sizeof(uintptr_t);
  const Mapping* stack = FindMapping(maps, sp);
  if (stack == nullptr) return;
  uintptr_t base = (sp + kWord - 1) & ~(kWord - 1);
  size_t length = std::min<uintptr_t>(kScanBytes, stack->end > base ? stack->end - base : 0);
  std::vector<unsigned char> live;
  const unsigned char* words;
  if (copy != nullptr) {
    size_t skip = base - sp;
    length = std::min(length, copy_length > skip ? copy_length - skip : 0);
    words = copy + skip;
  } else {
    live.resize(length);
    length = CopyOwnMemory(base, live.data(), length);
    words = live.data();
  }
  std::vector<RawFrame> found;
  for (size_t at = 0; at + kWord <= length; at += kWord) {
    uintptr_t word;
    memcpy(&word, words + at, kWord);
    const Mapping* code = FindMapping(maps, word - 1);
    if (code == nullptr || !code->executable || !FollowsCall(word, *code)) continue;
    RawFrame f;
    f.address = word;
    f.scanned = true;
    found.push_back(f);
  }
  // Keep both ends when there are too many: the innermost say what the thread
  // does, the outermost who started it.
  if (found.size() > kMaxScannedFrames) {
    found.erase(found.begin() + kMaxScannedFrames / 2, found.end() - kMaxScannedFrames / 2);
  }
  out->insert(out->end(), found.begin(), found.end());
}

bool AppendKernelView(pid_t tid, int64_t retry_until_ns, std::vector<RawFrame>* out) {
  KernelView view;
  for (;;) {
    const KernelRegisters got = ReadKernelRegisters(tid, &view);
    if (got == KernelRegisters::kKnown) break;
    const int64_t left = retry_until_ns - NowNs();
    if (got == KernelRegisters::kUnavailable || left <= 0) return false;
    struct timespec pause = {0, left < 200000 ? static_cast<long>(left) : 200000L};
    nanosleep(&pause, nullptr);
  }
  if (view.pc != 0) {
    RawFrame f;
    f.address = view.pc;
    f.exact = true;
    out->push_back(f);
  }
  std::vector<Mapping> maps;
  if (ReadMaps(&maps)) ScanStack(view.sp, nullptr, 0, maps, out);
  return true;
}

}  // namespace linux_stack
}  // namespace threadleak
