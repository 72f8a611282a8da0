// threads_unsupported.cc — the backend for platforms that have none yet.
//
// It compiles everywhere so that installing the package never fails, and it
// answers every call with ENOTSUP instead of inventing data.
#include "threads.h"

namespace threadleak {
namespace {

#if defined(__APPLE__)
const char* PlatformName() { return "darwin"; }
#elif defined(_WIN32)
const char* PlatformName() { return "win32"; }
#else
const char* PlatformName() { return "this platform"; }
#endif

}  // namespace

uint64_t CurrentThreadId() { return 0; }

void KeepAddonLoaded() {}

std::string CurrentThreadKey(uint64_t) { return std::string(); }

bool ListThreads(int64_t, std::vector<ThreadRecord>* out, OsError* error) {
  out->clear();
  error->code = "ENOTSUP";
  error->syscall = "ListThreads";
  error->message = std::string("threadleak is not yet supported on ") + PlatformName();
  return false;
}

}  // namespace threadleak
