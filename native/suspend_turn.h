// suspend_turn.h — the one process-wide turn that a stack capture by
// suspension (Windows, macOS) takes before it suspends a thread.
//
// Two captures running at once on two threads could each suspend the other's
// capturing thread and wait for it forever; and a capture must never suspend a
// thread that holds a lock it needs itself. So captures take turns: the turn
// is taken before anything is suspended and released after the resume, and
// nothing else is locked meanwhile. It is a plain mutex polled with short
// sleeps (a timed wait is not available everywhere this compiles), waited for
// at most max(timeout, kMinSuspendTurnWaitMs), then the capture answers "busy".
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace threadleak {

// A capture holds the turn for a few ms: even with a short timeout, waiting
// this long means another capture is stuck, not merely running.
constexpr double kMinSuspendTurnWaitMs = 500;

class SuspendTurn {
 public:
  explicit SuspendTurn(double timeout_ms) {
    const double wait_ms = timeout_ms > kMinSuspendTurnWaitMs ? timeout_ms : kMinSuspendTurnWaitMs;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(wait_ms * 1000));
    for (;;) {
      if (Lock().try_lock()) {
        held_ = true;
        return;
      }
      if (std::chrono::steady_clock::now() >= deadline) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~SuspendTurn() {
    if (held_) Lock().unlock();
  }
  SuspendTurn(const SuspendTurn&) = delete;
  SuspendTurn& operator=(const SuspendTurn&) = delete;
  bool held() const { return held_; }

 private:
  // Never destroyed: a Worker may capture a stack while the process exits
  // and runs static destructors.
  static std::mutex& Lock() {
    static std::mutex& lock = *new std::mutex;
    return lock;
  }
  bool held_ = false;
};

}  // namespace threadleak
