// The only module that loads the native addon. Everything else imports the
// typed functions below; the addon's raw shapes stay private to this file.
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { unsupportedPlatformError } from './errors.js';
import type { NativeFrame } from './types.js';

/** An OS failure as the addon reports it: data, not an exception. */
export interface NativeOsError {
  code: string;
  errno: number;
  syscall: string;
  message: string;
}

/** One thread as the addon reports it, before any policy is applied. */
export interface RawThread {
  id: number;
  name: string;
  rawState: string;
  userCpuMs: number;
  systemCpuMs: number;
  /** NaN when the OS does not tell. */
  startTime: number;
  /** Names one thread for its whole life, never another one (see native/threads.h). */
  key: string;
}

/**
 * A native stack as the addon reports it. `error` is a stable code (see
 * native/stack.h): 'not-found', 'exited', 'signal-blocked', 'stopped',
 * 'uninterruptible', 'timeout', 'not-sent', 'busy', 'no-signal', 'not-probed', 'os-error',
 * 'unsupported'; `detail` completes it; `signal` is the probe signal.
 */
export interface RawStack {
  frames: NativeFrame[]; // innermost first, already the public shape
  error?: string;
  detail?: string;
  signal?: number;
  /**
   * The thread's start address, named like a frame, where the OS tells it
   * (Windows: ThreadQuerySetWin32StartAddress); absent on Linux.
   */
  start?: NativeFrame;
}

interface Addon {
  listThreads(pid: number): { numbers: Float64Array; text: string } | { error: NativeOsError };
  threadKey(tid: number): string;
  currentThreadId(): number;
  prewarmThreadpool(): void;
  probeThreadpool(done: (waitedMs: number) => void): void;
  captureStack(tid: number, timeoutMs: number, key?: string): RawStack;
  startExitWatchdog(timeoutMs: number, heading: string): { threadId: number } | { error: string };
  armExitWatchdog(): boolean;
  processOnce(name: string): boolean;
}

const SUPPORTED_PLATFORMS: ReadonlySet<string> = new Set(['linux', 'darwin', 'win32']);
const NUMBERS_PER_THREAD = 4;
const STRINGS_PER_THREAD = 3; // name, rawState, key

let addon: Addon | undefined;

/**
 * The addon's path when there is no choice to make: this machine's build, or
 * the one prebuild for this platform (node-gyp-build is not loaded then, which
 * saves threadleak/register a few ms of start-up). Otherwise undefined.
 */
function onlyCandidate(root: string): string | undefined {
  const own = join(root, 'build', 'Release', 'threadleak.node');
  if (!process.env.PREBUILDS_ONLY && existsSync(own)) return own;
  if (existsSync(join(root, 'build'))) return undefined; // a Debug build, or another layout: node-gyp-build decides
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  try {
    const files = readdirSync(dir);
    return files.length === 1 && files[0] === 'threadleak.node' ? join(dir, files[0]) : undefined;
  } catch {
    return undefined;
  }
}

let loadedFrom = '';

function load(): Addon {
  if (addon) return addon;
  if (!SUPPORTED_PLATFORMS.has(process.platform)) throw unsupportedPlatformError(process.platform);
  // The package is CommonJS (the ES module entry re-exports it): __filename
  // is this file, in dist/ (or src/ under a test runner).
  const root = join(__dirname, '..');
  const local = createRequire(__filename);
  const file = onlyCandidate(root) ?? (local('node-gyp-build') as { resolve(dir: string): string }).resolve(root);
  addon = local(file) as Addon;
  loadedFrom = file;
  return addon;
}

/** The addon's file, loaded first if it was not: what another thread loads to call into it (the event-loop watchdog). */
export function addonPath(): string {
  load();
  return loadedFrom;
}

/** Lists the threads of `pid` (0: this process), or returns the OS error. */
export function listThreads(pid: number): RawThread[] | NativeOsError {
  const result = load().listThreads(pid);
  if ('error' in result) return result.error;
  const { numbers, text } = result;
  const strings = text.split('\0');
  const count = numbers.length / NUMBERS_PER_THREAD;
  const out = new Array<RawThread>(count);
  for (let i = 0, n = 0, s = 0; i < count; i++, n += NUMBERS_PER_THREAD, s += STRINGS_PER_THREAD) {
    out[i] = {
      id: numbers[n]!,
      userCpuMs: numbers[n + 1]!,
      systemCpuMs: numbers[n + 2]!,
      startTime: numbers[n + 3]!,
      name: strings[s]!,
      rawState: strings[s + 1]!,
      key: strings[s + 2]!,
    };
  }
  return out;
}

/** The key listThreads(0) gives thread `tid` of this process now; '' when there is none. */
export function threadKey(tid: number): string {
  return load().threadKey(tid);
}

export function currentThreadId(): number {
  return load().currentThreadId();
}

export function prewarmThreadpool(): void {
  load().prewarmThreadpool();
}

/**
 * Queues one no-op libuv work item; `done` is called on this thread's event
 * loop with how long, in ms, it waited for a pool thread. Not called if the
 * environment shuts down first.
 */
export function probeThreadpool(done: (waitedMs: number) => void): void {
  load().probeThreadpool(done);
}

/**
 * The native stack of thread `tid` of this process, waiting at most `timeoutMs`
 * for it. With `key`, only while `tid` still names the thread that key names
 * ('exited' otherwise): never the stack of a thread that reused the id.
 */
export function captureStack(tid: number, timeoutMs: number, key?: string): RawStack {
  return load().captureStack(tid, timeoutMs, key);
}

/**
 * Starts the native hang-at-exit watchdog (native/exit_watchdog.cc), which
 * waits to be armed: then, after `timeoutMs`, if the process is still alive,
 * it writes `heading` and every thread's stack to stderr. Returns its thread
 * id, or why it could not start. One per process.
 */
export function startExitWatchdog(timeoutMs: number, heading: string): { threadId: number } | { error: string } {
  return load().startExitWatchdog(timeoutMs, heading);
}

/** Arms the watchdog (its timeout runs from now; the calling thread is the one exiting); false when none started. */
export function armExitWatchdog(): boolean {
  return load().armExitWatchdog();
}

/** True the first time in this process (all Workers included) it is called with `name`. */
export function processOnce(name: string): boolean {
  return load().processOnce(name);
}
