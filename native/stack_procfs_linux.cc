// stack_procfs_linux.cc — what the kernel shows about a thread of this
// process, the return-address scan, and symbolization.
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
// Symbolization happens outside any signal handler: dladdr takes the loader
// lock. Module paths come from /proc/self/maps (absolute, symlinks resolved
// by the kernel) because dladdr's file name is whatever dlopen was given,
// possibly relative, and only the bare name for the executable. Results are
// cached per address and dropped whenever a shared object is loaded or
// unloaded (dl_iterate_phdr's dlpi_adds/dlpi_subs counters).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <mutex>
#include <unordered_map>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr size_t kMaxScannedFrames = 128;
constexpr size_t kPage = 4096;  // iovec granularity; any page size >= 4 KiB works

// Reads a small procfs file in one read() into buf (NUL-terminated).
ssize_t ReadSmallFile(const char* path, char* buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n;
  do { n = read(fd, buf, cap - 1); } while (n < 0 && errno == EINTR);
  int saved = errno;
  close(fd);
  errno = saved;
  if (n >= 0) buf[n] = '\0';
  return n;
}

uint64_t HexField(const char* text, const char* name) {
  const char* p = strstr(text, name);
  return p ? strtoull(p + strlen(name), nullptr, 16) : 0;
}

const Mapping* FindMapping(const std::vector<Mapping>& maps, uintptr_t address) {
  auto it = std::upper_bound(maps.begin(), maps.end(), address,
                             [](uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it == maps.begin()) return nullptr;
  --it;
  return address < it->end ? &*it : nullptr;
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

// dladdr results, cached per looked-up address; see the header comment.
struct Symbol {
  std::string symbol;
  std::string module;
  uintptr_t base = 0;  // symbol start, or module base when no symbol; 0: none
};
std::mutex g_symbol_mutex;
std::unordered_map<uintptr_t, Symbol> g_symbols;
unsigned long long g_loads = ~0ull, g_unloads = ~0ull;
std::vector<Mapping> g_symbol_maps;  // read on a cache miss, reused until the next load or unload
bool g_symbol_maps_fresh = false;

int LoaderCounters(struct dl_phdr_info* info, size_t size, void* data) {
  auto* counters = static_cast<unsigned long long*>(data);
  if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
    counters[0] = info->dlpi_adds;
    counters[1] = info->dlpi_subs;
  }
  return 1;  // the counters are the same in every entry: stop after the first
}

std::string Demangle(const char* name) {
  if (name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return name;
  std::string result(out);
  free(out);
  return result;
}

// Addresses outside every loaded object (JIT code, anonymous memory) get no
// module: maps may be older than such mappings, which come and go freely,
// while a loaded object's mappings stay put until it is unloaded.
Symbol LookUp(uintptr_t address) {
  Symbol s;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(address), &info) == 0 || info.dli_fbase == nullptr) return s;
  s.base = reinterpret_cast<uintptr_t>(info.dli_fbase);
  if (info.dli_sname != nullptr && info.dli_saddr != nullptr) {
    s.symbol = Demangle(info.dli_sname);
    s.base = reinterpret_cast<uintptr_t>(info.dli_saddr);
  }
  if (!g_symbol_maps_fresh) g_symbol_maps_fresh = ReadMaps(&g_symbol_maps);
  const Mapping* m = FindMapping(g_symbol_maps, address);
  if (m != nullptr && !m->path.empty() && m->path[0] == '/') {
    s.module = m->path;
  } else if (info.dli_fname != nullptr && info.dli_fname[0] != '\0') {
    char resolved[PATH_MAX];
    if (realpath(info.dli_fname, resolved) != nullptr) s.module = resolved;
  }
  return s;
}

}  // namespace

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
  return 0;
}

bool ThreadExists(pid_t tid) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/task/%d", static_cast<int>(tid));
  return access(path, F_OK) == 0;
}

KernelRegisters ReadKernelRegisters(pid_t tid, uintptr_t* sp, uintptr_t* pc) {
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
  *sp = strtoull(tokens[count - 2], nullptr, 16);
  *pc = strtoull(tokens[count - 1], nullptr, 16);
  return *sp != 0 ? KernelRegisters::kKnown : KernelRegisters::kUnavailable;
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
    unsigned long start, end;
    char perms[5] = {0};
    int path_at = -1;
    if (sscanf(line.c_str(), "%lx-%lx %4s %*s %*s %*s %n", &start, &end, perms, &path_at) < 3) continue;
    Mapping m;
    m.start = start;
    m.end = end;
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
  uintptr_t sp = 0, pc = 0;
  for (;;) {
    const KernelRegisters got = ReadKernelRegisters(tid, &sp, &pc);
    if (got == KernelRegisters::kKnown) break;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    const int64_t left = retry_until_ns - (static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
    if (got == KernelRegisters::kUnavailable || left <= 0) return false;
    struct timespec pause = {0, left < 200000 ? static_cast<long>(left) : 200000L};
    nanosleep(&pause, nullptr);
  }
  if (pc != 0) {
    RawFrame f;
    f.address = pc;
    f.exact = true;
    out->push_back(f);
  }
  std::vector<Mapping> maps;
  if (ReadMaps(&maps)) ScanStack(sp, nullptr, 0, maps, out);
  return true;
}

void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out) {
  std::lock_guard<std::mutex> lock(g_symbol_mutex);
  unsigned long long counters[2] = {0, 0};
  dl_iterate_phdr(LoaderCounters, counters);
  if (counters[0] != g_loads || counters[1] != g_unloads || g_symbols.size() > 16384) {
    g_symbols.clear();
    g_symbol_maps_fresh = false;
    g_loads = counters[0];
    g_unloads = counters[1];
  }
  for (const RawFrame& r : raw) {
    // A return address points after the call, possibly past the end of the
    // calling function (a noreturn call): look up the call itself.
    uintptr_t lookup = r.exact || r.address == 0 ? r.address : r.address - 1;
    auto it = g_symbols.find(lookup);
    if (it == g_symbols.end()) it = g_symbols.emplace(lookup, LookUp(lookup)).first;
    const Symbol& s = it->second;
    StackFrame f;
    f.address = r.address;
    f.scanned = r.scanned;
    f.symbol = s.symbol;
    f.module = s.module;
    if (s.base != 0 && r.address >= s.base) {
      f.has_offset = true;
      f.offset = r.address - s.base;
    }
    out->push_back(std::move(f));
  }
}

}  // namespace linux_stack
}  // namespace threadleak
