/* host.c — loads threadleak's musl prebuild outside Node and calls into it for real.
 *
 * No Node for musl is on the npm registry, so this program plays Node's part: a minimal fake
 * Node-API runtime. It defines every napi_* function the addon imports, exported from the
 * executable (-rdynamic), so the addon's imports bind to them when it is dlopen'ed with RTLD_NOW;
 * an import not defined here makes dlopen fail and name it (wanted: a loud failure). JS values are
 * tagged structs in a bump arena, never freed: undefined, null, boolean, number, string (bytes and
 * length: a '\0' inside survives), object (named properties, in order; an error is an object with
 * a class name), array, function (C callback + data), arraybuffer, typed array, external. Handle
 * scopes do nothing, references hold the value, finalizers never run, queued async work runs on
 * the main thread when the call that queued it returns, the global object is an empty object,
 * napi_call_function calls a C callback at once, and a throw is kept as the pending
 * exception, looked at after every call. Then it does what src/binding.ts does: calls
 * napi_register_module_v1 with an exports object, calls the functions the addon put there with an
 * extra thread ("musl-probe") running, and checks what they return (shapes: native/addon.cc).
 * Exit status 0 only when every check holds. Usage: host <threadleak.musl.node> (see run.js). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

/* The signatures are Node-API's: a fake leaves most env (and some other) parameters unused. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

enum tag { T_UNDEF, T_NULL, T_BOOL, T_NUM, T_STR, T_OBJ, T_ARR, T_FN, T_AB, T_TA, T_EXT };
struct prop { char *name; napi_value v; struct prop *next; };
struct napi_value__ {
  enum tag tag;
  double num;                    /* boolean (0/1), number */
  char *s; size_t len;           /* string bytes; object: its class ("TypeError"...) or NULL; arraybuffer: len */
  struct prop *props;            /* any object-like value */
  napi_value *items; size_t n;   /* array items; typed array: element count */
  napi_callback cb; void *data;  /* function; external's and arraybuffer's data */
  napi_value buf; size_t off; napi_typedarray_type tt;  /* typed array */
};
struct napi_env__ { napi_value exception; napi_extended_error_info last; char message[160]; };
struct napi_callback_info__ { napi_value self, *argv; size_t argc; void *data; };
struct napi_ref__ { napi_value v; uint32_t count; };
struct napi_handle_scope__ { int unused; };
struct napi_async_work__ { napi_async_execute_callback exec; napi_async_complete_callback done; void *data; int queued; };

static struct napi_env__ E;
static struct napi_handle_scope__ scope_token;
static struct napi_value__ undef_v = {.tag = T_UNDEF}, true_v = {.tag = T_BOOL, .num = 1}, false_v = {.tag = T_BOOL};
static struct napi_value__ arena[1 << 15];
static size_t arena_used, queued_count, works_run;
static struct napi_async_work__ *queued_work[16];

static napi_value mk(enum tag t) {
  if (arena_used == sizeof arena / sizeof arena[0]) { fprintf(stderr, "host: FAIL: value arena full\n"); exit(70); }
  arena[arena_used].tag = t;
  return &arena[arena_used++];
}
static int is_obj(napi_value v) { return v && v->tag >= T_OBJ; }
static int is(napi_value v, enum tag t) { return v && v->tag == t; }
static napi_status st(napi_status s, const char *what) {  /* what napi_get_last_error_info tells next */
  E.last.error_code = s;
  snprintf(E.message, sizeof E.message, "fake Node-API host: %s failed (status %d)", what, (int)s);
  E.last.error_message = s == napi_ok ? NULL : E.message;
  return s;
}
#define OK return st(napi_ok, __func__)
#define NEED(cond, status) do { if (!(cond)) return st(status, __func__); } while (0)
#define ARG(cond) NEED(cond, napi_invalid_arg)
#define RESULT(x) do { *r = (x); OK; } while (0)
static napi_value str_n(const char *s, size_t len) {
  napi_value v = mk(T_STR);
  v->s = malloc(len + 1), v->len = len;
  memcpy(v->s, s, len), v->s[len] = '\0';
  return v;
}
static size_t len_of(const char *s, size_t len) { return len == NAPI_AUTO_LENGTH ? strlen(s) : len; }
static struct prop **slot(napi_value o, const char *name) {
  struct prop **p = &o->props;
  while (*p && strcmp((*p)->name, name) != 0) p = &(*p)->next;
  return p;
}
static void set(napi_value o, const char *name, napi_value v) {
  struct prop **p = slot(o, name);
  if (!*p) *p = calloc(1, sizeof **p), (*p)->name = strdup(name);
  (*p)->v = v;
}
static napi_value get(napi_value o, const char *name) {
  struct prop *p = is_obj(o) ? *slot(o, name) : NULL;
  return p ? p->v : &undef_v;
}

/* ------------------------------------------------------------- values */
napi_status napi_get_undefined(napi_env env, napi_value *r) { RESULT(&undef_v); }
napi_status napi_get_boolean(napi_env env, bool b, napi_value *r) { RESULT(b ? &true_v : &false_v); }
napi_status napi_create_double(napi_env env, double d, napi_value *r) { *r = mk(T_NUM), (*r)->num = d; OK; }
napi_status napi_create_object(napi_env env, napi_value *r) { RESULT(mk(T_OBJ)); }
napi_status napi_create_string_utf8(napi_env env, const char *s, size_t len, napi_value *r) {
  ARG(r && (s || len == 0));
  RESULT(str_n(s ? s : "", len_of(s, len)));
}
napi_status napi_create_array_with_length(napi_env env, size_t n, napi_value *r) {
  *r = mk(T_ARR), (*r)->n = n, (*r)->items = calloc(n + 1, sizeof(napi_value));
  for (size_t i = 0; i < n; i++) (*r)->items[i] = &undef_v;
  OK;
}
napi_status napi_create_arraybuffer(napi_env env, size_t size, void **data, napi_value *r) {
  *r = mk(T_AB), (*r)->data = calloc(size + 1, 1), (*r)->len = size;
  if (data) *data = (*r)->data;
  OK;
}
napi_status napi_get_arraybuffer_info(napi_env env, napi_value ab, void **data, size_t *len) {
  ARG(is(ab, T_AB));
  if (data) *data = ab->data;
  if (len) *len = ab->len;
  OK;
}
napi_status napi_create_typedarray(napi_env env, napi_typedarray_type tt, size_t n, napi_value ab, size_t off, napi_value *r) {
  ARG(is(ab, T_AB) && tt == napi_float64_array && off % 8 == 0 && off + n * 8 <= ab->len);  /* all the addon makes */
  *r = mk(T_TA), (*r)->tt = tt, (*r)->buf = ab, (*r)->off = off, (*r)->n = n;
  OK;
}
napi_status napi_create_function(napi_env env, const char *name, size_t len, napi_callback cb, void *data, napi_value *r) {
  ARG(cb && r);
  *r = mk(T_FN), (*r)->cb = cb, (*r)->data = data;
  if (name) set(*r, "name", str_n(name, len_of(name, len)));
  OK;
}
static napi_status make_error(const char *cls, napi_value code, napi_value msg, napi_value *r) {
  ARG(is(msg, T_STR) && r);
  *r = mk(T_OBJ), (*r)->s = (char *)cls;
  set(*r, "message", msg);
  if (code && code->tag != T_UNDEF) set(*r, "code", code);
  OK;
}
napi_status napi_create_error(napi_env env, napi_value c, napi_value m, napi_value *r) { return make_error("Error", c, m, r); }
napi_status napi_create_type_error(napi_env env, napi_value c, napi_value m, napi_value *r) { return make_error("TypeError", c, m, r); }
napi_status napi_create_range_error(napi_env env, napi_value c, napi_value m, napi_value *r) { return make_error("RangeError", c, m, r); }
napi_status napi_typeof(napi_env env, napi_value v, napi_valuetype *r) {
  static const napi_valuetype types[] = {napi_undefined, napi_null, napi_boolean, napi_number, napi_string, napi_object,
                                         napi_object, napi_function, napi_object, napi_object, napi_external};
  ARG(v && r);
  RESULT(types[v->tag]);
}
napi_status napi_get_value_double(napi_env env, napi_value v, double *r) { NEED(is(v, T_NUM), napi_number_expected); RESULT(v->num); }
napi_status napi_get_value_int64(napi_env env, napi_value v, int64_t *r) {
  NEED(is(v, T_NUM), napi_number_expected);
  RESULT(!isfinite(v->num) ? 0 : v->num >= 0x1p63 ? INT64_MAX : v->num <= -0x1p63 ? INT64_MIN : (int64_t)v->num);
}
napi_status napi_get_value_string_utf8(napi_env env, napi_value v, char *buf, size_t size, size_t *r) {
  NEED(is(v, T_STR), napi_string_expected);
  size_t n = !buf ? v->len : size == 0 ? 0 : v->len < size - 1 ? v->len : size - 1;
  if (buf && size) memcpy(buf, v->s, n), buf[n] = '\0';
  if (r) *r = n;
  OK;
}

/* ------------------------------------------------------------- properties (string keys only) */
napi_status napi_set_named_property(napi_env env, napi_value o, const char *name, napi_value v) {
  ARG(is_obj(o) && name && v);
  set(o, name, v);
  OK;
}
napi_status napi_get_named_property(napi_env env, napi_value o, const char *name, napi_value *r) {
  ARG(is_obj(o) && name);
  RESULT(get(o, name));
}
napi_status napi_get_property(napi_env env, napi_value o, napi_value key, napi_value *r) {
  ARG(is(key, T_STR));
  return napi_get_named_property(env, o, key->s, r);
}
napi_status napi_has_property(napi_env env, napi_value o, napi_value key, bool *r) {
  ARG(is_obj(o) && is(key, T_STR));
  RESULT(*slot(o, key->s) != NULL);
}
napi_status napi_set_element(napi_env env, napi_value a, uint32_t i, napi_value v) {
  ARG(is(a, T_ARR) && v);
  if (i >= a->n) a->items = realloc(a->items, (i + 1) * sizeof(napi_value));
  while (a->n <= i) a->items[a->n++] = &undef_v;
  a->items[i] = v;
  OK;
}
napi_status napi_define_properties(napi_env env, napi_value o, size_t n, const napi_property_descriptor *d) {
  ARG(is_obj(o) && (n == 0 || d));
  for (size_t i = 0; i < n; i++) {
    const char *name = d[i].utf8name ? d[i].utf8name : is(d[i].name, T_STR) ? d[i].name->s : NULL;
    napi_value v = d[i].value;
    NEED(name && !d[i].getter && !d[i].setter, napi_generic_failure);  /* no accessors, no symbol keys */
    if (d[i].method && napi_create_function(env, name, NAPI_AUTO_LENGTH, d[i].method, d[i].data, &v) != napi_ok) return E.last.error_code;
    set(o, name, v ? v : &undef_v);
  }
  OK;
}

/* ------------------------------------------------------------- calls, exceptions, lifetimes */
__attribute__((noinline)) napi_value host_invoke(napi_value fn, napi_value self, size_t argc, napi_value *argv) {
  struct napi_callback_info__ info = {self, argv, argc, fn->data};
  napi_value r = fn->cb(&E, &info);
  while (queued_count > 0) {  /* the "event loop": async work queued by this call */
    struct napi_async_work__ *w = queued_work[--queued_count];
    w->queued = 0, works_run++;
    w->exec(&E, w->data);
    w->done(&E, napi_ok, w->data);  /* may delete w */
  }
  return r ? r : &undef_v;
}
napi_status napi_get_global(napi_env env, napi_value *r) {
  static napi_value global;
  RESULT(global ? global : (global = mk(T_OBJ)));
}
napi_status napi_call_function(napi_env env, napi_value self, napi_value fn, size_t argc, const napi_value *argv, napi_value *r) {
  ARG(is(fn, T_FN) && (argc == 0 || argv));
  NEED(!E.exception, napi_pending_exception);
  struct napi_callback_info__ info = {self, (napi_value *)argv, argc, fn->data};
  napi_value v = fn->cb(&E, &info);
  NEED(!E.exception, napi_pending_exception);
  if (r) *r = v ? v : &undef_v;
  OK;
}
napi_status napi_get_cb_info(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv, napi_value *self, void **data) {
  ARG(info);
  for (size_t i = 0; argv && argc && i < *argc; i++) argv[i] = i < info->argc ? info->argv[i] : &undef_v;
  if (argc) *argc = info->argc;
  if (self) *self = info->self;
  if (data) *data = info->data;
  OK;
}
napi_status napi_throw(napi_env env, napi_value error) {
  ARG(error);
  NEED(!E.exception, napi_pending_exception);
  E.exception = error;
  OK;
}
napi_status napi_is_exception_pending(napi_env env, bool *r) { RESULT(E.exception != NULL); }
napi_status napi_get_and_clear_last_exception(napi_env env, napi_value *r) { *r = E.exception ? E.exception : &undef_v, E.exception = NULL; OK; }
napi_status napi_get_last_error_info(node_api_basic_env env, const napi_extended_error_info **r) { *r = &E.last; return napi_ok; }
void napi_fatal_error(const char *loc, size_t loc_len, const char *msg, size_t msg_len) {
  fprintf(stderr, "host: FAIL: napi_fatal_error: %.*s: %.*s\n", (int)len_of(loc, loc_len), loc, (int)len_of(msg, msg_len), msg);
  abort();
}
napi_status napi_create_reference(napi_env env, napi_value v, uint32_t count, napi_ref *r) {
  ARG(is_obj(v) && r);  /* NAPI_VERSION 8: objects and functions only */
  *r = malloc(sizeof **r), (*r)->v = v, (*r)->count = count;
  OK;
}
napi_status napi_delete_reference(napi_env env, napi_ref ref) { free(ref); OK; }
napi_status napi_get_reference_value(napi_env env, napi_ref ref, napi_value *r) { ARG(ref); RESULT(ref->v); }
napi_status napi_open_handle_scope(napi_env env, napi_handle_scope *r) { RESULT(&scope_token); }
napi_status napi_close_handle_scope(napi_env env, napi_handle_scope s) { OK; }
napi_status napi_open_escapable_handle_scope(napi_env env, napi_escapable_handle_scope *r) { RESULT((void *)&scope_token); }
napi_status napi_close_escapable_handle_scope(napi_env env, napi_escapable_handle_scope s) { OK; }
napi_status napi_escape_handle(napi_env env, napi_escapable_handle_scope s, napi_value v, napi_value *r) { RESULT(v); }
napi_status napi_add_finalizer(node_api_basic_env env, napi_value o, void *data, node_api_basic_finalize cb, void *hint, napi_ref *r) {
  ARG(is_obj(o));  /* the finalizer never runs: nothing here is collected */
  return r ? napi_create_reference(env, o, 0, r) : st(napi_ok, __func__);
}
napi_status napi_create_async_work(napi_env env, napi_value res, napi_value name, napi_async_execute_callback exec,
                                   napi_async_complete_callback done, void *data, napi_async_work *r) {
  ARG(exec && done && r);
  *r = calloc(1, sizeof **r), (*r)->exec = exec, (*r)->done = done, (*r)->data = data;
  OK;
}
napi_status napi_queue_async_work(node_api_basic_env env, napi_async_work w) {
  ARG(w && !w->queued && queued_count < sizeof queued_work / sizeof queued_work[0]);
  w->queued = 1, queued_work[queued_count++] = w;
  OK;
}
napi_status napi_delete_async_work(napi_env env, napi_async_work w) { ARG(w && !w->queued); free(w); OK; }

/* ------------------------------------------------------------- the checks */
static int passed, failed, ready[2], release[2];
static __attribute__((format(printf, 2, 3))) void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs(ok ? "ok    " : "FAIL  ", stdout), vprintf(fmt, ap), putchar('\n');
  va_end(ap);
  ok ? passed++ : failed++;
}
static napi_value num(double d) { napi_value v = mk(T_NUM); v->num = d; return v; }
static const char *text_of(napi_value v) { return v->tag == T_STR ? v->s : ""; }
static const char *describe(napi_value e) {  /* "TypeError: message", for a thrown value */
  static char buf[300];
  snprintf(buf, sizeof buf, "%s: %s", e->tag == T_OBJ && e->s ? e->s : "a non-Error value", text_of(get(e, "message")));
  return buf;
}
/* exports[name](args...): a throw is a failure unless the caller takes it (thrown != NULL). */
static napi_value call(napi_value exports, const char *name, napi_value *thrown, size_t argc, napi_value *argv) {
  napi_value fn = get(exports, name), r = fn->tag == T_FN ? host_invoke(fn, exports, argc, argv) : &undef_v;
  if (fn->tag != T_FN) check(0, "exports.%s is not a function", name);
  if (thrown) *thrown = E.exception;
  else if (E.exception) check(0, "%s() threw %s", name, describe(E.exception));
  E.exception = NULL;
  return r;
}
/* Prints a captureStack result; true when it has frames, no error, and a frame named `want` (unless NULL). */
static int stack_ok(napi_value r, const char *want) {
  napi_value frames = get(r, "frames"), error = get(r, "error");
  int named = !want;
  if (error->tag != T_UNDEF) printf("      error %s: %s\n", text_of(error), text_of(get(r, "detail")));
  for (size_t i = 0; frames->tag == T_ARR && i < frames->n; i++) {
    napi_value f = frames->items[i], sym = get(f, "symbol"), mod = get(f, "module");
    named |= want && sym->tag == T_STR && strcmp(sym->s, want) == 0;
    if (i < 12) printf("      #%-2zu %-16s %s%s%s%s\n", i, text_of(get(f, "address")), sym->tag == T_STR ? sym->s : "?",
                       mod->tag == T_STR ? " in " : "", text_of(mod), get(f, "scanned") == &true_v ? " (scanned)" : "");
  }
  return frames->tag == T_ARR && frames->n > 0 && error->tag == T_UNDEF && named;
}
static double probe_waited_ms = -1;  /* what probeThreadpool passed to its done callback; -2: not one number */
static napi_value probe_done(napi_env env, napi_callback_info info) {
  napi_value arg;
  size_t n = 1;
  probe_waited_ms = napi_get_cb_info(env, info, &n, &arg, NULL, NULL) == napi_ok && n == 1 && is(arg, T_NUM) ? arg->num : -2;
  return NULL;
}
void *musl_probe_main(void *arg) {  /* the extra thread: named, then blocked in read() until released */
  pid_t tid = (pid_t)syscall(SYS_gettid);
  char c;
  pthread_setname_np(pthread_self(), "musl-probe");
  if (write(ready[1], &tid, sizeof tid) != sizeof tid) abort();
  while (read(release[0], &c, 1) < 0 && errno == EINTR) {}
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) return fprintf(stderr, "usage: host <threadleak.musl.node>\n"), 2;
  setvbuf(stdout, NULL, _IOLBF, 0);
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) return fprintf(stderr, "host: FAIL: dlopen: %s\n", dlerror()), 1;
  int32_t (*version)(void) = (int32_t (*)(void))dlsym(lib, "node_api_module_get_api_version_v1");
  napi_value (*init)(napi_env, napi_value) = (napi_value (*)(napi_env, napi_value))dlsym(lib, "napi_register_module_v1");
  if (!init) return fprintf(stderr, "host: FAIL: %s exports no napi_register_module_v1\n", argv[1]), 1;
  napi_value thrown, exports = mk(T_OBJ), r = init(&E, exports);
  char names[512] = "";
  for (struct prop *p = exports->props; p; p = p->next) snprintf(names + strlen(names), sizeof names - strlen(names), " %s", p->name);
  check(r == exports && !E.exception, "loaded %s (Node-API version %d); exports:%s", argv[1], version ? version() : -1, names);
  if (failed) return 1;

  pid_t pid = getpid(), probe_tid = 0;
  pthread_t probe;
  if (pipe(ready) || pipe(release) || pthread_create(&probe, NULL, musl_probe_main, NULL) ||
      read(ready[0], &probe_tid, sizeof probe_tid) != sizeof probe_tid) return perror("host: FAIL: starting the probe thread"), 1;

  r = call(exports, "currentThreadId", NULL, 0, NULL);
  check(r->tag == T_NUM && r->num == pid, "currentThreadId() = %.0f, the main thread (pid %d)", r->tag == T_NUM ? r->num : -1, (int)pid);

  r = call(exports, "listThreads", NULL, 1, (napi_value[]){num(0)});
  napi_value nums = get(r, "numbers"), text = get(r, "text");
  if (get(r, "error")->tag != T_UNDEF) printf("      error: %s\n", text_of(get(get(r, "error"), "message")));
  int shape = nums->tag == T_TA && nums->tt == napi_float64_array && nums->n % 4 == 0 && text->tag == T_STR;
  const double *d = shape ? (const double *)((const char *)nums->buf->data + nums->off) : NULL;
  const char *p = shape ? text->s : "", *end = p + (shape ? text->len : 0);
  size_t count = shape ? nums->n / 4 : 0;
  int main_seen = 0, probe_seen = 0, sane = 1;
  char probe_key[128] = "";
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double now_ms = now.tv_sec * 1e3 + now.tv_nsec / 1e6;
  for (size_t i = 0; i < count && p < end; i++) {
    const char *name = p, *state = name + strlen(name) + 1, *key = state + strlen(state) + 1;
    if (key >= end || (p = key + strlen(key) + 1) > end) { shape = 0; break; }
    double id = d[4 * i], user = d[4 * i + 1], sys = d[4 * i + 2], start = d[4 * i + 3];
    printf("      tid %-7.0f %-16s state %-2s user %3.0f ms  system %3.0f ms  started %5.2f s before now  key %s\n", id, name, state,
           user, sys, (now_ms - start) / 1e3, key);
    sane &= *state && user >= 0 && sys >= 0 && start > now_ms - 86400e3 && start < now_ms + 5e3;
    main_seen |= id == pid;
    if (id == probe_tid) probe_seen = strcmp(name, "musl-probe") == 0, snprintf(probe_key, sizeof probe_key, "%s", key);
  }
  check(shape && p == end && count > 0, "listThreads(0) = { numbers: Float64Array(%zu), text }: %zu threads, 3 strings each",
        shape ? nums->n : 0, count);
  check(main_seen, "the main thread %d is listed", (int)pid);
  check(probe_seen, "the probe thread %d is listed, named 'musl-probe'", (int)probe_tid);
  check(sane && count > 0, "every thread has a state, CPU times >= 0 and a start time in the last day");

  r = call(exports, "threadKey", NULL, 1, (napi_value[]){num(probe_tid)});
  check(*probe_key && strcmp(text_of(r), probe_key) == 0, "threadKey(%d) = '%s', the key listed", (int)probe_tid, text_of(r));
  r = call(exports, "captureStack", NULL, 2, (napi_value[]){num(pid), num(500)});
  check(stack_ok(r, "host_invoke"), "captureStack(%d, 500), the calling thread: frames, down to host_invoke", (int)pid);
  /* qemu-user (run.js sets MUSL_HOST_QEMU) lacks process_vm_readv, so the probe's stack copy and scan find nothing there:
     only the interrupted PC, frame #0, is checked then. */
  const char *qemu = getenv("MUSL_HOST_QEMU"), *want = qemu && *qemu ? NULL : "musl_probe_main";
  r = call(exports, "captureStack", NULL, 2, (napi_value[]){num(probe_tid), num(500)});
  check(stack_ok(r, want), "captureStack(%d, 500), the probe thread (signal probe): frames, %s", (int)probe_tid,
        want ? "down to musl_probe_main" : "frame #0 only under qemu-user");

  r = call(exports, "listThreads", &thrown, 1, (napi_value[]){str_n("0", 1)});
  check(thrown && strcmp(describe(thrown), "TypeError: listThreads(pid): pid must be a number") == 0,
        "listThreads('0') threw %s (a C++ exception, thrown as JS by node-addon-api)", thrown ? describe(thrown) : "nothing");
  r = call(exports, "prewarmThreadpool", NULL, 0, NULL);
  check(r->tag == T_UNDEF && works_run == 1, "prewarmThreadpool() queued async work, which ran (%zu)", works_run);

  napi_value done;
  size_t works_before = works_run;
  napi_create_function(&E, "done", NAPI_AUTO_LENGTH, probe_done, NULL, &done);
  r = call(exports, "probeThreadpool", NULL, 1, &done);
  check(r->tag == T_UNDEF && works_run == works_before + 1 && probe_waited_ms >= 0,
        "probeThreadpool(done) queued async work, which ran and called done(%.3f ms waited)", probe_waited_ms);
  r = call(exports, "probeThreadpool", &thrown, 0, NULL);
  check(thrown && strcmp(describe(thrown), "TypeError: probeThreadpool(done): done must be a function") == 0,
        "probeThreadpool() threw %s", thrown ? describe(thrown) : "nothing");

  close(release[1]);
  pthread_join(probe, NULL);
  printf("musl-host: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
