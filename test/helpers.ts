// Shared test helpers: the native spawner fixture and bounded polling.
import { spawnSync, type SpawnSyncOptions, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterEach, expect } from 'vitest';
import { currentThreadId } from '../src/binding.js';
import { threadStack, type NativeStack } from '../src/index.js';

/**
 * Runs this process's Node with `args` to its end (spawnSync, UTF-8 output). A
 * child that could not be started at all (no pid: wine under load once failed
 * a process creation after 59 ms, with no output) is started again, twice at
 * most; a child that ran is never run again.
 */
export function runNode(args: readonly string[], options: Omit<SpawnSyncOptions, 'encoding'> = {}): SpawnSyncReturns<string> {
  const run = () => spawnSync(process.execPath, args, { ...options, encoding: 'utf8' });
  let result = run();
  for (let retry = 0; retry < 2 && result.error !== undefined && result.pid === 0; retry++) result = run();
  return result;
}

/**
 * Options of the spawner fixture. Linux and macOS: spawner.cc (on macOS the
 * Linux-only options sigwait, sigwaitMs, idle and vforkMs throw a TypeError
 * naming them); Windows: spawner_win32.cc, which throws a TypeError naming any
 * Linux-only option (marked so below).
 */
export interface SpawnOptions {
  count?: number;
  /** Linux and macOS: at most 15 bytes (the kernel's limit; the fixture keeps it on macOS too). Windows: UTF-8 of any length (SetThreadDescription). */
  name?: string;
  /** Block every signal in the new threads. Linux only. */
  blockSignals?: boolean;
  /** End by themselves after this many ms (default: wait for stop()). */
  lifetimeMs?: number;
  /**
   * Linux: 'pthread' (default), 'std' (std::thread), 'local' (a pthread entry
   * that is not exported) or 'nocfi' (a pthread whose body is called through
   * code without unwind tables). Windows: 'win32' (CreateThread, default),
   * 'crt' (_beginthreadex), 'std' or 'nocfi' (CreateThread, the body called
   * through x64 code without unwind information). `THREAD_KIND` is the default of this
   * platform; `FIXTURE_ENTRY` names the entry of each kind.
   */
  kind?: 'pthread' | 'std' | 'local' | 'nocfi' | 'win32' | 'crt';
  /** Sleep (nanosleep / Sleep) sleepMs in a loop instead of parking; see stats(). */
  sleepMs?: number;
  /** The threads' stack size (pthreads only). Linux only. */
  stackKb?: number;
  /** Park with only about this much stack left below (pthreads only). Linux only. */
  headroomKb?: number;
  /** Busy-loop instead of parking (Linux: state R, no system call). */
  spin?: boolean;
  /** Block every signal and take them with sigtimedwait in a loop; see stats().signals. Linux only. */
  sigwait?: boolean;
  /** How long one sigtimedwait of a `sigwait` thread waits (default 10 ms). Linux only. */
  sigwaitMs?: number;
  /** Run under SCHED_IDLE. Linux only. */
  idle?: boolean;
  /** vfork() in a loop a child that sleeps this long: the thread waits in state D; see stats().ticks. Linux only. */
  vforkMs?: number;
  /** The creator suspends each thread once it started (SuspendThread); stop() resumes it. Windows only. */
  suspended?: boolean;
}

export interface Spawner {
  start(options?: SpawnOptions): { handle: number; tids: number[] };
  stop(handle: number): boolean;
  churnStart(width?: number): void;
  churnStop(): number;
  /** Wake-ups and EINTR-interrupted sleeps of a `sleepMs` group, signals taken by a `sigwait` group; null for an unknown handle. */
  stats(handle: number): { ticks: number; interrupted: number; signals: number } | null;
  /** The sleepers of a `sleepMs` group block every signal from their next wake-up on. */
  blockSignals(handle: number): boolean;
  /** From now on process_vm_readv fails with EPERM in this whole process (a seccomp filter). Linux only: throws on macOS. */
  denyProcessVmReadv(): void;
  /** Installs a process-wide handler that counts deliveries of signal `sig`. */
  countSignal(sig: number): void;
  signalCount(sig: number): number;
  /** Windows only: ntdll's wine_get_version(), or null on real Windows. */
  wineVersion?(): string | null;
}

const require = createRequire(import.meta.url);
/**
 * The fixture addon: node-gyp's build for this machine when there is one, else
 * the cross-built prebuild for this platform (scripts/prebuild.js --only
 * <platform>-<arch> --fixture): what the wine and arm64 (qemu) runs use.
 */
export const spawnerPath = (() => {
  const build = './fixtures/spawner/build/Release/spawner.node';
  if (existsSync(fileURLToPath(new URL(build, import.meta.url)))) return require.resolve(build);
  const prebuild = `./fixtures/spawner/prebuilds/${process.platform}-${process.arch}/spawner.node`;
  return require.resolve(existsSync(fileURLToPath(new URL(prebuild, import.meta.url))) ? prebuild : build);
})();
export const spawner = require(spawnerPath) as Spawner;

/**
 * Under qemu-user (scripts/test-arm64.sh sets THREADLEAK_QEMU) the kernel's view of a thread, its
 * registers in /proc/self/task/N/syscall and its memory through process_vm_readv (which qemu 7.2
 * does not even implement), is qemu's own, not the emulated program's: what threadleak reads without
 * a signal is then not the thread's stack. Tests of that path run natively (x64 here, arm64 on GitHub).
 */
export const KERNEL_VIEW_EMULATED = process.env.THREADLEAK_QEMU === '1';

/** node-gyp's fixture links libstdc++ dynamically on Linux; the cross-built one (zig) has libc++ inside. */
export const FIXTURE_SHARED_LIBSTDCXX = process.platform === 'linux' && /[\\/]build[\\/]Release[\\/]/.test(spawnerPath);

/** True when this is Windows Node running under wine (which leaves thread states empty, among others). */
export const isWine = process.platform === 'win32' && (spawner.wineVersion?.() ?? null) !== null;

/**
 * The id of this process's main thread, when called on it: the pid on Linux,
 * a thread id of its own on Windows and macOS (the 64-bit thread_id there, not
 * the pid; asked of the addon, so it loads it).
 */
export function mainThreadId(): number {
  return process.platform === 'linux' ? process.pid : currentThreadId();
}

/**
 * The form of a thread's key: Linux `${tid}@${start ticks}`, Windows
 * `${id}@${creation time in ms since the epoch}`, exact to 0.1 us, macOS
 * `${thread_id}` (system-wide and never reused: the id alone).
 */
export const KEY_FORM =
  process.platform === 'win32' ? /^\d+@\d+(\.\d{1,4})?$/ : process.platform === 'darwin' ? /^\d+$/ : /^\d+@\d+$/;

/** Whether `key` is a key of thread `id` in this platform's form (see KEY_FORM): `${id}@...`, or on macOS `${id}` itself. */
export function isKeyOfId(key: string, id: number): boolean {
  return process.platform === 'darwin' ? key === String(id) : key.startsWith(`${id}@`);
}

/** The fixture's default thread kind on this platform. */
export const THREAD_KIND = process.platform === 'win32' ? 'win32' : 'pthread';

/**
 * The start routine attribution gives each kind of fixture thread: its entry
 * function. Windows names frames from export tables only, and a std::thread
 * enters the fixture through runtime code linked into spawner.node itself
 * (winpthreads and libstdc++ with mingw-w64, the static CRT with MSVC), which
 * exports no name: the creator module is known, the start routine is not.
 */
export const FIXTURE_ENTRY: Readonly<Record<'pthread' | 'std' | 'win32' | 'crt', string | undefined>> = {
  pthread: 'spawner_thread_main',
  std: process.platform === 'win32' ? undefined : 'spawner_std_thread_main',
  win32: 'spawner_win32_thread_main',
  crt: 'spawner_crt_thread_main',
};

/** The entry function of the fixture's default kind on this platform. */
export const DEFAULT_ENTRY: string = FIXTURE_ENTRY[THREAD_KIND]!;

/**
 * What a thread state assertion expects: `state` everywhere, except under
 * wine, whose NtQuerySystemInformation leaves thread states at 0 ('unknown').
 */
export function expectedState<S extends string>(state: S): S | 'unknown' {
  return isWine ? 'unknown' : state;
}

/** Whether `module` (a frame's or an origin's module path) is the spawner fixture, on any platform. */
export function isFixtureModule(module: string | undefined): boolean {
  return module !== undefined && /[\\/]spawner\.node$/.test(module);
}

/** A long (46 characters, 84 UTF-8 bytes) non-ASCII thread name: Windows takes it whole, Linux only 15 bytes (macOS 63, but the fixture refuses more than 15). */
export const LONG_NAME = 'tl-長い名前のスレッド-Àéîõü-çñß-漢字かなカナ-long-thread-name';

/**
 * The start of a CommonJS script for `node -e` (tests that need a fresh
 * process, or one that may crash): `addon` is threadleak's native addon as
 * node-gyp-build loads it, `spawner` the fixture.
 */
export const CHILD_PRELUDE = (() => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  return `
    const addon = require('node:module').createRequire(${JSON.stringify(`${root}package.json`)})('node-gyp-build')(${JSON.stringify(root)});
    const spawner = require(${JSON.stringify(spawnerPath)});
  `;
})();

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last result. */
export async function waitUntil(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * Fixture threads for one test file: everything started through `start` and
 * not stopped by the test is stopped after each test.
 */
export function fixtureThreads() {
  const handles = new Set<number>();
  afterEach(() => {
    for (const handle of handles) spawner.stop(handle);
    handles.clear();
  });
  return {
    start(options?: SpawnOptions) {
      const started = spawner.start(options);
      handles.add(started.handle);
      return started;
    },
    stop(handle: number): boolean {
      handles.delete(handle);
      return spawner.stop(handle);
    },
    stopAll(): void {
      for (const handle of handles) spawner.stop(handle);
      handles.clear();
    },
  };
}

// Never-hang checks only: a capture must come back within its timeout plus
// this (procfs reads and symbolization on a loaded CI machine).
export const SLACK_MS = 2000;

/**
 * What a capture came to, as a short key to count outcomes by: 'ok', or the
 * start of its error without the thread id ('blocks the stack probe',
 * 'was not probed', ...).
 */
export function stackOutcome(stack: NativeStack): string {
  return stack.error === undefined ? 'ok' : stack.error.replace(/^thread \d+ /, '').split(/[;:(,]/)[0]!.trim();
}

/** threadStack(id, { timeoutMs }) and how long it took. */
export function timed(id: number, timeoutMs: number): { stack: NativeStack; elapsedMs: number } {
  const t0 = performance.now();
  const stack = threadStack(id, { timeoutMs });
  return { stack, elapsedMs: performance.now() - t0 };
}

/** The creation stack of a Worker that piscina starts for the caller's startPool(), as V8 prints it. */
export const PISCINA_CREATION_STACK: readonly string[] = [
  'at new WorkerInfo (/app/node_modules/piscina/dist/worker_pool/index.js:38:23)',
  'at ThreadPool._addNewWorker (/app/node_modules/piscina/dist/index.js:139:28)',
  'at ThreadPool._ensureMinimumWorkers (/app/node_modules/piscina/dist/index.js:132:18)',
  'at new ThreadPool (/app/node_modules/piscina/dist/index.js:123:14)',
  'at new Piscina (/app/node_modules/piscina/dist/index.js:656:53)',
  'at startPool (file:///app/pool.mjs:4:31)',
  'at file:///app/pool.mjs:6:14',
];

/**
 * Why `unshare -fp --mount-proc` (a private pid namespace, where writing
 * tid - 1 to /proc/sys/kernel/ns_last_pid makes the kernel hand out tid next)
 * cannot be used here; '' when it can. Checked by trying it: it needs
 * CAP_SYS_ADMIN.
 */
export const unshareRefused = (() => {
  if (process.platform !== 'linux') return 'pid namespaces are Linux-only';
  const probe = spawnSync('unshare', ['-fp', '--mount-proc', 'true'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.status === 0) return '';
  return `unshare -fp --mount-proc is not permitted here (${(probe.error?.message ?? probe.stderr).trim() || `status ${probe.status}`})`;
})();

/**
 * Runs `script` (after CHILD_PRELUDE) in a new Node, as pid 1 of a private
 * pid namespace; expects a clean exit and returns the JSON of its last line.
 */
export function runInPidNamespace<T>(script: string): T {
  // pid 1 of a namespace ignores SIGTERM: SIGKILL on timeout.
  const child = spawnSync('unshare', ['-fp', '--mount-proc', process.execPath, '-e', `${CHILD_PRELUDE}\n${script}`], {
    encoding: 'utf8',
    timeout: 90_000,
    killSignal: 'SIGKILL',
  });
  expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
  return JSON.parse(child.stdout.trim().split('\n').pop()!) as T;
}

/** vitest 4 needs a shim to start on Node 21 (see scripts/vitest-on-node21.mjs): node arguments before vitest's. */
export const VITEST_NODE_ARGS: readonly string[] = process.versions.node.startsWith('21.')
  ? ['--import', fileURLToPath(new URL('../scripts/vitest-on-node21.mjs', import.meta.url))]
  : [];

/**
 * Makes `dir` a small project (CommonJS) with threadleak installed in its
 * node_modules as npm installs it: package.json, dist, src, and the addon this
 * machine built or the prebuild. Its other dependencies (node-gyp-build, the
 * runners) are found in the repository's node_modules above it.
 */
export function makeProjectWithPackage(dir: string): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  rmSync(dir, { recursive: true, force: true });
  const installed = `${dir}/node_modules/threadleak`;
  mkdirSync(installed, { recursive: true });
  writeFileSync(`${dir}/package.json`, JSON.stringify({ private: true, type: 'commonjs' }));
  for (const entry of ['package.json', 'dist', 'src', 'prebuilds', 'build/Release/threadleak.node']) {
    if (existsSync(`${root}${entry}`)) cpSync(`${root}${entry}`, `${installed}/${entry}`, { recursive: true });
  }
}
