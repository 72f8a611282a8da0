// stack_unsupported.cc — the native-stack backend for platforms that have none yet.
//
// It compiles everywhere so that installing the package never fails, and it
// answers every capture with the "unsupported" error instead of inventing frames.
#include "stack.h"

namespace threadleak {

void CaptureStack(uint64_t, double, const std::string&, StackResult* result) {
  *result = StackResult();
  result->error = "unsupported";
}

}  // namespace threadleak
