// threadleak/vitest: `test: { setupFiles: ['threadleak/vitest'] }` puts every
// test in its own thread-leak scope (action 'raise'), or every file with
// configure({ scope: 'file' }).
//
// vitest runs its setup files again before each test file, and hooks they
// register belong to that file. `aroundEach` (vitest 4.1 and later) wraps a
// test's beforeEach hooks, the test, its afterEach hooks and their cleanups:
// the baseline is taken before the first of them and the check made after
// the last, whatever `sequence.hooks` says. Older vitest: beforeEach (this
// file's first root hook, so it runs first) and onTestFinished (after every
// afterEach). A file scope is an `aroundAll` (or beforeAll/afterAll).
import * as vitest from 'vitest';
import * as harness from './harness.js';
import type { Check, TestRunnerOptions } from './harness.js';

export type { TestRunnerOptions, TestScopeKind } from './harness.js';

const RUNNER = 'threadleak/vitest';

interface TaskLike {
  concurrent?: boolean;
}
interface ContextLike {
  task?: TaskLike;
  onTestFinished?: (fn: () => unknown) => void;
}

function isConcurrent(context: ContextLike | undefined): boolean {
  if (context?.task?.concurrent !== true) return false;
  harness.noteConcurrentTest(RUNNER);
  return true;
}

// Hooks are registered once per test file, however many copies of this module
// run for it (a setup file of the user's that imports it, listed in
// setupFiles too): the first registers, keyed by the file's collector.
const REGISTERED = Symbol.for('threadleak.vitest.registeredFor');

function firstForThisFile(): boolean {
  const holder = globalThis as { [REGISTERED]?: WeakSet<object> };
  const files = (holder[REGISTERED] ??= new WeakSet());
  // vitest 4.1 and later say which file is being collected (older ones register per copy).
  const runner = (vitest as unknown as { TestRunner?: { getCurrentSuite?: () => object | undefined } }).TestRunner;
  let collector: object | undefined;
  try {
    collector = runner?.getCurrentSuite?.();
  } catch {
    return true; // outside a test file's collection: vitest will say what is wrong
  }
  if (collector === undefined) return true;
  if (files.has(collector)) return false;
  files.add(collector);
  return true;
}

function register(): void {
  const api = vitest as unknown as Record<string, unknown>;
  if (typeof api.aroundEach === 'function') {
    (api.aroundEach as (fn: (run: () => Promise<void>, context: ContextLike) => Promise<void>) => void)(
      async (runTest, context) => {
        const check = isConcurrent(context) ? undefined : harness.openCheck(RUNNER, 'test');
        await runTest();
        await harness.finishCheck(check);
      },
    );
    (api.aroundAll as (fn: (run: () => Promise<void>) => Promise<void>) => void)(async (runSuite) => {
      const check = harness.openCheck(RUNNER, 'file');
      await runSuite();
      await harness.finishCheck(check);
    });
    return;
  }
  vitest.beforeEach((context: ContextLike) => {
    if (isConcurrent(context)) return;
    const check = harness.openCheck(RUNNER, 'test');
    if (check) (context.onTestFinished ?? vitest.onTestFinished)(() => harness.finishCheck(check));
  });
  let fileCheck: Check;
  vitest.beforeAll(() => {
    fileCheck = harness.openCheck(RUNNER, 'file');
  });
  vitest.afterAll(() => harness.finishCheck(fileCheck));
}

if (firstForThisFile()) register();

/**
 * Sets the options of every test's (or file's) scope, those open included:
 * those of noThreadLeaks (action default 'raise'), and `scope: 'test' | 'file'`.
 * Call it from a setup file; a bad option is a TypeError that names
 * it, and changes nothing.
 */
export function configure(options?: TestRunnerOptions): void {
  harness.configureTestRunner(RUNNER, options);
}
