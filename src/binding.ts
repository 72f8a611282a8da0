// The only module that loads the native addon. Everything else imports the
// typed functions below; the addon's raw shapes stay private to this file.
import { createRequire } from 'node:module';
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
  captureStack(tid: number, timeoutMs: number, key?: string): RawStack;
  armExitWatchdog(timeoutMs: number, heading: string): { threadId: number } | { error: string };
  processOnce(name: string): boolean;
}

const SUPPORTED_PLATFORMS: ReadonlySet<string> = new Set(['linux', 'win32']);
const NUMBERS_PER_THREAD = 4;
const STRINGS_PER_THREAD = 3; // name, rawState, key

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  if (!SUPPORTED_PLATFORMS.has(process.platform)) throw unsupportedPlatformError(process.platform);
  // The package is CommonJS (the ES module entry re-exports it): __filename
  // is this file, in dist/ (or src/ under a test runner).
  const nodeGypBuild = createRequire(__filename)('node-gyp-build') as (dir: string) => Addon;
  addon = nodeGypBuild(join(__dirname, '..'));
  return addon;
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
 * The native stack of thread `tid` of this process, waiting at most `timeoutMs`
 * for it. With `key`, only while `tid` still names the thread that key names
 * ('exited' otherwise): never the stack of a thread that reused the id.
 */
export function captureStack(tid: number, timeoutMs: number, key?: string): RawStack {
  return load().captureStack(tid, timeoutMs, key);
}

/**
 * Starts the native hang-at-exit watchdog (native/exit_watchdog.cc): after
 * `timeoutMs`, if the process is still alive, it writes `heading` and every
 * thread's stack to stderr. Returns its thread id (0 when it did not say it in
 * time), or the reason it could not start.
 */
export function armExitWatchdog(timeoutMs: number, heading: string): { threadId: number } | { error: string } {
  return load().armExitWatchdog(timeoutMs, heading);
}

/** True the first time in this process (all Workers included) it is called with `name`. */
export function processOnce(name: string): boolean {
  return load().processOnce(name);
}
