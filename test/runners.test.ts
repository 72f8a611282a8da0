// A leak report as Jest and vitest print it: every line of the message must
// reach the terminal, in order, unchanged. Test runners take the first line of
// a message that looks like a JavaScript stack frame for the start of the
// stack, cut the message there and rewrite what follows (Jest 30 cut the old
// format at the first C++ name with "::" and made later paths relative).
// A tiny project is generated, with one test that throws a ThreadLeakError
// built from a realistic report and one that really leaks a std::thread of
// the fixture and a Worker, and one whose event loop really blocks in a
// busy function (its stack read inside the runner's module sandbox); each
// writes its message to a file beside it.
import { mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_ENTRY, PISCINA_CREATION_STACK, runNode, spawnerPath, VITEST_NODE_ARGS } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = `${root}test/fixtures/runners/build/${process.pid}`;
// Jest and vitest start slowly on a machine that other builds keep busy.
const RUNNER_TIMEOUT_MS = 240_000;

// Shared by both runners' test files: the two errors, each message also saved for the check.
const LEAKS_MODULE = `
const { writeFileSync } = require('node:fs');
const { Worker } = require('node:worker_threads');
const { noEventLoopBlocking, noThreadLeaks, ThreadLeakError } = require(${JSON.stringify(`${root}dist/index.js`)});
const { formatThreadLeaks } = require(${JSON.stringify(`${root}dist/report.js`)});
const spawner = require(${JSON.stringify(spawnerPath)});

const LIBC = '/usr/lib/x86_64-linux-gnu/libc.so.6';
const FOO = '/app/node_modules/foo/build/Release/foo.node';
const LANCE = '/app/node_modules/@lancedb/lancedb/lancedb.linux-x64-gnu.node';

function realisticError() {
  const now = Date.now();
  const leaks = [
    { id: 4100, name: 'foo-pool', state: 'sleeping', startTime: now - 120,
      origin: { kind: 'native', module: FOO, startRoutine: 'foo::Pool::Run()' },
      stack: { threadId: 4100, module: FOO, startRoutine: 'foo::Pool::Run()', frames: [
        { address: '0x7f3a1c8a65d8', symbol: 'pthread_cond_wait', module: LIBC, offset: 488 },
        { address: '0x7f3a1c4297bb', symbol: 'foo::Queue::Pop(std::chrono::duration<long, std::ratio<1l, 1000l> >)', module: FOO, offset: 187 },
        { address: '0x7f3a1c4297cc', symbol: 'foo::Pool::Run()', module: FOO, offset: 33 },
        { address: '0x7f3a1c42a001', symbol: 'std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (foo::Pool::*)(), foo::Pool*> > >::_M_run()', module: FOO, offset: 17 },
        { address: '0x7f3a1c8a71f5', module: LIBC, offset: 561653, scanned: true },
      ] } },
    { id: 4102, name: 'lance-worker', state: 'sleeping', startTime: now - 90,
      origin: { kind: 'native', module: LANCE, startRoutine: 'tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}' },
      stack: { threadId: 4102, frames: [
        { address: '0x7f3a1c91d4e9', symbol: 'syscall', module: LIBC, offset: 25 },
        { address: '0x7f3a1a1b2c3d', symbol: 'parking_lot_core::thread_parker::imp::ThreadParker::futex_wait', module: LANCE, offset: 93, scanned: true },
        { address: '0x7f3a1a1b3c4d', symbol: 'tokio::runtime::blocking::pool::Inner::run', module: LANCE, offset: 412, scanned: true },
        { address: '0x7f3a1a1b4d5e', symbol: 'tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}', module: LANCE, offset: 151, scanned: true },
      ], error: 'thread 4102 is blocked in a system call, so it was read without a signal (which could make that call fail with EINTR): frames from its PC and a scan of its stack (scanned: true)' } },
    { id: 4105, name: 'WorkerThread', state: 'running', origin: { kind: 'worker', creationStack: ${JSON.stringify(PISCINA_CREATION_STACK.join('\n'))} } },
  ];
  return new ThreadLeakError(formatThreadLeaks(leaks, 100, now), leaks);
}

async function realLeakError() {
  const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0 });
  const { handle } = spawner.start({ count: 1, kind: 'std', name: 'tl-runner' });
  const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
  await new Promise((resolve) => worker.once('online', resolve));
  try {
    await scope.close();
    return new Error('no leak was reported');
  } catch (error) {
    return error;
  } finally {
    spawner.stop(handle);
    await worker.terminate();
  }
}

function busyInRunner(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

// A real block, its stack read from inside the runner's sandbox (Jest's vm context).
async function blockingError() {
  const scope = noEventLoopBlocking({ action: 'raise', thresholdMs: 100 });
  busyInRunner(300);
  try {
    await scope.close();
    return new Error('no block was reported');
  } catch (error) {
    return error;
  }
}

function save(name, error) {
  writeFileSync(__dirname + '/' + name + '.message.txt', error.message);
  return error;
}

module.exports = { blockingError, realisticError, realLeakError, save };
`;

function testFile(runner: 'jest' | 'vitest'): string {
  const name = (test: string) => JSON.stringify(`${runner}-${test}`);
  const prelude =
    runner === 'vitest'
      ? "import { test } from 'vitest';\nimport { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);"
      : '';
  return `
${prelude}
const { blockingError, realisticError, realLeakError, save } = require('./leaks.cjs');
test('realistic', () => { throw save(${name('realistic')}, realisticError()); });
test('real', async () => { throw save(${name('real')}, await realLeakError()); });
test('blocking', async () => { throw save(${name('blocking')}, await blockingError()); });
`;
}

function run(command: string, args: string[]): string {
  const shim = command.includes('vitest') ? VITEST_NODE_ARGS : [];
  const result = runNode([...shim, command, ...args], {
    cwd: dir,
    timeout: RUNNER_TIMEOUT_MS,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', CI: '1' },
  });
  expect(result.error).toBeUndefined();
  expect(result.status).toBe(1); // every test fails, with its report
  // eslint-disable-next-line no-control-regex
  return `${result.stdout}\n${result.stderr}`.replace(/\x1b\[[0-9;]*m/g, '');
}

/**
 * `message` printed whole: its lines one after the other, each a whole line
 * of `output` (runners indent the message, and put the error's name before
 * its first line). Jest, cutting a message, leaves an empty line at the cut.
 */
function expectPrintedWhole(output: string, message: string, errorName = 'ThreadLeakError'): void {
  const printed = output.split('\n').map((line) => line.trim());
  const [first, ...rest] = message.split('\n');
  let at = printed.indexOf(`${errorName}: ${first}`);
  expect({ line: first, found: at >= 0 }).toEqual({ line: first, found: true });
  for (const line of rest) {
    at++;
    expect({ line, printed: printed[at] }).toEqual({ line, printed: line.trim() });
  }
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/package.json`, JSON.stringify({ private: true, type: 'commonjs' }));
  writeFileSync(`${dir}/leaks.cjs`, LEAKS_MODULE);
  writeFileSync(`${dir}/leak.jest.cjs`, testFile('jest'));
  writeFileSync(`${dir}/leak.vitest.mjs`, testFile('vitest'));
  writeFileSync(
    `${dir}/jest.config.cjs`,
    `module.exports = { rootDir: __dirname, testMatch: ['**/*.jest.cjs'], transform: {}, watchman: false, cacheDirectory: __dirname + '/.jest-cache' };`,
  );
  writeFileSync(`${dir}/vitest.config.mjs`, `export default { test: { include: ['*.vitest.mjs'], pool: 'forks' } };`);
});

function checkMessages(runner: 'jest' | 'vitest', output: string): void {
  const realistic = readFileSync(`${dir}/${runner}-realistic.message.txt`, 'utf8');
  expectPrintedWhole(output, realistic);
  // The native frames, C++ and Rust names with "::" among them, and the Worker's creation stack.
  expect(realistic).toContain('#1 foo::Queue::Pop(');
  expect(realistic).toContain('startPool (file:///app/pool.mjs:4:31)');
  const real = readFileSync(`${dir}/${runner}-real.message.txt`, 'utf8');
  expect(real).toMatch(/^2 threads leaked/);
  const entry = FIXTURE_ENTRY.std;
  expect(real).toContain(`native, ${entry === undefined ? 'started from' : `started by ${entry} in`} ${realpathSync(spawnerPath)})`);
  expect(real).toMatch(/\n {8}#0 /);
  expect(real).toMatch(/\n {6}created at:\n {8}\S/);
  expectPrintedWhole(output, real);
  const blocking = readFileSync(`${dir}/${runner}-blocking.message.txt`, 'utf8');
  expect(blocking).toMatch(/^the event loop was blocked once for longer than 100 ms:\n/);
  expect(blocking).toMatch(/\n {8}busyInRunner \(.*leaks\.cjs:\d+:\d+\)\n/);
  expectPrintedWhole(output, blocking, 'EventLoopBlockError');
}

describe('a leak report as test runners print it', () => {
  it('Jest 30 prints every line of it, in order', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const output = run(`${root}node_modules/jest/bin/jest.js`, ['--config', `${dir}/jest.config.cjs`, '--ci']);
    checkMessages('jest', output);
  });

  it('vitest prints every line of it, in order', { timeout: RUNNER_TIMEOUT_MS + 10_000 }, () => {
    const output = run(`${root}node_modules/vitest/vitest.mjs`, ['run', '--root', dir]);
    checkMessages('vitest', output);
  });
});
