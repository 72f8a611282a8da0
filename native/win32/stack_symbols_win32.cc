// stack_symbols_win32.cc — module paths and symbols for the addresses of a stack.
//
// Strategy: GetModuleHandleExW(FROM_ADDRESS) finds the module that holds an
// address and GetModuleFileNameW its path; the symbol is the nearest export
// at or below the address, read from the export directory of the module's
// image as mapped in this process (its PE headers parsed here). There is no
// DbgHelp: it is single-threaded, slow to load PDBs, and absent on some
// systems; exports name what a leak report needs (napi_*, uv_*, an addon's
// entry points, kernel32/ntdll functions). Modules are looked up once per
// call and their export tables sorted once per call.
//
// Quirks handled here:
//  - A module can be unloaded by another thread while its headers are read:
//    each module is pinned (GetModuleHandleExW without UNCHANGED_REFCOUNT
//    adds a reference) for the duration of the call and released at its end.
//  - The nearest export below an address may be a different function: most
//    functions are not exported. Where the image has unwind tables (.pdata,
//    x64 and ARM64), the function that contains the address is known; an
//    export that starts before that function is not the address's function,
//    and the frame is then named module+offset instead. An address no table
//    entry holds (a leaf, hand-written assembly) is not named after an export
//    either when a function the table lists ends between the two.
//  - Exports that forward to another DLL (their address lies inside the
//    export directory and names the target) are not code: skipped.
//  - GetModuleFileNameW may return a \\?\ (or \\?\UNC\) long-path prefix:
//    stripped, so that paths compare equal to process.execPath and friends.
//  - Every offset and size read from the headers is checked against the
//    image's SizeOfImage before it is followed.
#include <windows.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "stack_win32.h"

namespace threadleak {
namespace win32_stack {
namespace {

struct Export {
  uint32_t rva;
  const char* name;  // inside the mapped image, which stays pinned for the call
};

struct Module {
  uintptr_t base = 0;
  std::string path;
  bool tables_read = false;
  std::vector<Export> exports;  // sorted by rva
#if defined(_M_X64) || defined(__x86_64__)
  const RUNTIME_FUNCTION* functions = nullptr;  // the image's .pdata, sorted by BeginAddress
  size_t function_count = 0;
#endif
};

std::string Utf8(const wchar_t* text, int length) {
  if (length <= 0) return std::string();
  const int bytes = WideCharToMultiByte(CP_UTF8, 0, text, length, nullptr, 0, nullptr, nullptr);
  if (bytes <= 0) return std::string();
  std::string out(static_cast<size_t>(bytes), '\0');
  WideCharToMultiByte(CP_UTF8, 0, text, length, &out[0], bytes, nullptr, nullptr);
  return out;
}

std::string ModulePath(HMODULE module) {
  std::wstring buffer(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = GetModuleFileNameW(module, &buffer[0], static_cast<DWORD>(buffer.size()));
    if (n == 0) return std::string();
    if (n < buffer.size()) {
      buffer.resize(n);
      break;
    }
    if (buffer.size() >= 32768) return std::string();  // the longest path Windows has
    buffer.resize(buffer.size() * 2);
  }
  if (buffer.compare(0, 8, L"\\\\?\\UNC\\") == 0) {
    buffer.erase(2, 6);  // \\?\UNC\server\share -> \\server\share
  } else if (buffer.compare(0, 4, L"\\\\?\\") == 0) {
    buffer.erase(0, 4);
  }
  return Utf8(buffer.data(), static_cast<int>(buffer.size()));
}

// True when [rva, rva + size) lies inside an image of `image_size` bytes.
bool Inside(uint64_t rva, uint64_t size, uint64_t image_size) { return rva <= image_size && size <= image_size - rva; }

// Reads the module's export table and, on x64, where its unwind table (.pdata)
// lies. Once per module and call.
void ReadTables(Module* m) {
  m->tables_read = true;
  const auto* base = reinterpret_cast<const BYTE*>(m->base);
  const auto* dos = reinterpret_cast<const IMAGE_DOS_HEADER*>(base);
  if (dos->e_magic != IMAGE_DOS_SIGNATURE || dos->e_lfanew <= 0 || dos->e_lfanew > 64 * 1024) return;
  const auto* nt = reinterpret_cast<const IMAGE_NT_HEADERS*>(base + dos->e_lfanew);
  if (nt->Signature != IMAGE_NT_SIGNATURE || nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR_MAGIC) return;
  const uint64_t image_size = nt->OptionalHeader.SizeOfImage;
#if defined(_M_X64) || defined(__x86_64__)
  if (nt->OptionalHeader.NumberOfRvaAndSizes > IMAGE_DIRECTORY_ENTRY_EXCEPTION) {
    const IMAGE_DATA_DIRECTORY& pdata = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXCEPTION];
    if (pdata.VirtualAddress != 0 && Inside(pdata.VirtualAddress, pdata.Size, image_size)) {
      m->functions = reinterpret_cast<const RUNTIME_FUNCTION*>(base + pdata.VirtualAddress);
      m->function_count = pdata.Size / sizeof(RUNTIME_FUNCTION);
    }
  }
#endif
  if (nt->OptionalHeader.NumberOfRvaAndSizes <= IMAGE_DIRECTORY_ENTRY_EXPORT) return;
  const IMAGE_DATA_DIRECTORY& dir = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
  if (dir.VirtualAddress == 0 || !Inside(dir.VirtualAddress, sizeof(IMAGE_EXPORT_DIRECTORY), image_size)) return;
  const auto* exports = reinterpret_cast<const IMAGE_EXPORT_DIRECTORY*>(base + dir.VirtualAddress);
  const uint64_t functions = exports->NumberOfFunctions, names = exports->NumberOfNames;
  if (!Inside(exports->AddressOfFunctions, functions * 4, image_size) ||
      !Inside(exports->AddressOfNames, names * 4, image_size) ||
      !Inside(exports->AddressOfNameOrdinals, names * 2, image_size)) {
    return;
  }
  const auto* function_rvas = reinterpret_cast<const DWORD*>(base + exports->AddressOfFunctions);
  const auto* name_rvas = reinterpret_cast<const DWORD*>(base + exports->AddressOfNames);
  const auto* ordinals = reinterpret_cast<const WORD*>(base + exports->AddressOfNameOrdinals);
  m->exports.reserve(static_cast<size_t>(names));
  for (uint64_t i = 0; i < names; i++) {
    if (ordinals[i] >= functions) continue;
    const DWORD rva = function_rvas[ordinals[i]];
    const bool forwarder = rva >= dir.VirtualAddress && rva - dir.VirtualAddress < dir.Size;
    if (rva == 0 || forwarder || rva >= image_size) continue;
    const DWORD name = name_rvas[i];
    if (name >= image_size) continue;
    const char* text = reinterpret_cast<const char*>(base + name);
    // The name must end inside the image.
    if (memchr(text, '\0', static_cast<size_t>(image_size - name)) == nullptr) continue;
    m->exports.push_back(Export{rva, text});
  }
  std::sort(m->exports.begin(), m->exports.end(), [](const Export& a, const Export& b) { return a.rva < b.rva; });
}

// The start (an rva) of the function that holds `address` according to the
// image's unwind tables, or -1 when they do not say (no tables, a leaf).
int64_t FunctionStart(uintptr_t address) {
#if defined(_M_X64) || defined(__x86_64__)
  DWORD64 image_base = 0;
  const RUNTIME_FUNCTION* entry = RtlLookupFunctionEntry(address, &image_base, nullptr);
  // A chained entry describes a part of a function split by the compiler
  // (cold code): follow the chain to the entry of the function's start.
  for (int depth = 0; entry != nullptr && depth < 8 && (entry->UnwindData & 1) == 0; depth++) {
    const BYTE* info = reinterpret_cast<const BYTE*>(image_base + entry->UnwindData);
    if (((info[0] >> 3) & 0x04) == 0) break;  // not UNW_FLAG_CHAININFO
    const unsigned count = info[2];
    entry = reinterpret_cast<const RUNTIME_FUNCTION*>(info + 4 + 2 * ((count + 1) & ~1u));
  }
  return entry != nullptr ? static_cast<int64_t>(entry->BeginAddress) : -1;
#elif defined(_M_ARM64) || defined(__aarch64__)
  DWORD64 image_base = 0;
  const auto* entry = RtlLookupFunctionEntry(address, &image_base, nullptr);
  return entry != nullptr ? static_cast<int64_t>(entry->BeginAddress) : -1;
#else
  (void)address;
  return -1;
#endif
}

// True when a function of the image's table ends after `export_rva` and at
// or before `rva`: the export then names code before the address, not the
// code holding it.
bool FunctionEndsBetween(const Module& m, uint64_t export_rva, uint64_t rva) {
#if defined(_M_X64) || defined(__x86_64__)
  const RUNTIME_FUNCTION* end = m.functions + m.function_count;
  const RUNTIME_FUNCTION* next = std::upper_bound(
      m.functions, end, rva, [](uint64_t value, const RUNTIME_FUNCTION& f) { return value < f.BeginAddress; });
  if (next == m.functions) return false;
  const RUNTIME_FUNCTION& before = next[-1];  // the last one that begins at or before rva
  return before.EndAddress > export_rva && before.EndAddress <= rva;
#else
  (void)m, (void)export_rva, (void)rva;
  return false;
#endif
}

class Symbolizer {
 public:
  Symbolizer() = default;
  Symbolizer(const Symbolizer&) = delete;
  Symbolizer& operator=(const Symbolizer&) = delete;
  ~Symbolizer() {
    for (auto& entry : modules_) FreeLibrary(entry.first);  // the pins taken in Find
  }

  StackFrame Name(const RawFrame& raw) {
    StackFrame f;
    f.address = raw.address;
    if (raw.address == 0) return f;  // GetModuleHandleExW would take 0 for "the executable"
    const uintptr_t lookup = raw.exact ? raw.address : raw.address - 1;
    Module* m = Find(lookup);
    if (m == nullptr || lookup < m->base) return f;  // JIT code, anonymous memory
    f.module = m->path;
    f.has_offset = true;
    f.offset = raw.address - m->base;
    if (!m->tables_read) ReadTables(m);
    const uint64_t rva = lookup - m->base;
    auto it = std::upper_bound(m->exports.begin(), m->exports.end(), rva,
                               [](uint64_t value, const Export& e) { return value < e.rva; });
    if (it == m->exports.begin()) return f;
    --it;
    const int64_t function = FunctionStart(lookup);
    if (function >= 0 ? static_cast<int64_t>(it->rva) < function : FunctionEndsBetween(*m, it->rva, rva)) {
      return f;  // inside a later, unexported function
    }
    f.symbol = it->name;
    f.offset = raw.address - (m->base + it->rva);
    return f;
  }

 private:
  Module* Find(uintptr_t address) {
    HMODULE handle = nullptr;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, reinterpret_cast<LPCWSTR>(address), &handle) ||
        handle == nullptr) {
      return nullptr;
    }
    auto found = modules_.find(handle);
    if (found != modules_.end()) {
      FreeLibrary(handle);  // one pin per module is enough
      return &found->second;
    }
    Module& m = modules_[handle];
    m.base = reinterpret_cast<uintptr_t>(handle);
    m.path = ModulePath(handle);
    return &m;
  }

  std::map<HMODULE, Module> modules_;
};

}  // namespace

void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out) {
  Symbolizer symbolizer;
  for (const RawFrame& r : raw) out->push_back(symbolizer.Name(r));
}

}  // namespace win32_stack
}  // namespace threadleak
