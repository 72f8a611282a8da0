// exit_watchdog.cc — says why a process hangs at exit.
//
// Strategy: threadleak/register starts a detached thread when it loads, which
// waits on a condition variable until the process's 'exit' event arms it (so
// that exit creates no thread, which can fail or take long in a process short
// of them). Armed, it sleeps for the timeout; when the process has not ended by
// then (an addon's cleanup hook or a library's destructor joins a thread that
// never ends, a context close waits for a message that cannot be delivered),
// it writes every thread's native stack to stderr and ends. No JavaScript
// can run at that point (the main thread is the one that hangs), so this is
// the one message formatted natively; its frame lines follow formatFrame in
// src/report.ts, and the heading comes from there.
//
// Quirks:
//  - The process's static objects may be destroyed while this runs (exit()
//    runs destructors with other threads still alive): the thread owns
//    everything it touches (the heading is copied to the heap and never
//    freed), and the stack backends' own caches are never destroyed.
//  - A thread blocked in a system call is read from what the kernel shows,
//    never interrupted (as leak reports do): a thread woken by a probe signal
//    could see EINTR and take another path out of its hang. Only a thread
//    that shows nothing there (it is running) is probed. Windows and macOS
//    read a stack by suspending the thread, which interrupts no system call:
//    there the first read (timeout 0) already has every frame.
//  - Windows ends every other thread before DLL_PROCESS_DETACH: a hang in a
//    DLL's detach routine or a static destructor cannot be seen from here.
//  - stderr may be a pipe that is full or closed: writes give up on error.
#include "exit_watchdog.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "stack.h"
#include "threads.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#endif

namespace threadleak {
namespace {

constexpr size_t kMaxFrames = 32;
constexpr int kQuietAttempts = 4;             // reads of the kernel view before a probe
constexpr auto kQuietPause = std::chrono::microseconds(500);
constexpr double kProbeTimeoutMs = 100;
constexpr auto kStartWait = std::chrono::seconds(2);  // for the thread to say its id

void WriteAll(const std::string& text) {
#ifdef _WIN32
  HANDLE out = GetStdHandle(STD_ERROR_HANDLE);
  if (out == nullptr || out == INVALID_HANDLE_VALUE) return;
  size_t done = 0;
  while (done < text.size()) {
    DWORD wrote = 0;
    const DWORD chunk = static_cast<DWORD>(std::min<size_t>(text.size() - done, 1 << 16));
    if (!WriteFile(out, text.data() + done, chunk, &wrote, nullptr) || wrote == 0) return;
    done += wrote;
  }
#else
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t wrote = write(2, text.data() + done, text.size() - done);
    if (wrote > 0) {
      done += static_cast<size_t>(wrote);
    } else if (wrote < 0 && errno == EINTR) {
      continue;
    } else if (wrote < 0 && errno == EAGAIN) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a non-blocking pipe that is full
    } else {
      return;
    }
  }
#endif
}

void NameThisThread() {
#ifdef _WIN32
  using SetDescription = HRESULT(WINAPI*)(HANDLE, PCWSTR);
  HMODULE kernel = GetModuleHandleW(L"kernel32.dll");
  // Windows 10 1607 and later; elsewhere the thread keeps no name.
  auto set = kernel ? reinterpret_cast<SetDescription>(reinterpret_cast<void*>(GetProcAddress(kernel, "SetThreadDescription")))
                    : nullptr;
  if (set) set(GetCurrentThread(), L"threadleak-exit");
#elif defined(__APPLE__)
  pthread_setname_np("threadleak-exit");
#else
  pthread_setname_np(pthread_self(), "threadleak-exit");  // 15 bytes: the Linux limit
#endif
}

std::string Hex(uint64_t value) {
  char text[2 + 16 + 1];
  snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

// As formatFrame in src/report.ts: `symbol+0xoff (module)`, or with no
// symbol `address (module+0xoff)`, and ` [scanned]` for a scanned frame.
std::string FormatFrame(const StackFrame& frame) {
  const std::string offset = frame.has_offset ? "+" + Hex(frame.offset) : "";
  std::string line = frame.symbol.empty() ? Hex(frame.address) : frame.symbol + offset;
  if (!frame.module.empty()) line += " (" + frame.module + (frame.symbol.empty() ? offset : "") + ")";
  if (frame.scanned) line += " [scanned]";
  return line;
}

// A JSON-style quoted name, as the leak report shows names.
std::string Quoted(const std::string& name) {
  std::string out = "\"";
  for (const unsigned char c : name) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char escaped[8];
      snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// The stack as a leak report reads it: the kernel view first, a probe only
// for a thread that shows nothing there.
void ReadStack(const ThreadRecord& thread, StackResult* stack) {
  for (int attempt = 0; attempt < kQuietAttempts; attempt++) {
    *stack = StackResult();
    CaptureStack(thread.id, 0, thread.key, stack);
    if (!stack->frames.empty() || stack->error == "exited" || stack->error == "not-found") return;
    std::this_thread::sleep_for(kQuietPause);
  }
  *stack = StackResult();
  CaptureStack(thread.id, kProbeTimeoutMs, thread.key, stack);
}

std::string DescribeThreads(uint64_t self, uint64_t exiting_tid) {
  std::vector<ThreadRecord> list;
  OsError error;
  if (!ListThreads(0, &list, &error)) return "  (the threads could not be listed: " + error.code + " " + error.message + ")\n";
  std::string text;
  for (const ThreadRecord& thread : list) {
    if (thread.id == self) continue;
    text += "  - thread " + std::to_string(thread.id) + " " + Quoted(thread.name) + " (" + thread.raw_state +
            (thread.id == exiting_tid ? "; the thread that is exiting" : "") + ")\n";
    StackResult stack;
    ReadStack(thread, &stack);
    const size_t shown = std::min(stack.frames.size(), kMaxFrames);
    for (size_t i = 0; i < shown; i++) text += "        #" + std::to_string(i) + " " + FormatFrame(stack.frames[i]) + "\n";
    if (stack.frames.size() > shown) text += "        ... " + std::to_string(stack.frames.size() - shown) + " more\n";
    if (!stack.error.empty() && stack.error != "not-probed") {
      text += "        (stack: " + stack.error + (stack.detail.empty() ? "" : ": " + stack.detail) + ")\n";
    }
  }
  return text;
}

// The one watchdog of the process, never freed (see the header comment).
struct Watchdog {
  std::mutex mutex;
  std::condition_variable changed;
  uint64_t tid = 0;  // said by the thread once it runs
  bool armed = false;
  uint64_t exiting_tid = 0;
  std::string heading;
  std::chrono::microseconds delay{0};
};

std::mutex& g_start_mutex = *new std::mutex;  // never destroyed
Watchdog* g_watchdog = nullptr;                // under g_start_mutex

void RunWatchdog(Watchdog* dog) {
  NameThisThread();
  const uint64_t self = CurrentThreadId();
  std::unique_lock<std::mutex> lock(dog->mutex);
  dog->tid = self;
  dog->changed.notify_all();
  dog->changed.wait(lock, [dog] { return dog->armed; });
  const auto deadline = std::chrono::steady_clock::now() + dog->delay;
  const uint64_t exiting_tid = dog->exiting_tid;
  const std::string heading = dog->heading;
  lock.unlock();
  std::this_thread::sleep_until(deadline);
  WriteAll(heading + "\n" + DescribeThreads(self, exiting_tid));
}

}  // namespace

uint64_t StartExitWatchdog(double timeout_ms, const std::string& heading, std::string* error) {
  std::lock_guard<std::mutex> start_lock(g_start_mutex);
  Watchdog* dog = g_watchdog;
  if (dog == nullptr) {
    dog = new Watchdog;
    dog->heading = heading;
    dog->delay = std::chrono::microseconds(static_cast<int64_t>(timeout_ms * 1000));
    try {
      std::thread(RunWatchdog, dog).detach();
    } catch (const std::exception& e) {
      delete dog;  // no thread has it
      *error = e.what();
      return 0;
    }
    g_watchdog = dog;
  }
  std::unique_lock<std::mutex> lock(dog->mutex);
  if (!dog->changed.wait_for(lock, kStartWait, [dog] { return dog->tid != 0; })) {
    *error = "the watchdog thread did not start within 2 s";
    return 0;
  }
  return dog->tid;
}

bool ArmExitWatchdog(uint64_t exiting_tid) {
  Watchdog* dog;
  {
    std::lock_guard<std::mutex> start_lock(g_start_mutex);
    dog = g_watchdog;
  }
  if (dog == nullptr) return false;
  {
    std::lock_guard<std::mutex> lock(dog->mutex);
    if (dog->armed) return true;
    dog->armed = true;
    dog->exiting_tid = exiting_tid;
  }
  dog->changed.notify_all();
  return true;
}

bool ProcessOnce(const std::string& name) {
  static std::mutex& mutex = *new std::mutex;  // never destroyed: may be called during exit
  static std::set<std::string>& said = *new std::set<std::string>;
  std::lock_guard<std::mutex> lock(mutex);
  return said.insert(name).second;
}

}  // namespace threadleak
