// What the test-runner integrations (vitest, jest, node:test) share: the
// options `configure()` sets, opening a leak scope for a test or a file, and
// closing it into the error that fails that test. Each runner's module only
// says *when* (its own hooks or events); this one says *what*.
//
// One state per JavaScript realm, kept on a global symbol rather than in this
// module: a runner may load the package twice (an ES and a CommonJS entry, or
// a bundled copy beside an external one), and both must see one set of options.
import { isMainThread } from 'node:worker_threads';
import { processOnce } from '../binding.js';
import { invalidOption, ThreadLeakError } from '../errors.js';
import { checkOptionsObject, rejectUnknownOptions } from '../options.js';
import { formatConcurrentTestsNotice, formatIntegrationUnsupported, formatSharedProcessWarning } from '../report.js';
import type { LeakAction } from '../scope.js';
import {
  openThreadLeakScope,
  resolveThreadLeakOptions,
  THREAD_LEAK_OPTION_NAMES,
  type ResolvedThreadOptions,
  type ThreadLeakOptions,
  type ThreadLeakScope,
} from '../threads.js';

/** What one scope covers: each test, or a whole test file. */
export type TestScopeKind = 'test' | 'file';

/** `configure()` options: those of `noThreadLeaks`, and `scope`. */
export interface TestRunnerOptions extends ThreadLeakOptions {
  /**
   * 'test' (default): every test in its own scope. 'file': one scope from
   * before the file's first hook to after its last, for libraries that keep
   * a pool of threads for a whole file.
   */
  scope?: TestScopeKind;
}

/** The action of the integrations unless configured: a leaking test fails. */
const DEFAULT_ACTION: LeakAction = 'raise';
const OPTION_NAMES = [...THREAD_LEAK_OPTION_NAMES, 'scope'] as const;
const SCOPE_KINDS: readonly TestScopeKind[] = ['test', 'file'];

interface HarnessState {
  options: ResolvedThreadOptions;
  scope: TestScopeKind;
}

const STATE_KEY = Symbol.for('threadleak.testRunnerState');

function resolve(where: string, options: unknown): HarnessState {
  const raw = checkOptionsObject(where, options);
  rejectUnknownOptions(where, raw, OPTION_NAMES);
  const scope = raw.scope ?? 'test';
  if (!SCOPE_KINDS.includes(scope as TestScopeKind)) {
    throw invalidOption(where, 'scope', scope, "'test' or 'file'");
  }
  const resolved = resolveThreadLeakOptions(where, raw, DEFAULT_ACTION);
  // Test files that share this process run in other Workers of it.
  resolved.excludeRuntimeThreads = !isMainThread;
  return { options: resolved, scope: scope as TestScopeKind };
}

function state(): HarnessState {
  const holder = globalThis as { [STATE_KEY]?: HarnessState };
  return (holder[STATE_KEY] ??= resolve('configure(options)', undefined));
}

/**
 * Sets the options of every scope, those open included (they are read when a
 * scope is checked): validated like noThreadLeaks's; a bad one is a TypeError
 * and changes nothing.
 */
export function configureTestRunner(runner: string, options: unknown): void {
  const next = resolve(`${runner}: configure(options)`, options);
  const current = state();
  Object.assign(current.options, next.options);
  current.scope = next.scope;
}

/** Says once per process that test files share it, when they do. */
function warnIfSharedProcess(runner: string): void {
  if (isMainThread || !processOnce('shared-process-warning')) return;
  process.emitWarning(formatSharedProcessWarning(runner), {
    type: 'ThreadLeakWarning',
    code: 'ERR_THREADLEAK_SHARED_PROCESS',
  });
}

/** A scope a runner opened for one test or one file. */
export interface OpenedCheck {
  readonly scope: ThreadLeakScope;
  readonly kind: TestScopeKind;
}

/** What openCheck gives: undefined when nothing is checked. */
export type Check = OpenedCheck | undefined;

/**
 * Opens a scope for a test or a file (the baseline is taken now) when the
 * configured scope is `kind`, or with `always` whatever it is (a file's
 * baseline taken before the file's code could configure it: checked only if
 * it did).
 */
export function openCheck(runner: string, kind: TestScopeKind, always = false): Check {
  const current = state();
  if (current.scope !== kind && !always) return undefined;
  try {
    warnIfSharedProcess(runner);
    return { scope: openThreadLeakScope(current.options), kind };
  } catch (error) {
    // No backend for this OS yet: every test would fail for it. Said once, then nothing is checked.
    if ((error as { code?: unknown }).code !== 'ERR_THREADLEAK_UNSUPPORTED_PLATFORM') throw error;
    if (!unsupportedSaid) {
      unsupportedSaid = true;
      process.emitWarning(formatIntegrationUnsupported(runner, (error as Error).message), {
        type: 'ThreadLeakWarning',
        code: 'ERR_THREADLEAK_UNSUPPORTED_PLATFORM',
      });
    }
    return undefined;
  }
}

let unsupportedSaid = false;

/**
 * Closes a check: the leak error (or what a filter predicate threw) that
 * fails the test, or undefined; nothing when the configured scope is no
 * longer its kind. It waits for the grace period only when something new is
 * still alive.
 */
export async function closeCheck(check: Check): Promise<unknown> {
  if (check === undefined || check.kind !== state().scope) return undefined;
  try {
    await check.scope.close();
    return undefined;
  } catch (error) {
    return withoutOwnFrames(error);
  }
}

/** closeCheck for a runner's hook: what would fail the test is thrown. */
export async function finishCheck(check: Check): Promise<void> {
  const error = await closeCheck(check);
  if (error !== undefined) throw error;
}

/** closeCheck, blocking while it waits: for a check made when the event loop has ended. */
export function closeCheckSync(check: Check): unknown {
  if (check === undefined || check.kind !== state().scope) return undefined;
  try {
    check.scope.closeSync();
    return undefined;
  } catch (error) {
    return withoutOwnFrames(error);
  }
}

/**
 * Where in threadleak the check threw says nothing about the test: the
 * runner shows the report alone (the test's name says where).
 */
function withoutOwnFrames(error: unknown): unknown {
  if (error instanceof ThreadLeakError) error.stack = `${error.name}: ${error.message}`;
  return error;
}

/**
 * Concurrent tests overlap, so no one of them can be given the threads the
 * others start: they are not checked one by one. Said once per process.
 */
export function noteConcurrentTest(runner: string): void {
  if (state().scope !== 'test' || !processOnce('concurrent-tests-notice')) return;
  process.emitWarning(formatConcurrentTestsNotice(runner), {
    type: 'ThreadLeakWarning',
    code: 'ERR_THREADLEAK_CONCURRENT_TESTS',
  });
}
