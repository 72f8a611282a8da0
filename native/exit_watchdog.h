// exit_watchdog.h — the hang-at-exit watchdog, and a process-wide "once".
//
// Plain C++ over threads.h and stack.h, the same on every OS: no N-API here.
#pragma once

#include <cstdint>
#include <string>

namespace threadleak {

// Starts the watchdog: a detached native thread that waits until it is armed,
// then sleeps `timeout_ms` and, if the process is still alive then, writes
// `heading` and every other thread's id, name, state and native stack to
// stderr, once. The process ending first simply ends it. Started early (when
// threadleak/register loads), so that arming it at exit creates no thread.
// Returns the watchdog's thread id, or 0 with *error set when no thread could
// be started (or it did not say its id in time). At most one per process: a
// second call returns the first one's id. Everything the thread uses is its
// own and never freed: it may run while static objects are being destroyed.
uint64_t StartExitWatchdog(double timeout_ms, const std::string& heading, std::string* error);

// Arms the watchdog: the timeout runs from now. `exiting_tid` is the thread
// that is exiting (marked in the dump). False when none was started.
bool ArmExitWatchdog(uint64_t exiting_tid);

// True the first time it is called with `name` in this process, from any
// thread or Worker (the addon is loaded once per process): lets a message
// be said once although each Worker has its own JavaScript state.
bool ProcessOnce(const std::string& name);

}  // namespace threadleak
