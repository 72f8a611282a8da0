// threadleak/jest: `setupFilesAfterEnv: ['threadleak/jest']` puts every test
// in its own thread-leak scope (action 'raise'), or every file with
// configure({ scope: 'file' }).
//
// Jest runs its afterEach hooks in the order they were added, so a hook added
// here, before the test file's, would check before the file's own cleanup.
// Jest's test runner (jest-circus) dispatches events around each test instead
// ('test_started' before the first beforeEach, 'test_done' after the last
// afterEach) to handlers listed on the test file's global object, where its
// own are; one is added there, first, so a leak error is on the test before
// Jest reports it. A file scope opens at 'run_start' and is checked at
// 'run_finish' (after every afterAll), its error failing the file. Under a
// runner without those events (jest-jasmine2), plain beforeEach/afterEach
// hooks are used and that is said once.
import * as harness from './harness.js';
import { formatJestWithoutEvents } from '../report.js';
import type { Check, TestRunnerOptions } from './harness.js';

export type { TestRunnerOptions, TestScopeKind } from './harness.js';

const RUNNER = 'threadleak/jest';


interface CircusTest {
  concurrent?: boolean;
  errors: unknown[];
}
interface CircusEvent {
  name: string;
  test?: CircusTest;
}
interface CircusState {
  unhandledErrors: unknown[];
}
type CircusHandler = (event: CircusEvent, state: CircusState) => void | Promise<void>;

const EVENT_HANDLERS = Symbol.for('EVENT_HANDLERS');
const INSTALLED = Symbol.for('threadleak.jest.installed');

function eventHandler(): CircusHandler {
  const checks = new WeakMap<CircusTest, NonNullable<Check>>();
  let fileCheck: Check;
  // A handler that throws would break Jest's run: what fails here fails the test (or the file).
  const open = (kind: 'test' | 'file', errors: unknown[]): Check => {
    try {
      return harness.openCheck(RUNNER, kind);
    } catch (error) {
      errors.push(error);
      return undefined;
    }
  };
  return async (event, state) => {
    switch (event.name) {
      case 'run_start':
        fileCheck = open('file', state.unhandledErrors);
        return;
      case 'test_started': {
        const test = event.test!;
        if (test.concurrent) {
          harness.noteConcurrentTest(RUNNER);
          return;
        }
        const check = open('test', test.errors);
        if (check) checks.set(test, check);
        return;
      }
      case 'test_done': {
        const test = event.test!;
        const check = checks.get(test);
        checks.delete(test);
        const error = await harness.closeCheck(check);
        if (error !== undefined) test.errors.push(error);
        return;
      }
      case 'run_finish': {
        const error = await harness.closeCheck(fileCheck);
        fileCheck = undefined;
        if (error !== undefined) state.unhandledErrors.push(error);
        return;
      }
    }
  };
}

interface JestHooks {
  beforeEach(fn: () => unknown): void;
  afterEach(fn: () => unknown): void;
  beforeAll(fn: () => unknown): void;
  afterAll(fn: () => unknown): void;
}

/** Without jest-circus's events: hooks, which the file's own root afterEach hooks follow. */
function installHooks(): void {
  const hooks = globalThis as unknown as Partial<JestHooks>;
  if (typeof hooks.beforeEach !== 'function') {
    throw new Error(`${RUNNER} must be loaded by Jest, from setupFilesAfterEnv (Jest's hooks are not defined here)`);
  }
  process.emitWarning(formatJestWithoutEvents(RUNNER), { type: 'ThreadLeakWarning', code: 'ERR_THREADLEAK_JEST_HOOKS' });
  let check: Check;
  let fileCheck: Check;
  hooks.beforeAll!(() => {
    fileCheck = harness.openCheck(RUNNER, 'file');
  });
  hooks.beforeEach(() => {
    check = harness.openCheck(RUNNER, 'test');
  });
  hooks.afterEach!(() => harness.finishCheck(check));
  hooks.afterAll!(() => harness.finishCheck(fileCheck));
}

// Once per test file (each has its own global object), however it is loaded.
const holder = globalThis as { [INSTALLED]?: true; [EVENT_HANDLERS]?: CircusHandler[] };
if (!holder[INSTALLED]) {
  holder[INSTALLED] = true;
  const handlers = holder[EVENT_HANDLERS];
  if (Array.isArray(handlers)) handlers.unshift(eventHandler());
  else installHooks();
}

/**
 * Sets the options of every test's (or file's) scope, those open included:
 * those of noThreadLeaks (action default 'raise'), and `scope: 'test' | 'file'`.
 * Call it from a setupFilesAfterEnv file; a bad option is a TypeError that names
 * it, and changes nothing.
 */
export function configure(options?: TestRunnerOptions): void {
  harness.configureTestRunner(RUNNER, options);
}
