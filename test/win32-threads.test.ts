// The Windows thread backend (native/win32/threads_win32.cc and
// threads_toolhelp_win32.cc) and the Windows state table (src/states.ts).
// The mapping tests run everywhere; the native ones only on Windows (and under
// wine here: see /work/shared/notes/windows-under-wine.md).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { threads, type ThreadInfo } from '../src/index.js';
import { portableState } from '../src/states.js';
import { isWine, KEY_FORM } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));

describe('portableState', () => {
  it('keeps the Linux table', () => {
    const table: Record<string, string> = {
      R: 'running', S: 'sleeping', I: 'sleeping', P: 'sleeping', D: 'blocked',
      T: 'stopped', t: 'stopped', Z: 'zombie', X: 'zombie', W: 'unknown', '': 'unknown',
    };
    for (const [raw, state] of Object.entries(table)) expect(portableState(raw, 'linux'), raw).toBe(state);
    expect(portableState('Running', 'linux')).toBe('unknown');
  });

  it('maps Windows states and wait reasons as DESIGN.md says', () => {
    const table: Record<string, string> = {
      Running: 'running',
      Ready: 'running',
      Standby: 'running',
      DeferredReady: 'running',
      'Waiting/Suspended': 'stopped',
      'Waiting/WrSuspended': 'stopped',
      'Waiting/Executive': 'blocked',
      'Waiting/WrExecutive': 'blocked',
      'Waiting/PageIn': 'blocked',
      'Waiting/WrPageIn': 'blocked',
      'Waiting/FreePage': 'blocked',
      'Waiting/PoolAllocation': 'blocked',
      'Waiting/WrVirtualMemory': 'blocked',
      'Waiting/WrPageOut': 'blocked',
      'Waiting/WrPhysicalFault': 'blocked',
      'Waiting/UserRequest': 'sleeping',
      'Waiting/WrUserRequest': 'sleeping',
      'Waiting/WrQueue': 'sleeping',
      'Waiting/DelayExecution': 'sleeping',
      'Waiting/WrAlertByThreadId': 'sleeping',
      'Waiting/WrLpcReceive': 'sleeping',
      'Waiting/99': 'sleeping', // a reason newer than our table is still a wait
      Terminated: 'zombie',
      Initialized: 'unknown', // also what wine reports for every thread
      Transition: 'unknown',
      GateWaitObsolete: 'unknown',
      WaitingForProcessInSwap: 'unknown',
      '12': 'unknown',
      '': 'unknown', // the Toolhelp32 reader tells no state
      Waiting: 'unknown',
      R: 'unknown',
      constructor: 'unknown',
      'Waiting/constructor': 'sleeping',
    };
    for (const [raw, state] of Object.entries(table)) expect(portableState(raw, 'win32'), raw).toBe(state);
  });

  it('uses the table of the platform it runs on by default', () => {
    const running = { win32: 'Running', darwin: 'TH_STATE_RUNNING' }[process.platform as string] ?? 'R';
    expect(portableState(running)).toBe('running');
  });
});

interface Addon {
  currentThreadId(): number;
  threadKey(tid: number): string;
  prewarmThreadpool(): void;
}

const underWine = isWine;

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
const keysOf = (list: ThreadInfo[]) => new Set(list.map((t) => t.key));

describe.runIf(process.platform === 'win32')('Windows thread backend', () => {
  const addon = (): Addon =>
    (createRequire(import.meta.url)('node-gyp-build') as (dir: string) => Addon)(root);
  const workers: Worker[] = [];
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.terminate()));
  });

  /** A Worker spinning on its CPU, and the key and id of its thread. */
  async function busyWorker(): Promise<{ worker: Worker; thread: ThreadInfo }> {
    const before = keysOf(threads());
    const worker = new Worker('for (;;) {}', { eval: true });
    workers.push(worker);
    let thread: ThreadInfo | undefined;
    const found = await waitUntil(() => {
      thread = threads().find((t) => !before.has(t.key) && t.userCpuMs + t.systemCpuMs >= 100);
      return thread !== undefined;
    });
    expect(found, 'a new thread that used 100 ms of CPU').toBe(true);
    return { worker, thread: thread! };
  }

  it('lists the calling thread, with the key threadKey() gives it', () => {
    const list = threads();
    const id = addon().currentThreadId();
    const self = list.find((t) => t.id === id);
    expect(self).toBeDefined();
    expect(self!.key).toMatch(KEY_FORM);
    // The key's time is the start time, in ms since the epoch, written exactly.
    expect(Number(self!.key.slice(self!.key.indexOf('@') + 1))).toBeCloseTo(self!.startTime!, 3);
    expect(addon().threadKey(id)).toBe(self!.key);
    expect(addon().threadKey(0x7ffffff0)).toBe('');
  });

  it('gives every thread a unique key, the same in two snapshots and from threadKey()', () => {
    const first = threads();
    const second = threads();
    expect(new Set(first.map((t) => t.key)).size).toBe(first.length);
    expect(new Set(first.map((t) => t.id)).size).toBe(first.length);
    const secondById = new Map(second.map((t) => [t.id, t]));
    let compared = 0;
    for (const t of first) {
      const again = secondById.get(t.id);
      if (again === undefined) continue; // it ended between the two snapshots
      expect(again.key).toBe(t.key);
      expect(again.startTime).toBe(t.startTime);
      const key = addon().threadKey(t.id);
      if (key !== '') expect(key).toBe(t.key); // '' once it has ended
      compared++;
    }
    expect(compared).toBeGreaterThan(1);
  });

  it('gives start times within the life of this process', () => {
    const now = Date.now();
    const processStart = now - process.uptime() * 1000;
    const list = threads();
    for (const t of list) {
      expect(t.startTime, t.key).toBeDefined();
      // The process exists a little before Node counts its uptime.
      expect(t.startTime!, t.key).toBeGreaterThan(processStart - 10_000);
      expect(t.startTime!, t.key).toBeLessThanOrEqual(Date.now() + 1000);
    }
    const main = list.find((t) => t.id === addon().currentThreadId())!;
    expect(Math.min(...list.map((t) => t.startTime!))).toBe(main.startTime);
  });

  it("sees a busy Worker's CPU grow, and its thread disappear by key when it ends", async () => {
    const { worker, thread } = await busyWorker();
    const cpu = thread.userCpuMs + thread.systemCpuMs;
    const grew = await waitUntil(() => {
      const now = threads().find((t) => t.key === thread.key);
      return now !== undefined && now.userCpuMs + now.systemCpuMs >= cpu + 100;
    });
    expect(grew).toBe(true);
    await worker.terminate();
    expect(await waitUntil(() => !keysOf(threads()).has(thread.key))).toBe(true);
    expect(addon().threadKey(thread.id) === thread.key).toBe(false);
  });

  it('reads the names Node gives its own threads', () => {
    addon().prewarmThreadpool(); // the libuv pool exists from now on
    const list = threads();
    const main = list.find((t) => t.id === addon().currentThreadId())!;
    const count = (name: string) => list.filter((t) => t.name === name).length;
    // What each Node major names on Windows (seen under wine on 20.20, 22.23, 24.21):
    // 20 names no thread; 22 names its V8 platform's delayed-task thread and
    // the libuv pool; 24 also the main thread and V8's workers.
    if (NODE_MAJOR < 22) {
      expect(list.map((t) => t.name)).toEqual(list.map(() => ''));
      return;
    }
    expect(count('DelayedTaskSchedulerWorker')).toBe(1);
    expect(count('libuv-worker')).toBe(Number(process.env.UV_THREADPOOL_SIZE ?? 4));
    expect(main.name).toBe(NODE_MAJOR >= 24 ? 'MainThread' : '');
    if (NODE_MAJOR >= 24) expect(count('V8Worker')).toBeGreaterThan(0);
  });

  it('reports real states on Windows (and state 0 only under wine)', () => {
    const list = threads();
    const self = list.find((t) => t.id === addon().currentThreadId())!;
    if (underWine) {
      for (const t of list) expect(t.rawState, t.key).toBe('Initialized');
      for (const t of list) expect(t.state).toBe('unknown');
      return;
    }
    expect(self.state).toBe('running');
    expect(self.rawState).toBe('Running');
    // Node's threads other than this one wait for work now.
    const idle = list.filter((t) => t.id !== self.id);
    expect(idle.filter((t) => t.state === 'sleeping').length).toBeGreaterThan(idle.length / 2);
    for (const t of idle) expect(t.rawState, t.key).toMatch(/^(Waiting\/\w+|Running|Ready|Standby|DeferredReady)$/);
  });

  it('lists the threads of a child node.exe, and ESRCH once it has exited', async () => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      const pid = child.pid!;
      let list: ThreadInfo[] = [];
      // Node 20 names no thread on Windows.
      const named = () => NODE_MAJOR < 22 || list.some((t) => t.name === 'DelayedTaskSchedulerWorker');
      const listed = () => {
        try {
          list = threads({ pid });
        } catch {
          return false; // not yet started (wine registers a new process a little later)
        }
        return list.length > 1 && named();
      };
      expect(await waitUntil(listed)).toBe(true);
      for (const t of list) expect(t.key).toMatch(KEY_FORM);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill();
      await exited;
      const gone = await waitUntil(() => {
        try {
          threads({ pid });
          return false;
        } catch (error) {
          return (error as { code?: string }).code === 'ESRCH';
        }
      });
      expect(gone).toBe(true);
    } finally {
      child.kill();
    }
  });

  it('throws ESRCH for a pid no process has', () => {
    let caught: unknown;
    try {
      threads({ pid: 0x7ffffff0 });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught).toMatchObject({ code: 'ESRCH', pid: 0x7ffffff0, syscall: 'NtQuerySystemInformation' });
    expect(typeof (caught as { errno: unknown }).errno).toBe('number');
    expect((caught as Error).message).toContain('no such process');
  });

  it('throws ESRCH for a thread id: threads and processes share the id space', () => {
    expect(() => threads({ pid: addon().currentThreadId() })).toThrow(expect.objectContaining({ code: 'ESRCH' }));
  });

  it('rejects pids that are not positive safe integers', () => {
    for (const pid of ['1', -1, 0, 1.5, 2 ** 53, Number.NaN]) {
      expect(() => threads({ pid: pid as number })).toThrow(TypeError);
    }
  });

  it('lists the same threads and keys through the Toolhelp32 fallback', () => {
    const dir = mkdtempSync(join(tmpdir(), 'threadleak-toolhelp-'));
    try {
      const out = join(dir, 'out.json');
      // The child reads through the addon directly (no TypeScript loader in
      // every Node version); decode() is src/binding.ts's listThreads().
      const script = `
        const addon = require('node-gyp-build')(${JSON.stringify(root)});
        const decode = (r) => {
          const s = r.text.split('\\0');
          return Array.from({ length: r.numbers.length / 4 }, (_, i) => ({
            id: r.numbers[i * 4], startTime: r.numbers[i * 4 + 3],
            name: s[i * 3], rawState: s[i * 3 + 1], key: s[i * 3 + 2],
          }));
        };
        const self = decode(addon.listThreads(0));
        const main = self.find((t) => t.id === addon.currentThreadId());
        require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({
          parent: decode(addon.listThreads(${process.pid})),
          selfStates: self.map((t) => t.rawState),
          mainKeyMatches: main !== undefined && addon.threadKey(main.id) === main.key,
          unknown: addon.listThreads(0x7ffffff0).error,
        }));
      `;
      const before = threads();
      const result = spawnSync(process.execPath, ['-e', script], {
        cwd: root,
        env: { ...process.env, THREADLEAK_WIN32_TOOLHELP: '1' },
        stdio: 'ignore',
        timeout: 60_000,
      });
      const after = threads();
      expect(result.status).toBe(0);
      const got = JSON.parse(readFileSync(out, 'utf8')) as {
        parent: ThreadInfo[];
        selfStates: string[];
        mainKeyMatches: boolean;
        unknown: { code: string; errno: number; syscall: string };
      };
      expect(got.unknown).toMatchObject({ code: 'ESRCH', errno: 87, syscall: 'OpenProcess' }); // ERROR_INVALID_PARAMETER
      // The Toolhelp32 reader ran: it tells no state.
      expect(new Set(got.selfStates)).toEqual(new Set(['']));
      expect(got.mainKeyMatches).toBe(true);
      const toolhelp = new Map(got.parent.map((t) => [t.key, t]));
      const afterKeys = keysOf(after);
      const stable = before.filter((t) => afterKeys.has(t.key));
      expect(stable.length).toBeGreaterThan(1);
      for (const t of stable) {
        const other = toolhelp.get(t.key);
        expect(other, `${t.key} (${t.name}) listed by Toolhelp32`).toBeDefined();
        expect(other!.id).toBe(t.id);
        expect(other!.name).toBe(t.name);
        expect(other!.startTime).toBe(t.startTime);
      }
      const seen = new Set([...keysOf(before), ...afterKeys]);
      for (const key of toolhelp.keys()) expect(seen.has(key), key).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
