// The macOS native backend (native/darwin/*.cc) as it runs: threads through
// Mach (this process) and libproc (other pids), stacks by thread_suspend and a
// frame-pointer walk of a copy, frames named by dladdr. The message tests run
// everywhere; the native ones only on macOS (GitHub Actions, arm64 and x64),
// the counterpart of win32-threads.test.ts and win32-stack.test.ts. What they
// assert is what DESIGN.md (Platforms -> macOS) promises.
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { captureStack, currentThreadId, prewarmThreadpool, threadKey } from '../src/binding.js';
import { threads, threadStack, type NativeStack, type ThreadInfo } from '../src/index.js';
import { formatStackError } from '../src/report.js';
import { fixtureThreads, spawnerPath, waitUntil } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const darwin = process.platform === 'darwin';

describe('darwin stack error messages', () => {
  const base = { timeoutMs: 0, recoveredFrames: 0, platform: 'darwin' };
  for (const code of ['not-found', 'exited', 'busy', 'os-error', 'timeout']) {
    it(`'${code}' never mentions a signal, a probe or the kernel's view`, () => {
      const detail = code === 'os-error' ? 'thread_suspend failed: (os/kern) failure (kern_return_t 0x5)' : undefined;
      expect(formatStackError(7, { ...base, code, detail })).not.toMatch(/signal|probe|kernel|scan/i);
    });
  }

  it('says which call failed and what was recovered', () => {
    const detail = 'vm_read_overwrite(stack) failed: (os/kern) invalid address (kern_return_t 0x1)';
    expect(formatStackError(7, { ...base, code: 'os-error', detail, recoveredFrames: 1 })).toBe(
      `reading the stack of thread 7 failed: ${detail}; only its program counter was recovered`,
    );
    expect(formatStackError(7, { ...base, code: 'exited', detail: 'the key names another thread' })).toBe(
      'thread 7 exited before its stack could be read: the key names another thread',
    );
  });
});

// ------------------------------------------------------------------ native

const NODE = darwin ? realpathSync(process.execPath) : process.execPath;
const SPAWNER = realpathSync(spawnerPath);
const PTHREAD = /^\/usr\/lib\/system\/libsystem_pthread\.dylib$/;
const inNode = (stack: NativeStack) => stack.frames.some((f) => f.module === NODE);
const keysOf = (list: ThreadInfo[]) => new Set(list.map((t) => t.key));

// A Worker that reports its OS thread id and key, then idles, spins in
// JavaScript, posts a message every few ms, or ends.
const WORKER_CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const addon = require(workerData.gypBuild)(workerData.root);
parentPort.postMessage({ id: addon.currentThreadId(), key: addon.threadKey(addon.currentThreadId()) });
if (workerData.mode === 'busy') { let x = 0; for (;;) { x += Math.sqrt(x + 1); if (x > 1e12) x = 0; } }
if (workerData.mode === 'idle') setInterval(() => {}, 60_000);
if (workerData.mode === 'tick') { let n = 0; setInterval(() => parentPort.postMessage(++n), 5); }
`;

const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

function startWorker(mode: 'busy' | 'idle' | 'tick' | 'exit'): Promise<{ worker: Worker; id: number; key: string }> {
  const gypBuild = createRequire(import.meta.url).resolve('node-gyp-build');
  const worker = new Worker(WORKER_CODE, { eval: true, workerData: { gypBuild, root: ROOT, mode } });
  if (mode !== 'exit') workers.push(worker);
  return new Promise((resolve, reject) => {
    worker.once('message', (m: { id: number; key: string }) => resolve({ worker, ...m }));
    worker.once('error', reject);
  });
}

describe.runIf(darwin)('macOS thread backend', () => {
  const fixture = fixtureThreads();

  it('lists the calling thread by its 64-bit thread_id: the key is the id, running, no start time', () => {
    const id = currentThreadId();
    const self = threads().find((t) => t.id === id);
    expect(self).toBeDefined();
    expect(self!.key).toBe(String(id));
    expect(threadKey(id)).toBe(self!.key);
    expect([self!.state, self!.rawState]).toEqual(['running', 'TH_STATE_RUNNING']);
    expect(self!.startTime).toBeUndefined();
    expect(threadKey(Number.MAX_SAFE_INTEGER)).toBe('');
  });

  it('gives every thread a unique key, the same in two snapshots and from threadKey()', () => {
    const first = threads();
    const second = new Map(threads().map((t) => [t.id, t]));
    expect(new Set(first.map((t) => t.key)).size).toBe(first.length);
    expect(new Set(first.map((t) => t.id)).size).toBe(first.length);
    let compared = 0;
    for (const t of first) {
      expect(t.key).toBe(String(t.id));
      const again = second.get(t.id);
      if (again === undefined) continue; // it ended between the two snapshots
      expect(again.key).toBe(t.key);
      const key = threadKey(t.id);
      if (key !== '') expect(key).toBe(t.key); // '' once it has ended
      compared++;
    }
    expect(compared).toBeGreaterThan(1);
  });

  it('tells a parked thread (TH_STATE_WAITING) from a spinning one (TH_STATE_RUNNING)', async () => {
    const parked = fixture.start({ count: 1 }).tids[0]!;
    const spinning = fixture.start({ count: 1, spin: true }).tids[0]!;
    const of = (id: number) => threads().find((t) => t.id === id);
    expect(await waitUntil(() => of(parked)?.rawState === 'TH_STATE_WAITING')).toBe(true);
    expect(of(parked)!.state).toBe('sleeping');
    expect(await waitUntil(() => of(spinning)?.rawState === 'TH_STATE_RUNNING')).toBe(true);
    expect(of(spinning)!.state).toBe('running');
  });

  it("gives a new thread no name until it names itself (not its creator's), then the name it set", () => {
    const unnamed = fixture.start({ count: 1 }).tids[0]!;
    const named = fixture.start({ count: 1, name: 'tl-darwin' }).tids[0]!;
    const byId = new Map(threads().map((t) => [t.id, t]));
    expect(byId.get(unnamed)?.name).toBe('');
    expect(byId.get(named)?.name).toBe('tl-darwin');
  });

  it("sees a busy Worker's CPU time grow, and its key gone for good when it ends", async () => {
    const before = keysOf(threads());
    const { worker, id, key } = await startWorker('busy');
    expect(before.has(key)).toBe(false);
    const cpu = () => {
      const t = threads().find((t) => t.key === key);
      return t === undefined ? -1 : t.userCpuMs + t.systemCpuMs;
    };
    const first = cpu();
    expect(first).toBeGreaterThanOrEqual(0);
    expect(await waitUntil(() => cpu() >= first + 100, 10_000)).toBe(true);
    await worker.terminate();
    expect(await waitUntil(() => !keysOf(threads()).has(key))).toBe(true);
    expect(threadKey(id)).toBe('');
  });

  it('lists the threads of a child node by pid as the child lists itself, and ESRCH once it has exited', async () => {
    // The child lists itself through Mach, this process lists it through libproc: the same ids, keys and names.
    const script = `
      const { threads } = require(${JSON.stringify(`${ROOT}dist/index.js`)});
      new (require('node:worker_threads').Worker)('setInterval(() => {}, 1000)', { eval: true });
      setTimeout(() => console.log(JSON.stringify(threads().map((t) => ({ id: t.id, key: t.key, name: t.name })))), 500);
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const own = await new Promise<{ id: number; key: string; name: string }[]>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8');
        child.stdout.on('data', (chunk: string) => {
          out += chunk;
          if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!));
        });
        child.once('exit', (code) => reject(new Error(`the child exited (${code}) before it listed its threads`)));
      });
      const list = threads({ pid: child.pid! });
      const byKey = new Map(list.map((t) => [t.key, t]));
      expect(list.length).toBeGreaterThanOrEqual(7);
      for (const t of list) expect(t.key).toBe(String(t.id));
      expect(new Set(list.map((t) => t.key)).size).toBe(list.length);
      // Thread ids are system-wide: none of the child's is one of this process's.
      const ours = new Set(threads().map((t) => t.id));
      expect(list.filter((t) => ours.has(t.id))).toEqual([]);
      const matched = own.filter((t) => byKey.has(t.key));
      expect(matched.length).toBeGreaterThanOrEqual(own.length - 1);
      for (const t of matched) expect({ id: byKey.get(t.key)!.id, name: byKey.get(t.key)!.name }).toEqual({ id: t.id, name: t.name });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      let caught: unknown;
      try {
        threads({ pid: child.pid! });
      } catch (error) {
        caught = error;
      }
      expect(caught).toMatchObject({ code: 'ESRCH', pid: child.pid });
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('throws ESRCH for a pid no process has, and for a thread id (no pid)', () => {
    let caught: unknown;
    try {
      threads({ pid: 0x7ffffff0 });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught).toMatchObject({ code: 'ESRCH', pid: 0x7ffffff0, syscall: 'proc_pidinfo(PROC_PIDLISTTHREADIDS)' });
    expect(typeof (caught as { errno: unknown }).errno).toBe('number');
    expect((caught as Error).message).toContain('no such process');
    const { tids } = fixture.start({ count: 1 });
    expect(() => threads({ pid: tids[0]! })).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });

  // launchd (pid 1) is root's; GitHub's macOS runners run the tests as an ordinary user.
  it.runIf(darwin && process.getuid?.() !== 0)("throws EPERM for another user's process (launchd), without blocking", () => {
    const t0 = performance.now();
    expect(() => threads({ pid: 1 })).toThrow(expect.objectContaining({ code: 'EPERM', pid: 1, message: expect.stringContaining('permission denied') }));
    expect(performance.now() - t0).toBeLessThan(2000);
  });
});

describe.runIf(darwin)('threadStack() on macOS', () => {
  const fixture = fixtureThreads();

  it('walks the calling thread itself into node, with absolute paths, and none of the addon’s own frames', () => {
    const stack = threadStack(currentThreadId(), { timeoutMs: 0 });
    expect(stack.error).toBeUndefined();
    expect(inNode(stack)).toBe(true);
    expect(stack.frames.some((f) => f.module !== undefined && /[\\/]threadleak\.node$/.test(f.module))).toBe(false);
    for (const frame of stack.frames) {
      expect(frame.address).toMatch(/^0x[0-9a-f]+$/);
      expect(frame.scanned).toBeUndefined();
      if (frame.module !== undefined) expect(frame.module.startsWith('/')).toBe(true);
      if (frame.offset !== undefined) expect(Number.isSafeInteger(frame.offset) && frame.offset >= 0).toBe(true);
    }
  });

  for (const mode of ['idle', 'busy'] as const) {
    it(`reads a Worker ${mode === 'idle' ? 'idle in its event loop' : 'busy in JavaScript'}: frames in node down to libpthread's thread start, attributed to node`, async () => {
      const { id, key } = await startWorker(mode);
      for (const timeoutMs of [0, 100]) {
        const stack = threadStack(id, { timeoutMs, key });
        expect(stack.error).toBeUndefined();
        expect(stack.frames.length).toBeGreaterThan(3);
        expect(inNode(stack)).toBe(true);
        expect(stack.frames.at(-1)!.module).toMatch(PTHREAD);
        expect(stack.module).toBe(NODE);
      }
      // Mach tells no start address of a thread.
      expect(captureStack(id, 0).start).toBeUndefined();
    });
  }

  it('reads every thread of the process, the libuv threadpool included, attributed to node', () => {
    prewarmThreadpool();
    const all = threads();
    expect(all.length).toBeGreaterThan(4);
    let read = 0;
    for (const thread of all) {
      const stack = threadStack(thread.id, { timeoutMs: 0, key: thread.key });
      // A thread may exit between the list and the capture.
      if (stack.error !== undefined) {
        expect(stack.error).toMatch(/exited/);
        continue;
      }
      read++;
      expect(stack.frames.length).toBeGreaterThan(0);
      // libuv names its pool threads from libuv 1.50 on (newer Node).
      if (thread.name === 'libuv-worker') {
        expect(stack.frames.at(-1)!.module).toMatch(PTHREAD);
        expect(stack.module).toBe(NODE);
      }
    }
    expect(read).toBeGreaterThan(4);
  });

  it("answers 'exited' for a key of another thread and 'not-found' for an id that is no thread, reading nothing", async () => {
    const { id } = await startWorker('idle');
    for (const stale of [`${id + 1}`, `${id}@1`]) {
      const stack = threadStack(id, { key: stale });
      expect(stack.error).toMatch(/exited/);
      expect(stack.frames).toEqual([]);
    }
    const none = threadStack(2 ** 52 + 1);
    expect(none).toEqual({ threadId: 2 ** 52 + 1, frames: [], error: `thread ${2 ** 52 + 1} is not a thread of this process` });
  });

  it('names the fixture’s exported functions, and an unexported one never after its exported neighbour', () => {
    const { tids } = fixture.start({ count: 1, kind: 'local' });
    const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
    expect(stack.error).toBeUndefined();
    const names = stack.frames.map((f) => f.symbol);
    const body = names.indexOf('spawner_thread_body');
    expect(body).toBeGreaterThan(0);
    // dladdr names a static function only where the file kept its local symbols; otherwise the
    // frame is module+offset (LC_FUNCTION_STARTS shows the nearest export is another function).
    const entry = stack.frames[body + 1]!;
    expect(entry.module).toBe(SPAWNER);
    expect([undefined, 'spawner_local_thread_main(void*)']).toContain(entry.symbol);
    expect(stack.module).toBe(SPAWNER);
    expect([undefined, 'spawner_local_thread_main(void*)']).toContain(stack.startRoutine);
  });

  it('always resumes the thread: a Worker goes on posting messages after 50 captures', async () => {
    const { worker, id, key } = await startWorker('tick');
    let last = 0;
    worker.on('message', (n: unknown) => {
      if (typeof n === 'number') last = n;
    });
    expect(await waitUntil(() => last > 0, 10_000)).toBe(true);
    for (let i = 0; i < 50; i++) {
      const stack = threadStack(id, { timeoutMs: i % 2 === 0 ? 0 : 100, key });
      expect(stack.error).toBeUndefined();
      expect(stack.frames.length).toBeGreaterThan(0);
      if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const after = last;
    expect(await waitUntil(() => last >= after + 10, 10_000)).toBe(true);
  });

  it('never crashes capturing threads that exit mid-way', async () => {
    const outcomes = new Set<string>();
    for (let round = 0; round < 15; round++) {
      const { worker, id, key } = await startWorker('exit');
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      let done = false;
      void exited.then(() => (done = true));
      for (let i = 0; i < 200 && !done; i++) {
        for (const k of [undefined, key]) {
          const stack = threadStack(id, { timeoutMs: 0, key: k });
          const outcome = stack.error === undefined ? 'frames' : stack.error.replace(/^thread \d+ /, '').split(':')[0]!;
          outcomes.add(outcome);
          if (stack.error !== undefined) expect(stack.frames).toEqual([]);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      await exited;
    }
    for (const outcome of outcomes) {
      expect(['frames', 'exited before its stack could be read', 'is not a thread of this process']).toContain(outcome);
    }
  });
});
