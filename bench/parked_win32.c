// parked_win32.c — the Windows bench's thread source: groups of native threads
// parked on an event, so that bench/snapshot-win32.js can list 10, 100 and
// 1000 threads. Plain Node-API (C), built by that script with mingw-w64.
//
//   start(count) -> handle   (every thread has started when it returns)
//   stop(handle) -> boolean  (every thread has ended, within 10 s)
#include <node_api.h>
#include <stdlib.h>
#include <windows.h>

#define MAX_GROUPS 64

typedef struct {
  HANDLE wake;     // manual-reset: set by stop()
  HANDLE started;  // semaphore released once by each thread
  HANDLE* threads;
  uint32_t count;
} Group;

static Group groups[MAX_GROUPS];

static DWORD WINAPI Park(LPVOID arg) {
  Group* group = (Group*)arg;
  ReleaseSemaphore(group->started, 1, NULL);
  WaitForSingleObject(group->wake, INFINITE);
  return 0;
}

// Ends and closes every thread of `group` (waits at most 10 s in all).
static BOOL EndGroup(Group* group) {
  BOOL all = TRUE;
  SetEvent(group->wake);
  const ULONGLONG deadline = GetTickCount64() + 10000;
  for (uint32_t i = 0; i < group->count; i++) {
    const ULONGLONG now = GetTickCount64();
    const DWORD left = now < deadline ? (DWORD)(deadline - now) : 0;
    if (WaitForSingleObject(group->threads[i], left) != WAIT_OBJECT_0) all = FALSE;
    CloseHandle(group->threads[i]);
  }
  CloseHandle(group->wake);
  CloseHandle(group->started);
  free(group->threads);
  group->threads = NULL;
  group->count = 0;
  return all;
}

static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &count) != napi_ok || count == 0 || count > 100000) {
    napi_throw_type_error(env, NULL, "start(count): count from 1 to 100000");
    return NULL;
  }
  int slot = 0;
  while (slot < MAX_GROUPS && groups[slot].threads != NULL) slot++;
  if (slot == MAX_GROUPS) {
    napi_throw_error(env, NULL, "start(): too many groups");
    return NULL;
  }
  Group* group = &groups[slot];
  group->wake = CreateEventW(NULL, TRUE, FALSE, NULL);
  group->started = CreateSemaphoreW(NULL, 0, (LONG)count, NULL);
  group->threads = (HANDLE*)calloc(count, sizeof(HANDLE));
  if (!group->wake || !group->started || !group->threads) {
    if (group->wake) CloseHandle(group->wake);
    if (group->started) CloseHandle(group->started);
    free(group->threads);
    group->threads = NULL;
    napi_throw_error(env, NULL, "start(): out of resources");
    return NULL;
  }
  for (group->count = 0; group->count < count; group->count++) {
    // 64 KiB reserved per thread: 1000 threads stay small.
    HANDLE thread = CreateThread(NULL, 64 << 10, Park, group, STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
    if (thread == NULL) break;
    group->threads[group->count] = thread;
  }
  BOOL ok = group->count == count;
  for (uint32_t i = 0; ok && i < count; i++) {
    if (WaitForSingleObject(group->started, 10000) != WAIT_OBJECT_0) ok = FALSE;
  }
  if (!ok) {
    EndGroup(group);
    napi_throw_error(env, NULL, "start(): a thread could not be started");
    return NULL;
  }
  napi_create_uint32(env, (uint32_t)slot, &result);
  return result;
}

static napi_value Stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  uint32_t slot = MAX_GROUPS;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_uint32(env, argv[0], &slot) != napi_ok) slot = MAX_GROUPS;
  const BOOL ended = slot < MAX_GROUPS && groups[slot].threads != NULL && EndGroup(&groups[slot]);
  napi_get_boolean(env, ended != FALSE, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, Start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, Stop, NULL, &fn);
  napi_set_named_property(env, exports, "stop", fn);
  return exports;
}
