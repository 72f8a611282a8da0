// threadleak/node-test: `node --test --import threadleak/node-test` puts every
// test in its own thread-leak scope (action 'raise'), or every file with
// configure({ scope: 'file' }).
//
// node:test runs the test files in child processes that load this module
// first, so root hooks registered here apply to every test of the file. The
// baseline is a root beforeEach (this file's first, so it runs first). A root
// afterEach would run before the file's own root afterEach hooks, so it only
// adds the check as an `after` hook of the test itself (t.after): those run
// after every afterEach hook, and after the t.after cleanups the test body
// added. A file scope is a root `before` (run at once, before the file's code),
// checked by an `after` added from the root's own after hook, so it runs after
// the file's root `after` hooks too. Node 20 and 21 drop an error thrown by a
// root `after` hook, and 21 never runs one added while they run: there the
// file is checked when its process exits, and a leak is written to stderr and
// fails the file through the exit code.
import { after, afterEach, before, beforeEach, type SuiteContext, type TestContext } from 'node:test';
import { writeSync } from 'node:fs';
import * as harness from './harness.js';
import type { Check, TestRunnerOptions } from './harness.js';

export type { TestRunnerOptions, TestScopeKind } from './harness.js';

const RUNNER = 'threadleak/node-test';
const INSTALLED = Symbol.for('threadleak.node-test.installed');
const ROOT_AFTER_ERRORS_REPORTED = Number(process.versions.node.split('.')[0]) >= 22;


/** Node 20 and 21: the file's check when its process exits (the event loop has ended: a blocking wait). */
function finishFileAtExit(check: Check): void {
  const error = harness.closeCheckSync(check);
  if (error === undefined) return;
  try {
    writeSync(2, `${error instanceof Error && error.stack ? error.stack : String(error)}\n`);
  } catch {
    // stderr is closed: the exit code still says it
  }
  process.exitCode = 1;
}

/** True in the `node --test` process that only starts the test files (it runs no test itself). */
function isTestOrchestrator(): boolean {
  if (process.env.NODE_TEST_CONTEXT !== undefined) return false; // a child that runs a test file
  const args = process.execArgv;
  if (!args.includes('--test')) return false;
  return !args.includes('--test-isolation=none') && !args.includes('--experimental-test-isolation=none');
}

/**
 * Runs `check` after the hooks that follow this one: as an `after` hook of
 * the test the context is for (a suite's context has none: then now).
 */
function afterTheRest(context: SuiteContext | TestContext, check: () => Promise<void>): Promise<void> | void {
  if ('after' in context && typeof context.after === 'function') context.after(check);
  else return check();
}

function install(): void {
  const checks = new WeakMap<SuiteContext | TestContext, NonNullable<Check>>();
  let fileCheck: Check;
  // Node runs a root before hook added before the test file loads at once:
  // the file's baseline is taken before its code runs, and checked if the
  // file configured scope 'file'.
  before(() => {
    fileCheck = harness.openCheck(RUNNER, 'file', true);
  });
  after((context) => {
    if (ROOT_AFTER_ERRORS_REPORTED) return afterTheRest(context, () => harness.finishCheck(fileCheck));
    process.once('exit', () => finishFileAtExit(fileCheck));
  });
  beforeEach((context) => {
    const check = harness.openCheck(RUNNER, 'test');
    if (check) checks.set(context, check);
  });
  afterEach((context) => {
    const check = checks.get(context);
    if (check === undefined) return;
    checks.delete(context);
    return afterTheRest(context, () => harness.finishCheck(check));
  });
}

const holder = globalThis as { [INSTALLED]?: true };
if (!holder[INSTALLED] && !isTestOrchestrator()) {
  holder[INSTALLED] = true;
  install();
}

/**
 * Sets the options of every test's (or file's) scope, those open included:
 * those of noThreadLeaks (action default 'raise'), and `scope: 'test' | 'file'`.
 * Call it from a module loaded with --import; a bad option is a TypeError that names
 * it, and changes nothing.
 */
export function configure(options?: TestRunnerOptions): void {
  harness.configureTestRunner(RUNNER, options);
}
