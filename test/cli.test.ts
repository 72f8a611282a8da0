// The `threadleak` command as a user runs it (`node dist/cli.js ...`, after
// `npm run compile`): `ps` against a child process with named native threads
// (table and --json), its own threads, every usage error (one line on stderr,
// exit code 2), --help and --version, and `top` with stdout a pipe: one JSON
// ThreadSample per line, a thread started in the child between samples, and
// its end when the child ends.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { formatCpuTime, formatStartTime } from '../src/cli-ps.js';
import type { ThreadInfo, ThreadSample } from '../src/index.js';
import { isWine, runNode, spawnerPath, THREAD_KIND } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const CLI = `${root}dist/cli.js`;
const TIMEOUT_MS = isWine ? 120_000 : 60_000;
// Above Linux's largest pid (4194304), odd (Windows pids are multiples of 4), above macOS's 99999.
const NO_SUCH_PID = 4_194_305;

function threadleak(args: string[], env: Record<string, string> = {}) {
  const result = runNode([CLI, ...args], { timeout: TIMEOUT_MS, env: { ...process.env, ...env } });
  expect(result.error).toBeUndefined();
  return { status: result.status, stdout: result.stdout.replace(/\r\n/g, '\n'), stderr: result.stderr.replace(/\r\n/g, '\n'), pid: result.pid };
}

/** A Node process with two native threads named worker-a; a line `start-b` on its stdin starts one named worker-b. */
interface Child {
  process: ChildProcessWithoutNullStreams;
  pid: number;
  tids: number[];
  /** The next JSON line the child prints. */
  next(): Promise<{ started?: number[] }>;
}

const children: ChildProcessWithoutNullStreams[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

async function startChild(): Promise<Child> {
  const script = `
    const spawner = require(${JSON.stringify(spawnerPath)});
    const kind = ${JSON.stringify(THREAD_KIND)};
    const a = spawner.start({ count: 2, name: 'worker-a', kind });
    console.log(JSON.stringify({ pid: process.pid, tids: a.tids }));
    require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
      if (line === 'start-b') console.log(JSON.stringify({ started: spawner.start({ count: 1, name: 'worker-b', kind }).tids }));
    }).on('close', () => process.exit(0));
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const line = await lines.next();
    if (line.done) throw new Error('the child ended');
    return JSON.parse(line.value) as { pid: number; tids: number[]; started?: number[] };
  };
  const first = await next();
  return { process: child, pid: first.pid, tids: first.tids, next };
}

/** Checks the table's columns line up with its header: left-aligned ones start, right-aligned ones end, under their title. */
function expectAligned(lines: string[]): void {
  const header = lines[0]!;
  const columns = [...header.matchAll(/\S+/g)].map((m) => ({ title: m[0], start: m.index, end: m.index + m[0].length }));
  expect(columns.map((c) => c.title)).toEqual(['TID', 'NAME', 'STATE', '%CPU', 'TIME', 'START']);
  for (const line of lines.slice(1)) {
    for (const { title, start, end } of columns) {
      if (title === 'NAME' || title === 'STATE') {
        expect({ line, title, at: line[start] !== ' ' && line[start - 1] === ' ' }).toEqual({ line, title, at: true });
      } else {
        expect({ line, title, at: line[end - 1] !== ' ' && (line[end] ?? ' ') === ' ' }).toEqual({ line, title, at: true });
      }
    }
  }
}

/** A usage error: exit code 2, nothing on stdout, one line on stderr and no stack. */
function expectOneLineError(args: string[], message: RegExp): void {
  const { status, stdout, stderr } = threadleak(args);
  expect({ args, status, stdout }).toEqual({ args, status: 2, stdout: '' });
  expect(stderr).toMatch(/^[^\n]+\n$/);
  expect(stderr).toMatch(message);
}

describe('threadleak ps', () => {
  it('--json prints the threads of the pid, the named fixture threads among them', async () => {
    const child = await startChild();
    const { status, stdout, stderr } = threadleak(['ps', String(child.pid), '--json']);
    expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
    const list = JSON.parse(stdout) as ThreadInfo[];
    const byId = new Map(list.map((t) => [t.id, t]));
    for (const tid of child.tids) {
      expect(byId.get(tid)).toMatchObject({ id: tid, name: 'worker-a', key: expect.any(String), state: expect.any(String) });
    }
    expect(list.length).toBeGreaterThan(child.tids.length); // Node's own threads too
  }, TIMEOUT_MS);

  it('prints a table with a row per thread, the fixture threads by name, columns aligned', async () => {
    const child = await startChild();
    const { status, stdout, stderr } = threadleak(['ps', String(child.pid)]);
    expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^\s*TID\s+NAME\s+STATE\s+%CPU\s+TIME\s+START$/);
    expectAligned(lines);
    const rows = lines.slice(1).map((line) => line.trim().split(/\s+/));
    for (const tid of child.tids) expect(rows).toContainEqual([String(tid), 'worker-a', expect.any(String), expect.stringMatching(/^\d+\.\d$/), expect.stringMatching(/^\d\d:\d\d:\d\d$/), expect.any(String)]);
    // One row per thread: the same ids as --json.
    const json = JSON.parse(threadleak(['ps', String(child.pid), '--json']).stdout) as ThreadInfo[];
    expect(rows.length).toBeGreaterThanOrEqual(json.length - 2); // threads may start or end between the two runs
    expect(new Set(rows.map((r) => Number(r[0]))).size).toBe(rows.length);
  }, TIMEOUT_MS);

  it('with no pid lists the threads of the command itself', () => {
    const { status, stdout, stderr, pid } = threadleak(['ps']);
    expect({ status, stderr }).toEqual({ status: 0, stderr: '' });
    const lines = stdout.trimEnd().split('\n');
    expectAligned(lines);
    expect(lines.length).toBeGreaterThan(2); // Node has more than one thread
    // On Linux the main thread's id is the pid.
    if (process.platform === 'linux') expect(lines.slice(1).map((l) => Number(l.trim().split(/\s+/)[0]))).toContain(pid);
  }, TIMEOUT_MS);

  it('formats CPU time as [DD-]HH:MM:SS and a start time as the time today, else the date', () => {
    expect(formatCpuTime(0)).toBe('00:00:00');
    expect(formatCpuTime(3_723_999)).toBe('01:02:03');
    expect(formatCpuTime(((2 * 24 + 1) * 3600 + 61) * 1000)).toBe('02-01:01:01');
    const now = new Date(2026, 2, 14, 15, 30, 0).getTime();
    expect(formatStartTime(new Date(2026, 2, 14, 9, 5, 7).getTime(), now)).toBe('09:05:07');
    expect(formatStartTime(new Date(2026, 2, 13, 23, 59, 59).getTime(), now)).toBe('2026-03-13');
    expect(formatStartTime(undefined, now)).toBe('-');
  });
});

describe('threadleak: errors, --help and --version', () => {
  it('says what is wrong in one line on stderr and exits 2', () => {
    expectOneLineError(['ps', String(NO_SUCH_PID)], new RegExp(`^threadleak ps: no process with pid ${NO_SUCH_PID}$`, 'm'));
    expectOneLineError(['top', String(NO_SUCH_PID)], new RegExp(`^threadleak top: no process with pid ${NO_SUCH_PID}$`, 'm'));
    expectOneLineError(['ps', 'abc'], /^threadleak ps: the pid must be a positive whole number, got 'abc'$/m);
    expectOneLineError(['ps', '-5'], /^threadleak ps: the pid must be a positive whole number, got '-5'$/m);
    expectOneLineError(['ps', '0'], /^threadleak ps: the pid must be a positive whole number, got '0'$/m);
    expectOneLineError(['ps', '--jsno'], /^threadleak ps: unknown option '--jsno'/m);
    expectOneLineError(['top', '--interval', 'soon'], /^threadleak top: --interval must be a whole number of ms from 10 to 3600000, got 'soon'$/m);
    expectOneLineError(['--frob'], /^threadleak: unknown option '--frob'/m);
    expectOneLineError(['pss'], /^threadleak: unknown command 'pss'; the commands are ps, top, run/m);
  }, 9 * TIMEOUT_MS);

  it('with no command prints the help on stderr and exits 2', () => {
    const { status, stdout, stderr } = threadleak([]);
    expect({ status, stdout }).toEqual({ status: 2, stdout: '' });
    for (const command of ['ps', 'top', 'run']) expect(stderr).toContain(`threadleak ${command} `);
  }, TIMEOUT_MS);

  it('--help names the three commands on stdout; --version is the package version', () => {
    const help = threadleak(['--help']);
    expect({ status: help.status, stderr: help.stderr }).toEqual({ status: 0, stderr: '' });
    for (const command of ['ps [pid] [--json]', 'top [pid] [--interval ms]', 'run ']) expect(help.stdout).toContain(`threadleak ${command}`);
    const version = threadleak(['--version']);
    const expected = (JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string }).version;
    expect(version).toMatchObject({ status: 0, stdout: `${expected}\n`, stderr: '' });
  }, 2 * TIMEOUT_MS);
});

describe('threadleak top with stdout a pipe', () => {
  /** Runs top against `pid`; `lines` yields its stdout lines. */
  function startTop(pid: number) {
    const top = spawn(process.execPath, [CLI, 'top', String(pid), '--interval', '200'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(top);
    let stderr = '';
    top.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => top.on('exit', (code) => resolve(code)));
    const lines = createInterface({ input: top.stdout })[Symbol.asyncIterator]();
    return { top, lines, exited, stderr: () => stderr.replace(/\r\n/g, '\n') };
  }

  it('prints one JSON sample per line, and a thread started between samples in `started`', async () => {
    const child = await startChild();
    const { top, lines, stderr } = startTop(child.pid);
    const samples: ThreadSample[] = [];
    let startedB: number[] | undefined;
    // Bounded: at most 100 samples (20 s at 200 ms, longer under load: each waits for a line).
    for (let i = 0; i < 100; i++) {
      const line = await lines.next();
      expect(line.done, stderr()).toBe(false);
      const sample = JSON.parse(line.value as string) as ThreadSample;
      samples.push(sample);
      expect(sample).toMatchObject({ at: expect.any(Number), count: sample.threads.length, started: expect.any(Array), exited: expect.any(Array) });
      for (const thread of sample.threads) expect(thread.cpuPercent).toEqual(expect.any(Number));
      // A sample of the child: its fixture threads are in it (until worker-b exists, nothing else changes).
      expect(sample.threads.map((t) => t.id)).toEqual(expect.arrayContaining(child.tids));
      if (samples.length === 2) {
        child.process.stdin.write('start-b\n');
        startedB = (await child.next()).started;
      }
      if (startedB !== undefined && samples.some((s) => s.started.some((t) => t.id === startedB![0]))) break;
    }
    expect(samples.length).toBeGreaterThanOrEqual(3);
    const withB = samples.find((s) => s.started.some((t) => t.id === startedB![0]));
    expect(withB?.started.find((t) => t.id === startedB![0])).toMatchObject({ name: 'worker-b' });
    top.kill();
  }, 2 * TIMEOUT_MS);

  it('ends with code 0 and one line on stderr when the watched process ends', async () => {
    const child = await startChild();
    const { lines, exited, stderr } = startTop(child.pid);
    expect((await lines.next()).done).toBe(false); // watching
    child.process.stdin.end(); // the child exits
    expect(await exited).toBe(0);
    expect(stderr()).toBe(`threadleak top: process ${child.pid} ended\n`);
  }, 2 * TIMEOUT_MS);
});
