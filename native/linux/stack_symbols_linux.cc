// stack_symbols_linux.cc — names and modules for the addresses of a stack.
//
// Strategy: dladdr gives the symbol (demangled here) and the object that
// holds an address; a function it does not know (not exported) is looked up
// in the file's .symtab (stack_elf_linux.cc). It runs outside any signal handler: it takes the loader
// lock. Module paths come from /proc/self/maps (absolute, symlinks resolved by
// the kernel) because dladdr's file name is whatever dlopen was given,
// possibly relative, and only the bare name for the executable. Results are
// cached per address.
//
// Quirks handled here:
//  - The cache is dropped whenever a shared object is loaded or unloaded
//    (dl_iterate_phdr's dlpi_adds/dlpi_subs counters): an address may then
//    belong to another object.
//  - It is bounded by entries and by the bytes of its strings (demangled C++
//    template names run to kilobytes): scanned stacks bring a stream of new
//    addresses, so it would otherwise grow for the life of the process.
//  - Addresses outside every loaded object (JIT code, anonymous memory) get no
//    module: maps may be older than such mappings, which come and go freely,
//    while a loaded object's mappings stay put until it is unloaded.
//  - The cache is never destroyed: a Worker may capture a stack while the
//    process exits and runs static destructors.
#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "demangle.h"
#include "stack_linux.h"

namespace threadleak {
namespace linux_stack {
namespace {

constexpr size_t kMaxEntries = 16384;
constexpr size_t kMaxBytes = 8 * 1024 * 1024;

struct Symbol {
  std::string symbol;
  std::string module;
  uintptr_t base = 0;  // symbol start, or module base when no symbol; 0: none
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<uintptr_t, Symbol> symbols;
  size_t bytes = 0;  // of the strings in `symbols`
  unsigned long long loads = ~0ull, unloads = ~0ull;
  std::vector<Mapping> maps;  // read on a miss, reused until the next load or unload
  bool maps_fresh = false;
};
Cache& g = *new Cache;  // never destroyed (see the header comment)

int LoaderCounters(struct dl_phdr_info* info, size_t size, void* data) {
  auto* counters = static_cast<unsigned long long*>(data);
  if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
    counters[0] = info->dlpi_adds;
    counters[1] = info->dlpi_subs;
  }
  return 1;  // the counters are the same in every entry: stop after the first
}

// The load bias (what the file's addresses are moved by) of the object that
// holds `address`. glibc tells it through dladdr1's link_map; musl has no
// dladdr1, and its dli_fbase is where the first segment is mapped, which is
// the bias only when that segment's address is 0: there, the object is found
// among dl_iterate_phdr's by its segments.
bool LoadBias(uintptr_t address, uintptr_t* bias) {
#if defined(__GLIBC__)
  Dl_info info{};
  struct link_map* object = nullptr;
  if (dladdr1(reinterpret_cast<void*>(address), &info, reinterpret_cast<void**>(&object), RTLD_DL_LINKMAP) == 0 ||
      object == nullptr) {
    return false;
  }
  *bias = object->l_addr;
  return true;
#else
  struct Search {
    uintptr_t address;
    uintptr_t bias;
    bool found;
  } search{address, 0, false};
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) -> int {
        auto* search = static_cast<Search*>(data);
        for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
          const ElfW(Phdr)& segment = info->dlpi_phdr[i];
          const uintptr_t start = info->dlpi_addr + segment.p_vaddr;
          if (segment.p_type == PT_LOAD && search->address >= start && search->address - start < segment.p_memsz) {
            search->bias = info->dlpi_addr;
            search->found = true;
            return 1;
          }
        }
        return 0;
      },
      &search);
  *bias = search.bias;
  return search.found;
#endif
}

Symbol LookUp(uintptr_t address) {
  Symbol s;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(address), &info) == 0 || info.dli_fbase == nullptr) return s;
  uintptr_t bias = 0;
  const bool has_bias = LoadBias(address, &bias);
  s.base = reinterpret_cast<uintptr_t>(info.dli_fbase);
  if (!g.maps_fresh) g.maps_fresh = ReadMaps(&g.maps);
  const Mapping* m = FindMapping(g.maps, address);
  std::string local;
  uintptr_t local_start = 0;
  if (info.dli_sname != nullptr && info.dli_saddr != nullptr) {
    s.symbol = Demangle(info.dli_sname);
    s.base = reinterpret_cast<uintptr_t>(info.dli_saddr);
  } else if (m != nullptr && has_bias && address >= bias && FileSymbol(*m, address - bias, &local, &local_start)) {
    // Not exported: named from the file's own symbol table.
    s.symbol = Demangle(local.c_str());
    s.base = local_start + bias;
  }
  if (m != nullptr && !m->path.empty() && m->path[0] == '/') {
    s.module = m->path;
  } else if (info.dli_fname != nullptr && info.dli_fname[0] != '\0') {
    char resolved[PATH_MAX];
    if (realpath(info.dli_fname, resolved) != nullptr) s.module = resolved;
  }
  return s;
}

void Clear() {
  g.symbols.clear();
  g.bytes = 0;
}

// With g.mutex held: forgets what a load or unload since the last call made stale.
void DropStale() {
  unsigned long long counters[2] = {0, 0};
  dl_iterate_phdr(LoaderCounters, counters);
  if (counters[0] != g.loads || counters[1] != g.unloads) {
    Clear();
    g.maps_fresh = false;
    g.loads = counters[0];
    g.unloads = counters[1];
  }
}

}  // namespace

std::string LoadedPath(uintptr_t address) {
  std::lock_guard<std::mutex> lock(g.mutex);
  DropStale();
  if (!g.maps_fresh) g.maps_fresh = ReadMaps(&g.maps);
  const Mapping* m = FindMapping(g.maps, address);
  return m != nullptr ? m->path : std::string();
}

void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out) {
  std::lock_guard<std::mutex> lock(g.mutex);
  DropStale();
  for (const RawFrame& r : raw) {
    // A return address points after the call, possibly past the end of the
    // calling function (a noreturn call): look up the call itself.
    uintptr_t lookup = r.exact || r.address == 0 ? r.address : r.address - 1;
    auto it = g.symbols.find(lookup);
    if (it == g.symbols.end()) {
      if (g.symbols.size() >= kMaxEntries || g.bytes >= kMaxBytes) Clear();
      Symbol s = LookUp(lookup);
      g.bytes += s.symbol.size() + s.module.size() + sizeof(Symbol) + sizeof(uintptr_t);
      it = g.symbols.emplace(lookup, std::move(s)).first;
    }
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
