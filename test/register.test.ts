// threadleak/register, as users load it (`node --import threadleak/register
// app.js`, or `-r`): the exit report of native threads still alive, the exit
// code, the THREADLEAK_* variables, and the hang-at-exit watchdog. Each case
// is a real Node process with the package installed in a small project.
import { spawn } from 'node:child_process';
import { mkdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_ENTRY, isWine, makeProjectWithPackage, runNode, spawnerPath, THREAD_KIND } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = `${root}test/fixtures/runners/build/register-${process.pid}`;
const CHILD_TIMEOUT_MS = isWine ? 120_000 : 60_000;
const entry = FIXTURE_ENTRY[THREAD_KIND];
const CREATOR = `native, ${entry === undefined ? 'started from' : `started by ${entry} in`} ${realpathSync(spawnerPath)}`;
const HEAD = /^threadleak: 1 thread leaked: started after threadleak\/register loaded and still alive at exit$/m;

const APPS: Record<string, string> = {
  // Leaves one native thread running at exit.
  'leak.cjs': `const spawner = require(${JSON.stringify(spawnerPath)});
spawner.start({ count: 1, kind: ${JSON.stringify(THREAD_KIND)}, name: 'tl-at-exit' });
if (process.argv[2]) process.exitCode = Number(process.argv[2]);`,
  // Uses the runtime's threads (the libuv pool, a Worker) and stops its own: nothing to report.
  'clean.cjs': `const spawner = require(${JSON.stringify(spawnerPath)});
const { Worker } = require('node:worker_threads');
spawner.stop(spawner.start({ count: 2, kind: ${JSON.stringify(THREAD_KIND)} }).handle);
require('node:zlib').gzip('x', () => {
  require('node:crypto').pbkdf2('p', 's', 1, 8, 'sha256', () => {
    new Worker('1', { eval: true }).once('exit', () => console.log('clean done'));
  });
});`,
  // A Worker that loads the register too (preloads run in every Worker): only the process reports.
  'worker.cjs': `const { Worker } = require('node:worker_threads');
const spawner = require(${JSON.stringify(spawnerPath)});
spawner.start({ count: 1, kind: ${JSON.stringify(THREAD_KIND)}, name: 'tl-at-exit' });
new Worker('1', { eval: true });`,
  // An addon whose cleanup hook joins a thread that never ends: the process hangs after 'exit'.
  'hang.cjs': `require(${JSON.stringify(spawnerPath)}).hangAtExit();`,
};

function node(args: string[], env: Record<string, string> = {}) {
  const child = runNode(args, { cwd: dir, timeout: CHILD_TIMEOUT_MS, env: { ...process.env, ...env } });
  expect(child.error).toBeUndefined();
  return { status: child.status, stderr: child.stderr.replace(/\r\n/g, '\n'), stdout: child.stdout };
}

beforeAll(() => {
  mkdirSync(dir, { recursive: true });
  makeProjectWithPackage(dir);
  for (const [name, text] of Object.entries(APPS)) writeFileSync(`${dir}/${name}`, text);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('threadleak/register: the exit report', () => {
  it('reports a native thread still alive at exit on stderr, with its creator and stack; the exit code is kept', () => {
    for (const load of [['--import', 'threadleak/register'], ['-r', 'threadleak/register']]) {
      const { status, stderr } = node([...load, 'leak.cjs']);
      expect({ load, status }).toEqual({ load, status: 0 });
      expect(stderr).toMatch(HEAD);
      expect(stderr).toContain('"tl-at-exit"');
      expect(stderr).toContain(CREATOR);
      expect(stderr).toMatch(/\n {8}#0 /);
    }
  }, 2 * CHILD_TIMEOUT_MS);

  it('THREADLEAK_ACTION=raise makes a clean exit with a leak 1, and leaves another exit code alone', () => {
    expect(node(['--import', 'threadleak/register', 'leak.cjs'], { THREADLEAK_ACTION: 'raise' }).status).toBe(1);
    expect(node(['--import', 'threadleak/register', 'leak.cjs', '3'], { THREADLEAK_ACTION: 'raise' }).status).toBe(3);
    const clean = node(['--import', 'threadleak/register', 'clean.cjs'], { THREADLEAK_ACTION: 'raise' });
    expect(clean).toEqual({ status: 0, stderr: '', stdout: 'clean done\n' });
  }, 3 * CHILD_TIMEOUT_MS);

  it('never reports the runtime threads, and reports once however it is loaded, Workers included', () => {
    const both = node(['-r', 'threadleak/register', '--import', 'threadleak/register', 'worker.cjs']);
    expect(both.status).toBe(0);
    expect(both.stderr.match(/threadleak: 1 thread leaked/g)).toHaveLength(1);
  }, CHILD_TIMEOUT_MS);

  it('says in one line what is wrong with a THREADLEAK_* value, and goes on with the default', () => {
    const { status, stderr } = node(['--import', 'threadleak/register', 'leak.cjs'], {
      THREADLEAK_ACTION: 'rase',
      THREADLEAK_EXIT_TIMEOUT_MS: '5s',
    });
    expect(status).toBe(0);
    const lines = stderr.split('\n');
    expect(lines[0]).toBe(`threadleak: THREADLEAK_ACTION="rase" is not 'warn' or 'raise'; using 'warn'`);
    expect(lines[1]).toBe('threadleak: THREADLEAK_EXIT_TIMEOUT_MS="5s" is not a whole number of ms from 0 (off) to 86400000; using 5000');
    expect(stderr).toMatch(HEAD);
  }, CHILD_TIMEOUT_MS);
});

/** Runs the hanging app until its stderr shows the watchdog's dump (or `timeoutMs`), then kills it. */
function runHanging(env: Record<string, string>, timeoutMs: number): Promise<{ stderr: string; exited: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'threadleak/register', 'hang.cjs'], {
      cwd: dir,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    let exited = false;
    const done = () => {
      clearTimeout(timer);
      child.kill('SIGKILL');
    };
    const timer = setTimeout(done, timeoutMs);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
      // The dump ends with the last thread's frames: give it a moment to be written whole.
      if (stderr.includes('the thread that is exiting')) setTimeout(done, 1000);
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      exited = code !== null;
      clearTimeout(timer);
      resolve({ stderr: stderr.replace(/\r\n/g, '\n'), exited });
    });
  });
}

describe('threadleak/register: the hang-at-exit watchdog', () => {
  it("writes every thread's stack when the process is still alive THREADLEAK_EXIT_TIMEOUT_MS after 'exit'", async () => {
    const { stderr, exited } = await runHanging({ THREADLEAK_EXIT_TIMEOUT_MS: '300' }, CHILD_TIMEOUT_MS);
    expect(exited).toBe(false); // it hung, and was killed
    // First the exit report (the never-ending thread was started after the register loaded), then the dump.
    expect(stderr).toMatch(HEAD);
    const dump = stderr.slice(stderr.indexOf(`threadleak: process `));
    expect(dump).toMatch(/^threadleak: process \d+ is still alive 300 ms after its 'exit' event: something hangs at exit/);
    // The exiting thread is shown blocked in the fixture's cleanup hook, which joins the thread that never ends.
    const exiting = dump.slice(dump.indexOf('the thread that is exiting'));
    expect(exiting.split('\n  - thread')[0]).toMatch(/#\d+ spawner_join_forever\+0x[0-9a-f]+ \(/);
    expect(dump).toMatch(/- thread \d+ "tl-forever" /);
    // The watchdog is threadleak's own: it does not list itself.
    expect(dump).not.toContain('threadleak-exit');
  }, CHILD_TIMEOUT_MS + 10_000);

  it('is off with THREADLEAK_EXIT_TIMEOUT_MS=0, and says nothing for a process that ends by itself', async () => {
    const { stderr } = await runHanging({ THREADLEAK_EXIT_TIMEOUT_MS: '0' }, isWine ? 20_000 : 3000);
    expect(stderr).toMatch(HEAD);
    expect(stderr).not.toContain('is still alive');
    // Armed (the default 5 s), a process that ends by itself ends with no dump.
    const { status, stderr: clean } = node(['--import', 'threadleak/register', 'clean.cjs']);
    expect({ status, clean }).toEqual({ status: 0, clean: '' });
  }, CHILD_TIMEOUT_MS + 30_000);
});
