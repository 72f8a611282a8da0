// threadleak/vitest, threadleak/jest and threadleak/node-test, each in a real
// suite of its runner: a small project with the package installed (copied as
// npm installs it), one line of the runner's config, and test files that use a
// native library (the spawner fixture) cleanly, leak one of its threads, stop
// one in a root afterEach, configure a name filter by creator module, and
// check a whole file (scope 'file'). The runner's exit code, which tests
// failed, and what their failures say are checked from its own output.
import { mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_ENTRY, isWine, makeProjectWithPackage, runNode, spawnerPath, THREAD_KIND, VITEST_NODE_ARGS } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const base = `${root}test/fixtures/runners/build/integrations-${process.pid}`;
// Runners start slowly on a busy machine, and under wine far more slowly.
const RUNNER_TIMEOUT_MS = isWine ? 600_000 : 240_000;
const entry = FIXTURE_ENTRY[THREAD_KIND];
const fixture = realpathSync(spawnerPath);
/** What a report says of the fixture's leaked thread: its creator, by the attribution rule. */
const CREATOR = `native, ${entry === undefined ? 'started from' : `started by ${entry} in`} ${fixture}`;

type Runner = 'vitest' | 'jest' | 'node-test';

// The native library every test file uses: the fixture, started and stopped.
const NATIVE_MODULE = `
const spawner = require(${JSON.stringify(spawnerPath)});
const kind = ${JSON.stringify(THREAD_KIND)};
module.exports = {
  start: (name) => spawner.start({ count: 1, kind, name }).handle,
  stop: (handle) => spawner.stop(handle),
  isFixture: (module) => /[\\\\/]spawner\\.node$/.test(String(module)),
  gzip: () => new Promise((resolve, reject) => require('node:zlib').gzip('x', (error) => (error ? reject(error) : resolve()))),
};
`;

/** The runner's own imports at the top of a test file, and how `configure` is reached. */
function prelude(runner: Runner): string {
  switch (runner) {
    case 'vitest':
      return `import { test, afterEach, afterAll, vi } from 'vitest';
import { createRequire } from 'node:module';
import { configure } from 'threadleak/vitest';
const require = createRequire(import.meta.url);
const fakeTimers = () => vi.useFakeTimers();`;
    case 'jest':
      return `const { configure } = require('threadleak/jest');
const fakeTimers = () => jest.useFakeTimers();`;
    case 'node-test':
      return `const { test, afterEach, after: afterAll } = require('node:test');
const { configure } = require('threadleak/node-test');
const fakeTimers = (t) => t.mock.timers.enable({ apis: ['setTimeout', 'setImmediate', 'Date'] });`;
  }
}

/** The test files, by name (without the runner's suffix). */
function testFiles(runner: Runner): Record<string, string> {
  const head = `${prelude(runner)}\nconst lib = require('./native.cjs');\n`;
  return {
    // A clean test, one that leaks, one whose thread a root afterEach stops, one after them.
    leaky: `${head}
let handle;
afterEach(() => { if (handle !== undefined) lib.stop(handle); handle = undefined; });
test('uses a native library cleanly', async () => { await lib.gzip(); lib.stop(lib.start('tl-clean')); });
test('leaks a native thread', () => { lib.start('tl-leaked'); });
test('is cleaned up by a root afterEach', () => { handle = lib.start('tl-cleaned'); });
test('runs after the leak', () => {});
`,
    // Fake timers must not make the check wait forever, nor hide the leak.
    'fake-timers': `${head}
test('leaks with fake timers on', (t) => { fakeTimers(t); lib.start('tl-faked'); });
`,
    // A name filter that is a predicate on the creator module: the fixture's threads are not checked.
    filtered: `${head}
configure({ nameFilter: (thread) => !lib.isFixture(thread.origin.module) });
test('leaks a thread the filter leaves out', () => { lib.start('tl-filtered'); });
`,
    // scope 'file': a pool kept for the whole file and stopped in afterAll is no leak.
    pooled: `${head}
configure({ scope: 'file' });
let pool;
afterAll(() => lib.stop(pool));
test('starts a pool for the file', () => { pool = lib.start('tl-pool'); });
test('uses the pool', () => {});
`,
    // scope 'file': a thread left after the whole file fails the file.
    'file-leak': `${head}
configure({ scope: 'file' });
test('starts a thread the file never stops', () => { lib.start('tl-file-leak'); });
`,
  };
}

const SUFFIX: Record<Runner, string> = { vitest: '.vitest.mjs', jest: '.jest.cjs', 'node-test': '.node-test.cjs' };

function writeProject(runner: Runner, files: Record<string, string>, config: Record<string, string> = {}): string {
  const dir = `${base}/${runner}`;
  makeProjectWithPackage(dir);
  writeFileSync(`${dir}/native.cjs`, NATIVE_MODULE);
  for (const [name, text] of Object.entries(files)) writeFileSync(`${dir}/${name}${SUFFIX[runner]}`, text);
  for (const [name, text] of Object.entries(config)) writeFileSync(`${dir}/${name}`, text);
  return dir;
}

interface RunResult {
  status: number | null;
  output: string;
}

function run(dir: string, args: string[]): RunResult {
  const result = runNode(args, {
    cwd: dir,
    timeout: RUNNER_TIMEOUT_MS,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', CI: '1' },
  });
  expect(result.error).toBeUndefined();
  // eslint-disable-next-line no-control-regex
  return { status: result.status, output: `${result.stdout}\n${result.stderr}`.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r\n/g, '\n') };
}

/** Every test's outcome and failure text, by file and test name, from a runner's JSON or TAP output. */
interface Outcome {
  status: 'passed' | 'failed';
  failure: string;
}
type Outcomes = Record<string, Record<string, Outcome>>;

const fileName = (path: string) => path.replace(/\\/g, '/').split('/').pop()!.replace(/\..*$/, '');

/** vitest's and Jest's JSON reports have the same shape where it matters here. */
function outcomesFromJson(path: string): { tests: Outcomes; fileFailures: Record<string, string> } {
  const report = JSON.parse(readFileSync(path, 'utf8')) as {
    testResults: { name: string; message: string; assertionResults: { title: string; status: string; failureMessages: string[] }[] }[];
  };
  const tests: Outcomes = {};
  const fileFailures: Record<string, string> = {};
  for (const file of report.testResults) {
    const name = fileName(file.name);
    fileFailures[name] = file.message ?? '';
    tests[name] = Object.fromEntries(
      file.assertionResults.map((t) => [t.title, { status: t.status === 'passed' ? 'passed' : 'failed', failure: t.failureMessages.join('\n') }]),
    );
  }
  return { tests, fileFailures };
}

/** One node:test file's TAP: each top-level test's outcome, and its YAML block as the failure. */
function outcomesFromTap(tap: string): Record<string, Outcome> {
  const outcomes: Record<string, Outcome> = {};
  const lines = tap.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const match = /^(not ok|ok) \d+ - (.*)$/.exec(lines[i]!);
    if (!match) continue;
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && /^ {2}/.test(lines[j]!); j++) block.push(lines[j]!);
    const passed = match[1] === 'ok';
    outcomes[match[2]!] = { status: passed ? 'passed' : 'failed', failure: passed ? '' : block.join('\n') };
  }
  return outcomes;
}

function expectLeakyFile(tests: Record<string, Outcome>): void {
  expect(Object.fromEntries(Object.entries(tests).map(([name, t]) => [name, t.status]))).toEqual({
    'uses a native library cleanly': 'passed',
    'leaks a native thread': 'failed',
    'is cleaned up by a root afterEach': 'passed',
    'runs after the leak': 'passed',
  });
  const failure = tests['leaks a native thread']!.failure;
  expect(failure).toMatch(/1 thread leaked: started in the scope and still alive/);
  expect(failure).toContain('"tl-leaked"');
  expect(failure).toContain(CREATOR);
  expect(failure).toMatch(/#0 /);
}

function expectFakeTimersFile(tests: Record<string, Outcome>): void {
  expect(tests['leaks with fake timers on']?.status).toBe('failed');
  expect(tests['leaks with fake timers on']!.failure).toContain('"tl-faked"');
}

function expectConfiguredFiles(tests: Outcomes): void {
  expect(tests.filtered).toEqual({ 'leaks a thread the filter leaves out': { status: 'passed', failure: '' } });
  expect(Object.values(tests.pooled!).map((t) => t.status)).toEqual(['passed', 'passed']);
  // The file's own test passes: the leak is the file's.
  expect(tests['file-leak']!['starts a thread the file never stops']?.status).toBe('passed');
}

function expectFileLeak(text: string): void {
  expect(text).toMatch(/1 thread leaked: started in the scope and still alive/);
  expect(text).toContain('"tl-file-leak"');
  expect(text).toContain(CREATOR);
}

/** What every runner's run of testFiles() must come to; `fileLeak` is where the runner put the file's failure. */
function expectOutcomes(tests: Outcomes, fileLeak: string): void {
  expectLeakyFile(tests.leaky!);
  expectFakeTimersFile(tests['fake-timers']!);
  expectConfiguredFiles(tests);
  expectFileLeak(fileLeak);
}

/** Files that overlap in time when run as Workers of one process: each one's scopes see the others' Workers start and end. */
function sharedFiles(runner: Runner): Record<string, string> {
  const files: Record<string, string> = {};
  for (const n of [1, 2, 3, 4]) {
    files[`shared-${n}`] = `${prelude(runner)}\nconst lib = require('./native.cjs');
test('waits while other files run', async () => { lib.stop(lib.start('tl-shared')); await new Promise((r) => setTimeout(r, 300)); });
test('again', async () => { await new Promise((r) => setTimeout(r, 300)); });
`;
  }
  return files;
}

/** A run of sharedFiles(): every test passes, and the warning is said once for the whole process. */
function expectSharedRun({ status, output }: RunResult): void {
  expect({ status, leak: /ThreadLeakError/.test(output) }).toEqual({ status: 0, leak: false });
  expect(output.match(/ERR_THREADLEAK_SHARED_PROCESS/g)).toHaveLength(1);
  expect(output).toContain('test files share this process');
}

afterAll(() => { if (!process.env.KEEP) rmSync(base, { recursive: true, force: true }); });
beforeAll(() => mkdirSync(base, { recursive: true }));

describe('threadleak/vitest', () => {
  it('fails the leaking test with the report, passes the others, and honours configure()', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    // The ES and CommonJS entries are one module instance in vitest's module graph too: the same classes.
    const oneInstance = `import { test, expect } from 'vitest';
import { createRequire } from 'node:module';
import * as imported from 'threadleak';
const required = createRequire(import.meta.url)('threadleak');
test('shares one instance', () => {
  expect(imported.ThreadLeakError).toBe(required.ThreadLeakError);
  expect(imported.noThreadLeaks).toBe(required.noThreadLeaks);
});
`;
    const dir = writeProject('vitest', { ...testFiles('vitest'), 'one-instance': oneInstance }, {
      'vitest.config.mjs': `export default { test: { include: ['*.vitest.mjs'], pool: 'forks', setupFiles: ['threadleak/vitest'] } };`,
    });
    const { status, output } = run(dir, [...VITEST_NODE_ARGS, `${root}node_modules/vitest/vitest.mjs`, 'run', '--reporter=json', '--outputFile=report.json', '--reporter=default']);
    expect(status).toBe(1);
    const { tests, fileFailures } = outcomesFromJson(`${dir}/report.json`);
    expectOutcomes(tests, fileFailures['file-leak']!);
    expect(fileFailures.pooled).toBe('');
    expect(tests['one-instance']).toEqual({ 'shares one instance': { status: 'passed', failure: '' } });
    // The runner's own output shows the report as the failure of that test.
    expect(output).toMatch(/FAIL\s+leaky\.vitest\.mjs > leaks a native thread\nThreadLeakError: 1 thread leaked/);
    expect(output).not.toContain('ERR_THREADLEAK_SHARED_PROCESS');
  });

  it("in a shared process (pool 'threads') says so once and reports no other file's Worker", { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const dir = writeProject('vitest', sharedFiles('vitest'), {
      'vitest.config.mjs': `export default { test: { include: ['*.vitest.mjs'], pool: 'threads', maxWorkers: 3, setupFiles: ['threadleak/vitest'] } };`,
    });
    expectSharedRun(run(dir, [...VITEST_NODE_ARGS, `${root}node_modules/vitest/vitest.mjs`, 'run']));
  });
});

describe('threadleak/jest', () => {
  it('fails the leaking test with the report, passes the others, and honours configure()', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const dir = writeProject('jest', testFiles('jest'), {
      'jest.config.cjs': `module.exports = { testMatch: ['**/*.jest.cjs'], setupFilesAfterEnv: ['threadleak/jest'], transform: {}, watchman: false, cacheDirectory: __dirname + '/.jest-cache' };`,
    });
    const { status, output } = run(dir, [`${root}node_modules/jest/bin/jest.js`, '--ci', '--json', '--outputFile=report.json']);
    expect(status).toBe(1);
    const { tests, fileFailures } = outcomesFromJson(`${dir}/report.json`);
    expectOutcomes(tests, fileFailures['file-leak']!);
    expect(fileFailures.pooled).toBe('');
    expect(output).toMatch(/● leaks a native thread\n\n\s+ThreadLeakError: 1 thread leaked/);
  });

  it('with workerThreads says once that test files share the process, and reports no other file\'s Worker', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const dir = writeProject('jest', sharedFiles('jest'), {
      'jest.config.cjs': `module.exports = { testMatch: ['**/*.jest.cjs'], setupFilesAfterEnv: ['threadleak/jest'], workerThreads: true, maxWorkers: 3, transform: {}, watchman: false, cacheDirectory: __dirname + '/.jest-cache' };`,
    });
    expectSharedRun(run(dir, [`${root}node_modules/jest/bin/jest.js`, '--ci']));
  });
});

describe('threadleak/node-test', () => {
  it('fails the leaking test with the report, passes the others, and honours configure()', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const files = testFiles('node-test');
    const dir = writeProject('node-test', files);
    const tests: Outcomes = {};
    const outputs: Record<string, RunResult> = {};
    // One run per file, so that each file's TAP is its own.
    for (const name of Object.keys(files)) {
      outputs[name] = run(dir, ['--test', '--test-reporter=tap', '--import', 'threadleak/node-test', `${name}${SUFFIX['node-test']}`]);
      tests[name] = outcomesFromTap(outputs[name]!.output);
    }
    expect(Object.fromEntries(Object.entries(outputs).map(([name, r]) => [name, r.status]))).toEqual({
      leaky: 1,
      'fake-timers': 1,
      filtered: 0,
      pooled: 0,
      'file-leak': 1,
    });
    // Node 20 and 21 drop a root after hook's error: the leak is on stderr, which the
    // TAP reporter passes on as comments with backslashes escaped (Windows paths).
    const fileLeak = outputs['file-leak']!.output;
    expectOutcomes(tests, Number(process.versions.node.split('.')[0]) >= 22 ? fileLeak : fileLeak.replace(/\\\\/g, '\\'));
  });
});
