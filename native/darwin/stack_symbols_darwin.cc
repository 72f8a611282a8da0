// stack_symbols_darwin.cc — module paths and symbols for the addresses of a
// stack, on macOS.
//
// Strategy: dladdr finds the image that holds an address, its path and the
// nearest symbol at or below it (dyld reads the image's symbol table, local
// symbols included where the image keeps them; for images in the shared
// cache, their exports). C++ names are demangled here (Rust names are left
// to src/demangle.ts). Paths are made canonical with realpath, cached.
//
// Quirks handled here:
//  - Symbols carry no size on macOS: the nearest symbol below an address may
//    be a function far before the one that holds it (a function that is not
//    exported, in an image stripped of its local symbols). The image's
//    LC_FUNCTION_STARTS table (which ld64 writes for every image, stripped or
//    not) gives the start of the function that holds the address; a symbol
//    that starts before it names another function, and the frame is then
//    named module+offset instead. Images in the dyld shared cache (the
//    system libraries) are not checked: their tables live in the cache's
//    shared __LINKEDIT, and their exported names are what dladdr gives.
//  - An image can be unloaded by another thread while its load commands and
//    tables are read: each image is referenced (dlopen RTLD_NOLOAD) for the
//    duration of the call and released (dlclose) at its end, and its table
//    is not read when that fails. The main executable is never unloaded and
//    is read without a reference.
//  - dladdr has already removed the leading underscore of Mach-O names, so
//    C++ names start with _Z as on Linux. dyld's own frames come back as
//    /usr/lib/dyld.
//  - dladdr's path is the one the image was loaded by: a symlink for the
//    executable started through one (Homebrew's bin/node), while
//    process.execPath is canonical. realpath makes them comparable; the
//    system libraries have no file on disk since macOS 11 (they exist only
//    in the shared cache), and keep dyld's path.
//  - The path cache is never destroyed (a Worker may capture a stack while
//    the process exits and runs static destructors) and is bounded.
#include <crt_externs.h>
#include <dlfcn.h>
#include <mach-o/loader.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "demangle.h"
#include "stack_darwin.h"

namespace threadleak {
namespace darwin_stack {
namespace {

constexpr size_t kMaxCachedPaths = 1024;
constexpr uint32_t kDylibInCache = 0x80000000u;  // MH_DYLIB_IN_CACHE (macOS 11 headers name it)

struct PathCache {
  std::mutex mutex;
  std::unordered_map<std::string, std::string> canonical;
};
PathCache& g_paths = *new PathCache;  // never destroyed (see the header comment)

std::string CanonicalPath(const char* path) {
  std::lock_guard<std::mutex> lock(g_paths.mutex);
  auto it = g_paths.canonical.find(path);
  if (it != g_paths.canonical.end()) return it->second;
  if (g_paths.canonical.size() >= kMaxCachedPaths) g_paths.canonical.clear();
  char resolved[PATH_MAX];
  std::string result = realpath(path, resolved) != nullptr ? resolved : path;
  g_paths.canonical.emplace(path, result);
  return result;
}

// The start of the function that holds `address` in the image whose header
// is at `header`, from its LC_FUNCTION_STARTS table; 0 when the image has no
// usable table. Every offset read from the load commands is checked before
// it is followed.
uintptr_t FunctionStart(const void* header_address, uintptr_t address) {
  const auto* header = static_cast<const mach_header_64*>(header_address);
  if (header->magic != MH_MAGIC_64 || (header->flags & kDylibInCache) != 0) return 0;
  const auto* commands = reinterpret_cast<const unsigned char*>(header + 1);
  const segment_command_64* text = nullptr;
  const segment_command_64* linkedit = nullptr;
  const linkedit_data_command* starts = nullptr;
  size_t offset = 0;
  for (uint32_t i = 0; i < header->ncmds; i++) {
    if (header->sizeofcmds - offset < sizeof(load_command)) return 0;
    const auto* command = reinterpret_cast<const load_command*>(commands + offset);
    if (command->cmdsize < sizeof(load_command) || command->cmdsize > header->sizeofcmds - offset) return 0;
    if (command->cmd == LC_SEGMENT_64 && command->cmdsize >= sizeof(segment_command_64)) {
      const auto* segment = reinterpret_cast<const segment_command_64*>(command);
      if (strncmp(segment->segname, SEG_TEXT, sizeof segment->segname) == 0) text = segment;
      if (strncmp(segment->segname, SEG_LINKEDIT, sizeof segment->segname) == 0) linkedit = segment;
    } else if (command->cmd == LC_FUNCTION_STARTS && command->cmdsize >= sizeof(linkedit_data_command)) {
      starts = reinterpret_cast<const linkedit_data_command*>(command);
    }
    offset += command->cmdsize;
  }
  if (text == nullptr || linkedit == nullptr || starts == nullptr || starts->datasize == 0) return 0;
  if (starts->dataoff < linkedit->fileoff || starts->dataoff - linkedit->fileoff > linkedit->vmsize ||
      linkedit->vmsize - (starts->dataoff - linkedit->fileoff) < starts->datasize) {
    return 0;
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(header);
  const uintptr_t slide = base - static_cast<uintptr_t>(text->vmaddr);
  const auto* data = reinterpret_cast<const unsigned char*>(slide + linkedit->vmaddr + (starts->dataoff - linkedit->fileoff));
  const unsigned char* const end = data + starts->datasize;
  // ULEB128 deltas; the first is from the start of __TEXT (the header); a 0 ends the list.
  uintptr_t function = base, best = 0;
  while (data < end) {
    uint64_t delta = 0;
    unsigned shift = 0;
    for (;;) {
      if (data >= end || shift > 63) return best;
      const unsigned char byte = *data++;
      delta |= static_cast<uint64_t>(byte & 0x7f) << shift;
      shift += 7;
      if ((byte & 0x80) == 0) break;
    }
    if (delta == 0) break;
    function += static_cast<uintptr_t>(delta);
    if (function > address) break;
    best = function;
  }
  return best;
}

// What one address is: its image, and the name and start of its function.
struct Lookup {
  bool in_image = false;
  const char* image_path = nullptr;  // dyld's, valid while the image is referenced
  uintptr_t image_base = 0;
  const char* symbol = nullptr;      // mangled, no leading underscore
  uintptr_t symbol_start = 0;
  uintptr_t function_start = 0;      // 0: unknown
};

// Images referenced for the duration of one call (see the header comment).
class ImagePins {
 public:
  ImagePins() = default;
  ~ImagePins() {
    for (const auto& pin : pins_) dlclose(pin.second);
  }
  ImagePins(const ImagePins&) = delete;
  ImagePins& operator=(const ImagePins&) = delete;

  // False when the image could not be referenced (it is being unloaded).
  bool Pin(uintptr_t base, const char* path) {
    for (const auto& pin : pins_) {
      if (pin.first == base) return true;
    }
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (handle == nullptr) return false;
    pins_.emplace_back(base, handle);
    return true;
  }

 private:
  std::vector<std::pair<uintptr_t, void*>> pins_;
};

Lookup LookUp(uintptr_t address, ImagePins* pins) {
  Lookup result;
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(address), &info) == 0 || info.dli_fbase == nullptr ||
      info.dli_fname == nullptr) {
    return result;
  }
  result.in_image = true;
  result.image_path = info.dli_fname;
  result.image_base = reinterpret_cast<uintptr_t>(info.dli_fbase);
  if (info.dli_sname != nullptr && info.dli_saddr != nullptr) {
    result.symbol = info.dli_sname;
    result.symbol_start = reinterpret_cast<uintptr_t>(info.dli_saddr);
  }
  const bool main_image = info.dli_fbase == static_cast<const void*>(_NSGetMachExecuteHeader());
  if (main_image || pins->Pin(result.image_base, info.dli_fname)) {
    result.function_start = FunctionStart(info.dli_fbase, address);
  }
  if (result.symbol != nullptr && result.function_start > result.symbol_start) {
    result.symbol = nullptr;  // the nearest symbol is an earlier function's
    result.symbol_start = 0;
  }
  if (result.function_start == 0) result.function_start = result.symbol_start;
  return result;
}

}  // namespace

bool FunctionContaining(uintptr_t address, uintptr_t* start) {
  ImagePins pins;
  const Lookup found = LookUp(address, &pins);
  *start = found.function_start;
  return found.in_image;
}

void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out) {
  ImagePins pins;
  for (const RawFrame& r : raw) {
    // A return address points after the call, possibly past the end of the
    // calling function (a noreturn call): look up the call itself.
    const uintptr_t lookup = r.exact || r.address == 0 ? r.address : r.address - 1;
    const Lookup found = LookUp(lookup, &pins);
    StackFrame f;
    f.address = r.address;
    if (found.in_image) {
      f.module = CanonicalPath(found.image_path);
      const uintptr_t base = found.symbol != nullptr ? found.symbol_start : found.image_base;
      if (found.symbol != nullptr) f.symbol = Demangle(found.symbol);
      if (r.address >= base) {
        f.has_offset = true;
        f.offset = r.address - base;
      }
    }
    out->push_back(std::move(f));
  }
}

}  // namespace darwin_stack
}  // namespace threadleak
