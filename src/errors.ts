// Every error class and error code threadleak throws. Messages come from report.ts.
import {
  formatInvalidOption,
  formatWatchdogStartFailed,
  formatOsError,
  formatUnsupportedPlatform,
} from './report.js';
import type { EventLoopBlock, LeakedThread, LeakInfo } from './types.js';

/** Base class of every leak threadleak reports by throwing. */
export class LeakError extends Error {
  override name = 'LeakError';
}

/** An OS failure while reading threads: carries the OS's code, errno and syscall. */
export interface ThreadleakSystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  pid?: number;
}

export function systemError(
  what: string,
  detail: { code: string; errno: number; syscall: string; message: string },
  pid?: number,
): ThreadleakSystemError {
  const error = new Error(formatOsError(what, detail, pid)) as ThreadleakSystemError;
  error.code = detail.code;
  error.errno = detail.errno;
  error.syscall = detail.syscall;
  if (pid !== undefined) error.pid = pid;
  return error;
}

/** A bad argument or option: a TypeError with code ERR_INVALID_ARG_VALUE naming it. */
export function invalidOption(
  where: string,
  option: string,
  value: unknown,
  expected: string,
): TypeError & { code: string } {
  const error = new TypeError(formatInvalidOption(where, option, value, expected)) as TypeError & {
    code: string;
  };
  error.code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

/** noEventLoopBlocking()'s watchdog thread did not start. */
export function watchdogStartError(timeoutMs: number): Error & { code: string } {
  const error = new Error(formatWatchdogStartFailed(timeoutMs)) as Error & { code: string };
  error.code = 'ERR_THREADLEAK_WATCHDOG_START';
  return error;
}

export function unsupportedPlatformError(platform: string): Error & { code: string } {
  const error = new Error(formatUnsupportedPlatform(platform)) as Error & { code: string };
  error.code = 'ERR_THREADLEAK_UNSUPPORTED_PLATFORM';
  return error;
}

/** Thrown by a thread-leak scope with action 'raise': every thread that leaked. */
export class ThreadLeakError extends LeakError {
  override name = 'ThreadLeakError';
  readonly code = 'ERR_THREAD_LEAK';
  readonly leaks: LeakedThread[];

  constructor(message: string, leaks: LeakedThread[]) {
    super(message);
    this.leaks = leaks;
  }
}

/** Thrown by a resource-leak scope with action 'raise': every tracked resource that leaked. */
export class ResourceLeakError extends LeakError {
  override name = 'ResourceLeakError';
  readonly code = 'ERR_RESOURCE_LEAK';

  constructor(message: string, readonly leaks: LeakInfo[]) {
    super(message);
  }
}

/** Thrown by an event-loop blocking scope with action 'raise': every block, with the stacks seen during it. */
export class EventLoopBlockError extends LeakError {
  override name = 'EventLoopBlockError';
  readonly code = 'ERR_EVENT_LOOP_BLOCKED';

  constructor(message: string, readonly blocks: EventLoopBlock[]) {
    super(message);
  }
}
