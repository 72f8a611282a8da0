// demangle.h — a C++ symbol name as people read it, for the frame namers of
// Linux and macOS (both with the Itanium C++ ABI's __cxa_demangle).
#pragma once

#include <cstdlib>
#include <cxxabi.h>
#include <string>

namespace threadleak {

// The name itself when it is not a mangled C++ name or cannot be demangled.
inline std::string Demangle(const char* name) {
  if (name[0] != '_' || name[1] != 'Z') return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return name;
  std::string result(out);
  free(out);
  return result;
}

}  // namespace threadleak
