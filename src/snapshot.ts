// The snapshot layer: the threads of a process as plain data, no policy.
import { attributeStack } from './attribution.js';
import { captureStack, listThreads, type RawStack } from './binding.js';
import { demangleFrames } from './demangle.js';
import { invalidOption, systemError } from './errors.js';
import { checkOptionsObject, rejectUnknownOptions } from './options.js';
import { formatStackError, formatUninterruptedStack } from './report.js';
import { portableState } from './states.js';
import type { NativeStack, ThreadInfo } from './types.js';

export type { NativeFrame, NativeStack, ThreadInfo, ThreadState } from './types.js';

export interface ThreadsOptions {
  /** Another process to list; default: this process. */
  pid?: number;
}

const THREADS_OPTION_NAMES = ['pid'] as const;

function validatePid(options: unknown): number {
  const raw = checkOptionsObject('threads()', options);
  rejectUnknownOptions('threads()', raw, THREADS_OPTION_NAMES);
  const { pid } = raw;
  if (pid === undefined) return 0;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) {
    throw invalidOption('threads()', 'options.pid', pid, 'a positive safe integer');
  }
  return pid;
}

/** The threads of this process (or of `options.pid`), as plain data. */
export function threads(options?: ThreadsOptions): ThreadInfo[] {
  const pid = validatePid(options);
  const raw = listThreads(pid === process.pid ? 0 : pid);
  if (!Array.isArray(raw)) throw systemError('threads()', raw, pid === 0 ? undefined : pid);
  const out = new Array<ThreadInfo>(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const t = raw[i]!;
    const info: ThreadInfo = {
      id: t.id,
      key: t.key,
      name: t.name,
      state: portableState(t.rawState),
      rawState: t.rawState,
      userCpuMs: t.userCpuMs,
      systemCpuMs: t.systemCpuMs,
    };
    if (!Number.isNaN(t.startTime)) info.startTime = t.startTime;
    out[i] = info;
  }
  return out;
}

export interface ThreadStackOptions {
  /**
   * How long to wait for the thread to answer the probe, in ms (default 100,
   * at most 10000). 0 does not interrupt the thread: only what the kernel
   * shows (its PC and a scan of its stack) is read. Windows suspends the
   * thread for a moment instead, which interrupts no system call: every
   * timeout, 0 included, reads the whole stack.
   */
  timeoutMs?: number;
  /**
   * The thread's `key` from `threads()`: when the id now names another thread
   * (ids are reused), nothing is read and `error` says the thread exited.
   */
  key?: string;
}

export const DEFAULT_STACK_TIMEOUT_MS = 100;
export const MAX_STACK_TIMEOUT_MS = 10_000;

const STACK_OPTION_NAMES = ['timeoutMs', 'key'] as const;

function validateStackOptions(options: unknown): { timeoutMs: number; key?: string } {
  const raw = checkOptionsObject('threadStack()', options);
  rejectUnknownOptions('threadStack()', raw, STACK_OPTION_NAMES);
  const { timeoutMs = DEFAULT_STACK_TIMEOUT_MS, key } = raw;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_STACK_TIMEOUT_MS) {
    throw invalidOption('threadStack()', 'options.timeoutMs', timeoutMs, `a number from 0 to ${MAX_STACK_TIMEOUT_MS}`);
  }
  if (key !== undefined && typeof key !== 'string') {
    throw invalidOption('threadStack()', 'options.key', key, "a string (a ThreadInfo's key)");
  }
  return { timeoutMs, key };
}

/**
 * The native stack of thread `id` of this process (innermost frame first),
 * with the module and function that started the thread. Never throws for a
 * thread that cannot be read: `error` says why and `frames` holds what is
 * still known. Linux: the thread is interrupted by a real-time signal, so a
 * blocking call in it may return EINTR. Windows: the thread is suspended while
 * its registers and stack are copied, then resumed; its calls do not fail.
 */
export function threadStack(id: number, options?: ThreadStackOptions): NativeStack {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) {
    throw invalidOption('threadStack()', 'id', id, 'a positive safe integer');
  }
  const { timeoutMs, key } = validateStackOptions(options);
  return stackOf(id, timeoutMs, key).stack;
}

/** The stack as a NativeStack, and the addon's error code (undefined when the probe answered). */
function stackOf(
  id: number,
  timeoutMs: number,
  key: string | undefined,
  forLeakReport = false,
): { stack: NativeStack; code: string | undefined } {
  const raw = captureStack(id, timeoutMs, key);
  return { stack: nativeStackFromRaw(id, raw, timeoutMs, forLeakReport), code: raw.error };
}

/**
 * The public shape of what the addon's captureStack returned for thread `id`
 * with `timeoutMs` (also when another thread called it: the event-loop
 * watchdog). `forLeakReport`: a thread read only from the kernel's view is
 * said to be so, not to have failed.
 */
export function nativeStackFromRaw(id: number, raw: RawStack, timeoutMs: number, forLeakReport = false): NativeStack {
  const stack: NativeStack = { threadId: id, frames: demangleFrames(raw.frames) };
  const start = raw.start === undefined ? undefined : demangleFrames([raw.start])[0];
  const { module, startRoutine } = attributeStack(stack.frames, start);
  if (startRoutine !== undefined) stack.startRoutine = startRoutine;
  if (module !== undefined) stack.module = module;
  if (forLeakReport && raw.error === 'not-probed' && raw.frames.length > 0) {
    stack.error = formatUninterruptedStack(id);
  } else if (raw.error !== undefined) {
    stack.error = formatStackError(id, {
      code: raw.error,
      detail: raw.detail,
      signal: raw.signal,
      timeoutMs,
      recoveredFrames: raw.frames.length,
      platform: process.platform,
    });
  }
  return stack;
}

/**
 * The stack of thread `id` for a leak report: read first from what the kernel
 * shows (its PC and a scan of its stack), which never interrupts the thread,
 * and probed with the signal only when that shows nothing — i.e. when the
 * thread is not blocked in a system call, so no call of it can fail with
 * EINTR. Some libraries treat an interrupted poll() as fatal (@parcel/watcher
 * does); a leak report must never change what the leaked thread does.
 * Windows has no such risk: timeout 0 already reads the whole stack (the
 * thread is suspended for a moment, which no system call notices).
 */
export function leakReportStack(id: number, timeoutMs: number, key: string): NativeStack {
  // The kernel shows nothing while the thread is on a CPU: a thread that only
  // woke for a moment is back in its system call a little later.
  for (let attempt = 0; attempt < QUIET_ATTEMPTS; attempt++) {
    const quiet = stackOf(id, 0, key, true);
    if (quiet.stack.frames.length > 0 || quiet.code === 'exited' || quiet.code === 'not-found') return quiet.stack;
    Atomics.wait(quietPause, 0, 0, QUIET_PAUSE_MS);
  }
  return stackOf(id, timeoutMs, key).stack;
}

const QUIET_ATTEMPTS = 4;
const QUIET_PAUSE_MS = 0.5;
const quietPause = new Int32Array(new SharedArrayBuffer(4));
