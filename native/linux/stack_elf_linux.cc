// stack_elf_linux.cc — names of functions that dladdr cannot see, from the
// .symtab of the module's file on disk.
//
// Strategy: dladdr knows only the dynamic symbol table, the exported
// functions. A thread's start routine is often a static (local) function —
// zeromq's thread_routine, libuv's worker, DuckDB's task runners — and gets
// no name from it. Files that are not stripped (node itself, many addons)
// keep every function in .symtab. On the first lookup in a module its section
// headers and .symtab are read, the function symbols (start, size, name
// offset) kept sorted; a lookup is then a binary search, and the name is read
// from .strtab on disk when it is needed. Callers hold Symbolize's lock.
//
// Quirks handled here:
//  - The file is untrusted input: every offset, size and count is checked
//    against the file's size before it is used, and a table of more than
//    kMaxSymbols entries (or past kMaxTotal over all modules) is not loaded.
//  - Most prebuilt .node files and distribution libraries are stripped: no
//    .symtab. The module is remembered as having none and never read again.
//  - The file on disk may not be the one mapped (a package reinstalled while
//    the process runs): it is read only when its inode is the one
//    /proc/self/maps shows for the mapping, checked again at every read. Not
//    its device: on overlayfs (containers) kernels before 6.8 show the
//    underlying file system's device there, not the one stat() returns.
//  - Symbols are addresses in the file; the caller subtracts the load bias.
//  - Only functions with a size are kept: a lookup must land inside one.
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr size_t kMaxSymbols = 4u << 20;      // per module
constexpr size_t kMaxTotal = 2u << 20;        // kept over all modules (16 bytes each)
constexpr size_t kMaxModules = 256;           // modules remembered
constexpr size_t kMaxNameBytes = 64 * 1024;   // longest name read
constexpr size_t kChunkSymbols = 4096;        // symbols read per pread

struct FunctionSymbol {
  uint64_t start;
  uint32_t size;
  uint32_t name;  // offset in the string table
};

struct ModuleSymbols {
  std::vector<FunctionSymbol> functions;  // sorted by start; empty: none
  uint64_t strtab_offset = 0;
  uint64_t strtab_size = 0;
};

struct Key {
  std::string path;
  uint64_t inode;
  bool operator<(const Key& o) const {
    return std::tie(inode, path) < std::tie(o.inode, o.path);
  }
};

std::map<Key, std::unique_ptr<ModuleSymbols>>& g_modules = *new std::map<Key, std::unique_ptr<ModuleSymbols>>;
size_t g_total = 0;

bool ReadAt(int fd, void* buffer, size_t length, uint64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, static_cast<char*>(buffer) + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Opens `key.path` if it is still the file that was mapped; -1 otherwise.
int OpenMapped(const Key& key, uint64_t* file_size) {
  int fd = open(key.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_ino) != key.inode) {
    close(fd);
    return -1;
  }
  *file_size = static_cast<uint64_t>(st.st_size);
  return fd;
}

bool Within(uint64_t offset, uint64_t size, uint64_t file_size) {
  return offset <= file_size && size <= file_size - offset;
}

// Reads the function symbols of .symtab into `out`; false when there are none
// to be had (stripped, malformed, too big).
bool Load(int fd, uint64_t file_size, ModuleSymbols* out) {
  ElfW(Ehdr) eh;
  if (file_size < sizeof eh || !ReadAt(fd, &eh, sizeof eh, 0)) return false;
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != (sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32) ||
      eh.e_shentsize != sizeof(ElfW(Shdr)) || eh.e_shnum == 0) {
    return false;  // e_shnum 0: none, or more than 65279 sections (not seen in modules)
  }
  const uint64_t headers_size = uint64_t{eh.e_shnum} * sizeof(ElfW(Shdr));
  if (!Within(eh.e_shoff, headers_size, file_size)) return false;
  std::vector<ElfW(Shdr)> sections(eh.e_shnum);
  if (!ReadAt(fd, sections.data(), headers_size, eh.e_shoff)) return false;
  const ElfW(Shdr)* symtab = nullptr;
  for (const ElfW(Shdr)& s : sections) {
    if (s.sh_type == SHT_SYMTAB) {
      symtab = &s;
      break;
    }
  }
  if (symtab == nullptr || symtab->sh_entsize != sizeof(ElfW(Sym)) || symtab->sh_link >= sections.size()) return false;
  const ElfW(Shdr)& strtab = sections[symtab->sh_link];
  if (strtab.sh_type != SHT_STRTAB || !Within(strtab.sh_offset, strtab.sh_size, file_size) ||
      !Within(symtab->sh_offset, symtab->sh_size, file_size)) {
    return false;
  }
  const uint64_t count = symtab->sh_size / sizeof(ElfW(Sym));
  if (count > kMaxSymbols || strtab.sh_size > UINT32_MAX) return false;
  std::vector<ElfW(Sym)> chunk(kChunkSymbols);
  for (uint64_t first = 0; first < count; first += kChunkSymbols) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunkSymbols, count - first));
    if (!ReadAt(fd, chunk.data(), n * sizeof(ElfW(Sym)), symtab->sh_offset + first * sizeof(ElfW(Sym)))) return false;
    for (size_t i = 0; i < n; i++) {
      const ElfW(Sym)& sym = chunk[i];
      const int type = ELF64_ST_TYPE(sym.st_info);
      if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym.st_shndx == SHN_UNDEF || sym.st_size == 0 ||
          sym.st_name == 0 || sym.st_name >= strtab.sh_size) {
        continue;
      }
      out->functions.push_back({sym.st_value, static_cast<uint32_t>(std::min<uint64_t>(sym.st_size, UINT32_MAX)),
                                static_cast<uint32_t>(sym.st_name)});
    }
  }
  if (g_total + out->functions.size() > kMaxTotal) {
    out->functions.clear();
    return false;
  }
  std::sort(out->functions.begin(), out->functions.end(),
            [](const FunctionSymbol& a, const FunctionSymbol& b) { return a.start < b.start; });
  out->functions.shrink_to_fit();
  out->strtab_offset = strtab.sh_offset;
  out->strtab_size = strtab.sh_size;
  return true;
}

const ModuleSymbols* Find(const Key& key) {
  auto it = g_modules.find(key);
  if (it != g_modules.end()) return it->second.get();
  if (g_modules.size() >= kMaxModules) return nullptr;
  auto symbols = std::make_unique<ModuleSymbols>();
  uint64_t file_size = 0;
  int fd = OpenMapped(key, &file_size);
  if (fd >= 0) {
    if (!Load(fd, file_size, symbols.get())) symbols->functions.clear();
    close(fd);
  }
  g_total += symbols->functions.size();
  return g_modules.emplace(key, std::move(symbols)).first->second.get();
}

}  // namespace

bool FileSymbol(const Mapping& mapping, uintptr_t file_address, std::string* name, uintptr_t* start) {
  if (mapping.path.empty() || mapping.path[0] != '/' || mapping.inode == 0) return false;
  const Key key{mapping.path, mapping.inode};
  const ModuleSymbols* module = Find(key);
  if (module == nullptr || module->functions.empty()) return false;
  const auto& fns = module->functions;
  auto it = std::upper_bound(fns.begin(), fns.end(), file_address,
                             [](uintptr_t a, const FunctionSymbol& f) { return a < f.start; });
  // The nearest start at or below the address, or one of the few before it
  // when that one ends first (a function placed inside another's range).
  const FunctionSymbol* found = nullptr;
  for (int tries = 0; tries < 8 && it != fns.begin() && found == nullptr; tries++) {
    --it;
    if (file_address - it->start < it->size) found = &*it;
  }
  if (found == nullptr) return false;
  uint64_t file_size = 0;
  int fd = OpenMapped(key, &file_size);
  if (fd < 0) return false;
  std::string text;
  char buffer[4096];
  uint64_t at = module->strtab_offset + found->name;
  const uint64_t end = module->strtab_offset + module->strtab_size;
  bool terminated = false;
  while (!terminated && at < end && at < file_size && text.size() < kMaxNameBytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>({sizeof buffer, end - at, file_size - at}));
    ssize_t n = pread(fd, buffer, want, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const char* nul = static_cast<const char*>(memchr(buffer, '\0', static_cast<size_t>(n)));
    text.append(buffer, nul ? static_cast<size_t>(nul - buffer) : static_cast<size_t>(n));
    terminated = nul != nullptr;
    at += static_cast<uint64_t>(n);
  }
  close(fd);
  if (!terminated || text.empty()) return false;
  *name = std::move(text);
  *start = static_cast<uintptr_t>(found->start);
  return true;
}

}  // namespace linux_stack
}  // namespace threadleak
