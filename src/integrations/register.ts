// threadleak/register: `node --import threadleak/register app.js` (or `-r`).
//
// When it loads, the baseline of a thread-leak scope is taken (the same rules:
// the libuv pool is pre-warmed, the runtime's own threads are in it). At the
// process's 'exit' event the native threads started since then that are still
// alive are reported on stderr; the exit code changes only with
// THREADLEAK_ACTION=raise (a clean exit becomes 1). Then a native watchdog
// thread is started: if the process is still alive THREADLEAK_EXIT_TIMEOUT_MS
// later, it writes every thread's native stack to stderr (see
// native/exit_watchdog.cc) — the diagnosis of a process that hangs at exit.
//
// Nothing here may break the program it is loaded into: every failure is one
// line on stderr, never an exception, and a Worker (preloads run in each
// Worker too) does nothing.
import { writeSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { armExitWatchdog, threadKey } from '../binding.js';
import {
  formatEnvValueWarning,
  formatExitHangHeading,
  formatExitLeaks,
  formatRegisterFailed,
} from '../report.js';
import { registerLibraryThread } from '../runtime.js';
import { waitForLeaksSync } from '../scope.js';
import { openThreadLeakScope, resolveThreadLeakOptions, type ThreadLeakScope } from '../threads.js';

export const ACTION_ENV = 'THREADLEAK_ACTION';
export const EXIT_TIMEOUT_ENV = 'THREADLEAK_EXIT_TIMEOUT_MS';
const EXIT_ACTIONS = ['warn', 'raise'] as const;
const DEFAULT_EXIT_TIMEOUT_MS = 5000;
const MAX_EXIT_TIMEOUT_MS = 86_400_000;
// How long threads still ending at exit are waited for (only when some are new).
const EXIT_GRACE_PERIOD_MS = 100;
const LOADED = Symbol.for('threadleak.register');

/** Writes to stderr synchronously (a pipe on Windows is asynchronous for process.stderr); never throws. */
function writeStderr(text: string): void {
  try {
    writeSync(2, text.endsWith('\n') ? text : `${text}\n`);
  } catch {
    // stderr is closed: nothing more can be said
  }
}

function readAction(): (typeof EXIT_ACTIONS)[number] {
  const value = process.env[ACTION_ENV];
  if (value === undefined || value === '') return 'warn';
  if ((EXIT_ACTIONS as readonly string[]).includes(value)) return value as (typeof EXIT_ACTIONS)[number];
  writeStderr(formatEnvValueWarning(ACTION_ENV, value, "'warn' or 'raise'", "'warn'"));
  return 'warn';
}

function readExitTimeout(): number {
  const value = process.env[EXIT_TIMEOUT_ENV];
  if (value === undefined || value === '') return DEFAULT_EXIT_TIMEOUT_MS;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (ms <= MAX_EXIT_TIMEOUT_MS) return ms;
  writeStderr(
    formatEnvValueWarning(EXIT_TIMEOUT_ENV, value, `a whole number of ms from 0 (off) to ${MAX_EXIT_TIMEOUT_MS}`, `${DEFAULT_EXIT_TIMEOUT_MS}`),
  );
  return DEFAULT_EXIT_TIMEOUT_MS;
}

function reportLeaks(scope: ThreadLeakScope, action: string, code: number): void {
  const leaks = waitForLeaksSync(() => scope.leaks(), EXIT_GRACE_PERIOD_MS);
  if (leaks.length === 0) return;
  writeStderr(formatExitLeaks(leaks));
  if (action === 'raise' && code === 0) process.exitCode = 1;
}

function armWatchdog(timeoutMs: number): void {
  const armed = armExitWatchdog(timeoutMs, formatExitHangHeading(timeoutMs, process.pid));
  if ('error' in armed) {
    writeStderr(formatRegisterFailed('the exit watchdog could not start', armed.error));
  } else if (armed.threadId > 0) {
    registerLibraryThread(threadKey(armed.threadId));
  }
}

function install(): void {
  const action = readAction();
  const exitTimeoutMs = readExitTimeout();
  let scope: ThreadLeakScope;
  try {
    scope = openThreadLeakScope(resolveThreadLeakOptions('threadleak/register', {}));
  } catch (error) {
    writeStderr(formatRegisterFailed('no exit report', error));
    return;
  }
  process.on('exit', (code) => {
    try {
      reportLeaks(scope, action, code);
    } catch (error) {
      writeStderr(formatRegisterFailed('the exit report failed', error));
    }
    if (exitTimeoutMs === 0) return;
    try {
      armWatchdog(exitTimeoutMs);
    } catch (error) {
      writeStderr(formatRegisterFailed('the exit watchdog could not start', error));
    }
  });
}

// Once per process, however many times and ways it is loaded (-r and --import, ES and CommonJS).
const holder = globalThis as { [LOADED]?: true };
if (isMainThread && !holder[LOADED]) {
  holder[LOADED] = true;
  install();
}
