// threadleak/register: `node --import threadleak/register app.js` (or `-r`).
//
// When it loads, the baseline of a thread-leak scope is taken, loading as
// little as it can: the scope machinery is loaded at exit, and only when a
// thread not in the baseline is alive then. The runtime's own threads are
// never reported, as in a scope, but the libuv pool is not pre-warmed for it
// (an app that never uses the pool should not get one): new threads that run
// Node's own code and are not Workers are left out at exit instead. At the process's 'exit' event the
// native threads started since then that are still alive are reported on
// stderr; the exit code changes only with
// THREADLEAK_ACTION=raise (a clean exit becomes 1). Then the native watchdog
// thread, started (and registered as threadleak's own) when this loaded, is
// armed: if the process is still alive THREADLEAK_EXIT_TIMEOUT_MS later, it
// writes every thread's native stack to stderr (see native/exit_watchdog.cc):
// the diagnosis of a process that hangs at exit.
//
// Under `threadleak run` (src/cli-run.ts), THREADLEAK_RUN_STATUS names a file
// the command watches: between the report and the arming of the watchdog, one
// line `exit <pid> <leaked threads>` is appended to it, so `run` knows that
// this process reached its exit (and kills it if it then hangs) and whether it
// leaked. Every process that loads this under `run` says so.
//
// Nothing here may break the program it is loaded into: every failure is one
// line on stderr, never an exception, and a Worker (preloads run in each
// Worker too) does nothing.
import { appendFileSync, writeSync } from 'node:fs';
import { armExitWatchdog, startExitWatchdog, threadKey } from '../binding.js';
import {
  formatEnvValueWarning,
  formatExitHangHeading,
  formatExitLeaks,
  formatRegisterFailed,
} from '../report.js';
import { isLibraryThread, listOwnThreads, registerLibraryThread, takeBaseline, type WorkerBaseline } from '../runtime.js';
import { portableState } from '../states.js';
import {
  ACTION_ENV,
  DEFAULT_EXIT_TIMEOUT_MS,
  EXIT_ACTIONS,
  EXIT_TIMEOUT_ENV,
  MAX_EXIT_TIMEOUT_MS,
  RUN_STATUS_ENV,
  type ExitAction,
} from './register-settings.js';

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

function readAction(): ExitAction {
  const value = process.env[ACTION_ENV];
  if (value === undefined || value === '') return 'warn';
  if ((EXIT_ACTIONS as readonly string[]).includes(value)) return value as ExitAction;
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

/** True when a thread not in the baseline is alive: the common clean exit needs nothing more. */
function anythingNew(baseline: WorkerBaseline): boolean {
  return listOwnThreads().some(
    (t) => !baseline.keys.has(t.key) && !isLibraryThread(t.key) && portableState(t.rawState) !== 'zombie',
  );
}

/** Reports the threads leaked at exit; returns how many. */
function reportLeaks(baseline: WorkerBaseline, action: string, code: number): number {
  if (!anythingNew(baseline)) return 0;
  // The scope machinery (stacks, creators, Workers, filters) is loaded only now.
  const threads = require('../threads.js') as typeof import('../threads.js');
  const options = threads.resolveThreadLeakOptions('threadleak/register', {});
  options.excludeRuntimeThreads = true;
  const scope = threads.openThreadLeakScope(options, baseline);
  const { waitForLeaksSync } = require('../scope.js') as typeof import('../scope.js');
  const leaks = waitForLeaksSync(() => scope.leaks(), EXIT_GRACE_PERIOD_MS);
  if (leaks.length === 0) return 0;
  writeStderr(formatExitLeaks(leaks));
  if (action === 'raise' && code === 0) process.exitCode = 1;
  return leaks.length;
}

/**
 * Under `threadleak run`: appends `exit <pid> <leaked>` to the file it watches
 * (named when this loaded). Writes to that file only, and never fails the program.
 */
function announceExit(statusPath: string | undefined, leaked: number): void {
  if (!statusPath) return;
  try {
    appendFileSync(statusPath, `exit ${process.pid} ${leaked}\n`);
  } catch {
    // run has ended (its folder is gone) or the file cannot be written: nothing to tell
  }
}

/** Starts the watchdog (it waits to be armed at exit); false when it could not start. */
function startWatchdog(timeoutMs: number): boolean {
  const started = startExitWatchdog(timeoutMs, formatExitHangHeading(timeoutMs, process.pid));
  if ('error' in started) {
    writeStderr(formatRegisterFailed('no hang-at-exit watchdog', started.error));
    return false;
  }
  registerLibraryThread(threadKey(started.threadId));
  return true;
}

function install(): void {
  const action = readAction();
  const exitTimeoutMs = readExitTimeout();
  const runStatusPath = process.env[RUN_STATUS_ENV];
  let baseline: WorkerBaseline;
  let watchdog = false;
  try {
    // The watchdog first: it is in the baseline, and registered as threadleak's own besides.
    watchdog = exitTimeoutMs > 0 && startWatchdog(exitTimeoutMs);
    baseline = takeBaseline(false);
  } catch (error) {
    writeStderr(formatRegisterFailed('no exit report', error));
    process.on('exit', () => announceExit(runStatusPath, 0));
    return;
  }
  process.on('exit', (code) => {
    let leaked = 0;
    try {
      leaked = reportLeaks(baseline, action, code);
    } catch (error) {
      writeStderr(formatRegisterFailed('the exit report failed', error));
    }
    announceExit(runStatusPath, leaked);
    if (!watchdog) return;
    try {
      armExitWatchdog();
    } catch (error) {
      writeStderr(formatRegisterFailed('the exit watchdog could not be armed', error));
    }
  });
}

/**
 * Preloads run in every Worker too, where this does nothing. (node:worker_threads
 * would tell, but loading it costs about 3 ms, a fifth of this module's budget:
 * Node replaces process.chdir in every Worker by a function flagged `disabled`.)
 */
function inWorker(): boolean {
  return (process.chdir as { disabled?: unknown }).disabled === true;
}

// Once per process, however many times and ways it is loaded (-r and --import, ES and CommonJS).
const holder = globalThis as { [LOADED]?: true };
if (!inWorker() && !holder[LOADED]) {
  holder[LOADED] = true;
  install();
}
