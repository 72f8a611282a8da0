// addon.cc — the only N-API file: turns the plain C++ backends into JS values.
//
// Results cross the boundary in bulk to keep the per-thread cost near the
// cost of reading procfs: numbers go into one Float64Array and strings into
// one '\0'-joined string that src/binding.ts splits. OS failures are returned
// as an { error } object, never thrown, so that src/ formats every message.
//
// Quirk: a Worker can be terminated, or the process can exit, while a Worker
// runs one of these functions. Every Node-API call fails from then on, and
// node-addon-api turns the failure into a C++ exception that it then cannot
// throw into JavaScript: by default it throws again from its catch handler,
// which is std::terminate, an abort of the whole process. With
// NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS it drops the error when the
// environment is shutting down, which is all that can be done then.
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#include <napi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "exit_watchdog.h"
#include "stack.h"
#include "threads.h"

namespace {

constexpr size_t kNumbersPerThread = 4;  // id, userCpuMs, systemCpuMs, startTime

Napi::Object ErrorValue(Napi::Env env, const threadleak::OsError& error) {
  Napi::Object detail = Napi::Object::New(env);
  detail.Set("code", error.code);
  detail.Set("errno", error.errno_value);
  detail.Set("syscall", error.syscall);
  detail.Set("message", error.message);
  Napi::Object result = Napi::Object::New(env);
  result.Set("error", detail);
  return result;
}

// listThreads(pid: number) -> { numbers: Float64Array, text: string } | { error }
// text: name, rawState and key of each thread, each followed by '\0'.
Napi::Value ListThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "listThreads(pid): pid must be a number");
  }
  const int64_t pid = info[0].As<Napi::Number>().Int64Value();
  std::vector<threadleak::ThreadRecord> records;
  threadleak::OsError error;
  if (!threadleak::ListThreads(pid, &records, &error)) return ErrorValue(env, error);

  Napi::Float64Array numbers = Napi::Float64Array::New(env, records.size() * kNumbersPerThread);
  double* out = numbers.Data();
  std::string text;
  text.reserve(records.size() * 40);
  for (const auto& r : records) {
    *out++ = static_cast<double>(r.id);
    *out++ = r.user_cpu_ms;
    *out++ = r.system_cpu_ms;
    *out++ = r.has_start_time ? r.start_time_ms : std::numeric_limits<double>::quiet_NaN();
    // Names never contain '\0' on any OS, so it is a safe separator.
    text += r.name;
    text += '\0';
    text += r.raw_state;
    text += '\0';
    text += r.key;
    text += '\0';
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("numbers", numbers);
  result.Set("text", Napi::String::New(env, text.data(), text.size()));
  return result;
}

// threadKey(tid: number) -> string: the key listThreads(0) gives that thread
// now, '' when this process has no such thread.
Napi::Value ThreadKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "threadKey(tid): tid must be a number");
  }
  const double tid = info[0].As<Napi::Number>().DoubleValue();
  if (!(tid >= 1 && tid <= 9007199254740991.0 && std::floor(tid) == tid)) return Napi::String::New(env, "");
  return Napi::String::New(env, threadleak::CurrentThreadKey(static_cast<uint64_t>(tid)));
}

Napi::Value CurrentThreadId(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(threadleak::CurrentThreadId()));
}

// One no-op async work item, queued: the pre-warm's and the pool probe's.
// libuv creates its whole threadpool synchronously on the first submission
// (uv__work_submit -> init_once waits until every pool thread has started),
// so once the first item is queued the pool exists. The execute callback only
// reads the clock: no Node-API call is made off the main thread. The
// completion calls `done` (when there is one) with how long the item waited
// in libuv's queue for a pool thread, from the queue call to the start of its
// execute callback on a monotonic clock: the pool's saturation, measured
// directly. An item that could not run (the environment is shutting down)
// completes with a status other than napi_ok: done is not called then, only
// the item freed.
struct NoOpWork {
  napi_async_work work = nullptr;
  napi_ref done = nullptr;  // null for the pre-warm
  std::chrono::steady_clock::time_point queued;
  std::chrono::steady_clock::time_point started;
};

void FreeNoOpWork(napi_env env, NoOpWork* item) {
  if (item->done != nullptr) napi_delete_reference(env, item->done);
  if (item->work != nullptr) napi_delete_async_work(env, item->work);
  delete item;
}

void CompleteNoOpWork(napi_env env, napi_status work_status, void* data) {
  auto* item = static_cast<NoOpWork*>(data);
  napi_value done;
  napi_value global;
  napi_value waited;
  const double waited_ms = std::chrono::duration<double, std::milli>(item->started - item->queued).count();
  if (item->done != nullptr && work_status == napi_ok && napi_get_reference_value(env, item->done, &done) == napi_ok &&
      done != nullptr && napi_get_global(env, &global) == napi_ok && napi_create_double(env, waited_ms, &waited) == napi_ok) {
    // done never throws (src/monitor.ts catches its own errors); if it did,
    // Node reports the exception once this callback returns.
    napi_call_function(env, global, done, 1, &waited, nullptr);
  }
  FreeNoOpWork(env, item);
}

/** Queues one NoOpWork named `name`, calling `done` (may be null) when it completes. */
napi_status QueueNoOpWork(napi_env env, const char* name, napi_value done) {
  napi_value resource_name;
  napi_status status = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  if (status != napi_ok) return status;
  auto* item = new NoOpWork();
  if (done != nullptr) status = napi_create_reference(env, done, 1, &item->done);
  if (status == napi_ok) {
    status = napi_create_async_work(
        env, nullptr, resource_name,
        [](napi_env, void* data) { static_cast<NoOpWork*>(data)->started = std::chrono::steady_clock::now(); },
        CompleteNoOpWork, item, &item->work);
  }
  if (status == napi_ok) {
    item->queued = std::chrono::steady_clock::now();
    status = napi_queue_async_work(env, item->work);
  }
  if (status != napi_ok) FreeNoOpWork(env, item);
  return status;
}

// prewarmThreadpool(): when it returns, the pool exists (see NoOpWork).
Napi::Value PrewarmThreadpool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NAPI_THROW_IF_FAILED(env, QueueNoOpWork(env, "threadleak:prewarm", nullptr), Napi::Value());
  return env.Undefined();
}

// probeThreadpool(done: (waitedMs: number) => void): done is called with the
// item's wait for a pool thread (see NoOpWork).
Napi::Value ProbeThreadpool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "probeThreadpool(done): done must be a function");
  }
  NAPI_THROW_IF_FAILED(env, QueueNoOpWork(env, "threadleak:threadpool-probe", info[0]), Napi::Value());
  return env.Undefined();
}

Napi::Object FrameValue(Napi::Env env, const threadleak::StackFrame& f) {
  Napi::Object frame = Napi::Object::New(env);
  char hex[2 + 16 + 1];
  snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(f.address));
  frame.Set("address", hex);
  if (!f.symbol.empty()) frame.Set("symbol", f.symbol);
  if (!f.module.empty()) frame.Set("module", f.module);
  if (f.has_offset) frame.Set("offset", static_cast<double>(f.offset));
  if (f.scanned) frame.Set("scanned", true);
  return frame;
}

// captureStack(tid: number, timeoutMs: number, key?: string) ->
//   { frames: { address, symbol?, module?, offset?, scanned? }[], error?, detail?, signal?,
//     start?: { address, symbol?, module?, offset? } }
// start: the thread's start address where the OS tells it (Windows).
// Frames are innermost first; error is a stable code that src/ turns into text.
Napi::Value CaptureStack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber() ||
      (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsString())) {
    throw Napi::TypeError::New(env, "captureStack(tid, timeoutMs, key?): numbers, and a string key");
  }
  const double tid = info[0].As<Napi::Number>().DoubleValue();
  const double timeout_ms = info[1].As<Napi::Number>().DoubleValue();
  const std::string key = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  threadleak::StackResult stack;
  if (tid >= 1 && tid <= 9007199254740991.0 && std::floor(tid) == tid && std::isfinite(timeout_ms)) {
    threadleak::CaptureStack(static_cast<uint64_t>(tid), timeout_ms, key, &stack);
  } else {
    stack.error = "not-found";
  }
  Napi::Array frames = Napi::Array::New(env, stack.frames.size());
  for (size_t i = 0; i < stack.frames.size(); i++) {
    frames.Set(static_cast<uint32_t>(i), FrameValue(env, stack.frames[i]));
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("frames", frames);
  if (stack.start.address != 0) result.Set("start", FrameValue(env, stack.start));
  if (!stack.error.empty()) result.Set("error", stack.error);
  if (!stack.detail.empty()) result.Set("detail", stack.detail);
  if (stack.signal != 0) result.Set("signal", stack.signal);
  return result;
}

// startExitWatchdog(timeoutMs: number, heading: string) -> { threadId } | { error: string }
// armExitWatchdog() -> boolean. Used by threadleak/register; see exit_watchdog.cc.
Napi::Value StartExitWatchdog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "startExitWatchdog(timeoutMs, heading): a number and a string");
  }
  const double timeout_ms = info[0].As<Napi::Number>().DoubleValue();
  if (!(timeout_ms >= 0 && timeout_ms <= 86400000.0)) {
    throw Napi::RangeError::New(env, "startExitWatchdog(timeoutMs, heading): timeoutMs from 0 to 86400000");
  }
  std::string error;
  const uint64_t tid = threadleak::StartExitWatchdog(timeout_ms, info[1].As<Napi::String>().Utf8Value(), &error);
  Napi::Object result = Napi::Object::New(env);
  if (!error.empty()) {
    result.Set("error", error);
  } else {
    result.Set("threadId", static_cast<double>(tid));
  }
  return result;
}

Napi::Value ArmExitWatchdog(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), threadleak::ArmExitWatchdog(threadleak::CurrentThreadId()));
}

// processOnce(name: string) -> boolean: true the first time in this process.
Napi::Value ProcessOnce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "processOnce(name): a string");
  return Napi::Boolean::New(env, threadleak::ProcessOnce(info[0].As<Napi::String>().Utf8Value()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  threadleak::KeepAddonLoaded();
  exports.Set("listThreads", Napi::Function::New(env, ListThreads, "listThreads"));
  exports.Set("threadKey", Napi::Function::New(env, ThreadKey, "threadKey"));
  exports.Set("currentThreadId", Napi::Function::New(env, CurrentThreadId, "currentThreadId"));
  exports.Set("prewarmThreadpool", Napi::Function::New(env, PrewarmThreadpool, "prewarmThreadpool"));
  exports.Set("probeThreadpool", Napi::Function::New(env, ProbeThreadpool, "probeThreadpool"));
  exports.Set("captureStack", Napi::Function::New(env, CaptureStack, "captureStack"));
  exports.Set("startExitWatchdog", Napi::Function::New(env, StartExitWatchdog, "startExitWatchdog"));
  exports.Set("armExitWatchdog", Napi::Function::New(env, ArmExitWatchdog, "armExitWatchdog"));
  exports.Set("processOnce", Napi::Function::New(env, ProcessOnce, "processOnce"));
  return exports;
}

}  // namespace

NODE_API_MODULE(threadleak, Init)
