// LeakTracker and noResourceLeaks(): the scenarios of lionherd-core's LeakTracker tutorial (a tracked
// file wrapper, a connection pool that forgets to release, the exit-time report, the report grouped
// by kind), garbage collection while tracked, creation stacks, bad input, and resource-leak scopes.
//
// Garbage collection: in this process `gc` comes from --expose-gc set at run time (as
// jest-leak-detector does); the exit-time tests start `node --expose-gc` children that import the
// compiled package, so they need `npm run compile` first (checked below).
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  LeakError,
  LeakTracker,
  noResourceLeaks,
  ResourceLeakError,
  type LeakInfo,
  type LeakLogger,
} from '../src/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const root = fileURLToPath(new URL('..', import.meta.url));
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Full collections with turns in between: WeakRef targets are kept until the job that made them ends. */
async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await tick();
    gc();
  }
  await tick();
}

/** Tracks an object nothing else refers to; the WeakRef lets the test see whether it was collected. */
function trackGarbage(tracker: LeakTracker, options?: { name?: string; kind?: string }): WeakRef<object> {
  const obj = { payload: new Array(64).fill(0) };
  tracker.track(obj, options);
  return new WeakRef(obj);
}

function memoryLogger(): LeakLogger & { messages: string[] } {
  const messages: string[] = [];
  return { messages, warn: (message: string) => void messages.push(message) };
}

/** What `fn` throws; fails the test when it returns. */
function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

function expectInvalid(fn: () => unknown, pattern: RegExp): void {
  const error = caught(fn);
  expect(error).toBeInstanceOf(TypeError);
  expect((error as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
  expect((error as Error).message).toMatch(pattern);
}

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'threadleak-tracker-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('LeakTracker basics', () => {
  it('tracks, lists and untracks with name, kind, creation time and age', async () => {
    const tracker = new LeakTracker();
    const resource = { id: 1, data: 'example' };
    const before = Date.now();
    expect(tracker.track(resource, { name: 'resource-1', kind: 'custom' })).toBe(resource);
    const after = Date.now();

    const [info, ...rest] = tracker.live();
    expect(rest).toEqual([]);
    expect(info).toMatchObject({ id: 1, name: 'resource-1', kind: 'custom', collected: false });
    expect(info!.createdAt).toBeGreaterThanOrEqual(before);
    expect(info!.createdAt).toBeLessThanOrEqual(after);
    expect(info!.stack).toBeUndefined();
    await sleep(20);
    expect(tracker.live()[0]!.ageMs).toBeGreaterThanOrEqual(info!.ageMs + 15);

    expect(tracker.untrack(resource)).toBe(true);
    expect(tracker.untrack(resource)).toBe(false);
    expect(tracker.untrack({})).toBe(false);
    expect(tracker.live()).toEqual([]);
  });

  it('names entries <kind or object>-<n> by default, and keeps trackers apart', () => {
    const a = new LeakTracker();
    const b = new LeakTracker();
    const fn = () => {};
    a.track({});
    a.track({}, { kind: 'socket' });
    a.track(fn, { name: 'callback' });
    b.track({}, { kind: 'socket' });
    expect(a.live().map((l) => [l.id, l.name, l.kind])).toEqual([
      [1, 'object-1', 'object'],
      [2, 'socket-2', 'socket'],
      [3, 'callback', 'object'],
    ]);
    expect(b.live().map((l) => l.name)).toEqual(['socket-1']);
    expect(a.untrack(fn)).toBe(true);
    expect(b.untrack(fn)).toBe(false);
  });

  it('starts an entry over when the same object is tracked again', async () => {
    const tracker = new LeakTracker();
    const conn = {};
    tracker.track(conn, { name: 'first', kind: 'a' });
    const first = tracker.live()[0]!;
    await sleep(5);
    tracker.track({}, { name: 'other' });
    tracker.track(conn, { kind: 'b' });
    const live = tracker.live();
    expect(live.map((l) => l.name)).toEqual(['other', 'b-3']);
    expect(live[1]!.kind).toBe('b');
    expect(live[1]!.createdAt).toBeGreaterThan(first.createdAt);
    expect(tracker.untrack(conn)).toBe(true);
    expect(tracker.untrack(conn)).toBe(false);
    expect(tracker.live().map((l) => l.name)).toEqual(['other']);
  });

  it('clear() forgets every entry; ids keep counting', () => {
    const tracker = new LeakTracker();
    const kept = {};
    tracker.track(kept);
    tracker.track({});
    tracker.clear();
    expect(tracker.live()).toEqual([]);
    expect(tracker.untrack(kept)).toBe(false);
    tracker.track(kept);
    expect(tracker.live().map((l) => l.name)).toEqual(['object-3']);
  });
});

describe('bad input', () => {
  it('rejects values that are not objects, leaving no entry behind', () => {
    const tracker = new LeakTracker();
    const values: [unknown, RegExp][] = [
      [42, /obj must be an object or a function, got 42$/],
      ['conn', /got 'conn'$/],
      [null, /got null$/],
      [undefined, /got undefined$/],
      [true, /got true$/],
      [Symbol('s'), /got Symbol\(s\)$/],
      [10n, /got 10n$/],
    ];
    for (const [value, pattern] of values) {
      expectInvalid(() => tracker.track(value as object), pattern);
    }
    expect(tracker.live()).toEqual([]);
    expect(tracker.untrack(42 as unknown as object)).toBe(false);
    // Failed calls use no id: the first real entry is still number 1.
    tracker.track({});
    expect(tracker.live().map((l) => l.name)).toEqual(['object-1']);
  });

  it('rejects bad track() options, leaving no entry behind', () => {
    const tracker = new LeakTracker();
    const obj = {};
    expectInvalid(() => tracker.track(obj, { name: 5 as unknown as string }), /name must be a non-empty string, got 5/);
    expectInvalid(() => tracker.track(obj, { kind: '' }), /kind must be a non-empty string, got ''/);
    expectInvalid(() => tracker.track(obj, { nmae: 'x' } as never), /unknown option 'nmae'/);
    expectInvalid(() => tracker.track(obj, null as never), /options must be an object, got null/);
    expect(tracker.live()).toEqual([]);
    expect(tracker.untrack(obj)).toBe(false);
  });

  it('rejects bad tracker and reportAtExit() options without registering anything', () => {
    expectInvalid(() => new LeakTracker({ captureStack: 'yes' as unknown as boolean }), /captureStack must be a boolean/);
    expectInvalid(() => new LeakTracker({ stacks: true } as never), /unknown option 'stacks'/);
    const tracker = new LeakTracker();
    const listeners = process.listenerCount('exit');
    expectInvalid(() => tracker.reportAtExit({ logger: {} as LeakLogger }), /logger must be an object with a warn/);
    expectInvalid(() => tracker.reportAtExit({ log: console } as never), /unknown option 'log'/);
    expect(process.listenerCount('exit')).toBe(listeners);
  });
});

describe('tutorial scenarios', () => {
  // A file handle that tracks itself while open (the tutorial's TrackedFile).
  const files = new LeakTracker();
  class TrackedFile {
    fd: number | undefined;
    constructor(readonly path: string, readonly flags = 'r') {
      this.fd = openSync(path, flags);
      files.track(this, { name: `file:${path}`, kind: `file_${flags}` });
    }
    read(): string {
      const buffer = Buffer.alloc(statSync(this.path).size);
      readSync(this.fd!, buffer);
      return buffer.toString();
    }
    close(): void {
      if (this.fd === undefined) return;
      closeSync(this.fd);
      this.fd = undefined;
      files.untrack(this);
    }
    [Symbol.dispose](): void {
      this.close();
    }
  }

  it('a tracked file wrapper: `using` releases it, a forgotten close() shows up', () => {
    const path = join(tmp, 'data.txt');
    writeFileSync(path, 'test data\n');
    {
      using file = new TrackedFile(path);
      expect(file.read()).toBe('test data\n');
      expect(files.live()).toHaveLength(1);
    }
    expect(files.live()).toEqual([]);

    const leaked = new TrackedFile(path);
    leaked.read();
    expect(files.live().map((l) => [l.name, l.kind])).toEqual([[`file:${path}`, 'file_r']]);
    leaked.close();
    expect(files.live()).toEqual([]);
  });

  // A pool that tracks connections while they are out (the tutorial's TrackedConnectionPool).
  class Connection {
    constructor(readonly id: number) {}
    async execute(query: string): Promise<string> {
      await sleep(1);
      return `result of ${query}`;
    }
  }
  class Pool {
    readonly tracker = new LeakTracker();
    readonly #available: Connection[];
    constructor(size: number) {
      this.#available = Array.from({ length: size }, (_, i) => new Connection(i));
    }
    async acquire(): Promise<Connection> {
      const conn = this.#available.shift();
      if (!conn) throw new Error('pool exhausted');
      return this.tracker.track(conn, { name: `conn-${conn.id}`, kind: 'database_connection' });
    }
    async release(conn: Connection): Promise<void> {
      if (!this.tracker.untrack(conn)) throw new Error(`connection ${conn.id} is not out of this pool`);
      this.#available.push(conn);
    }
  }

  it('a connection pool that forgets to release: the report names the held connections, oldest first', async () => {
    const pool = new Pool(3);
    const conn0 = await pool.acquire();
    expect(await conn0.execute('SELECT 1')).toBe('result of SELECT 1');
    await pool.release(conn0);
    expect(pool.tracker.report().total).toBe(0);
    await expect(pool.release(conn0)).rejects.toThrow('connection 0 is not out of this pool');

    const conn1 = await pool.acquire();
    await sleep(5);
    const conn2 = await pool.acquire();
    await conn1.execute('SELECT 2');
    const report = pool.tracker.report();
    expect(report.total).toBe(2);
    expect(report.leaks.map((l) => l.name)).toEqual(['conn-1', 'conn-2']);
    expect(report.leaks[0]!.ageMs).toBeGreaterThan(report.leaks[1]!.ageMs);
    expect(report.text).toMatch(/^2 resources not released; oldest held \d+ ms\n/);
    expect(report.text.indexOf('"conn-1"')).toBeLessThan(report.text.indexOf('"conn-2"'));

    await pool.acquire(); // conn-0 comes back out: the pool is now empty
    await expect(pool.acquire()).rejects.toThrow('pool exhausted');
    await pool.release(conn1);
    await pool.release(conn2);
    expect(pool.tracker.report().leaks.map((l) => l.name)).toEqual(['conn-0']);
  });

  it('the grouped report: totals, count by kind in sorted order, oldest age, entries oldest first', async () => {
    const tracker = new LeakTracker();
    const resources: [string, string][] = [
      ['conn-1', 'database_connection'],
      ['file-1', 'file_handle'],
      ['conn-2', 'database_connection'],
      ['lock-1', 'mutex_lock'],
      ['file-2', 'file_handle'],
    ];
    const held: object[] = [];
    for (const [name, kind] of resources) {
      held.push(tracker.track({}, { name, kind }));
      await sleep(10);
    }
    const report = tracker.report();
    expect(report.total).toBe(5);
    expect(report.collected).toBe(0);
    expect(Object.entries(report.byKind)).toEqual([
      ['database_connection', 2],
      ['file_handle', 2],
      ['mutex_lock', 1],
    ]);
    expect(report.leaks.map((l) => l.name)).toEqual(resources.map(([name]) => name));
    const ages = report.leaks.map((l) => l.ageMs);
    expect(ages).toEqual([...ages].sort((a, b) => b - a));
    expect(report.oldestAgeMs).toBe(ages[0]);
    expect(report.oldestAgeMs).toBeGreaterThanOrEqual(45);

    const lines = String(report).split('\n');
    expect(String(report)).toBe(report.text);
    expect(lines[0]).toMatch(/^5 resources not released; oldest held \d+ ms$/);
    expect(lines[1]).toBe('  by kind: database_connection 2, file_handle 2, mutex_lock 1');
    expect(lines.slice(2).map((line) => /"([^"]+)"/.exec(line)?.[1])).toEqual(resources.map(([name]) => name));
    expect(lines[2]).toMatch(/^ {2}- "conn-1" \(database_connection, held \d+ ms\)$/);

    tracker.clear();
    const clean = tracker.report();
    expect(clean).toMatchObject({ total: 0, collected: 0, byKind: {}, oldestAgeMs: 0, leaks: [] });
    expect(String(clean)).toBe('Every tracked resource was released');
    expect(held).toHaveLength(5);
  });

  it("counts a kind named '__proto__' as a kind like any other", () => {
    const tracker = new LeakTracker();
    const obj = tracker.track({}, { kind: '__proto__' });
    const { byKind } = tracker.report();
    expect(Object.keys(byKind)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(byKind)).toBe(Object.prototype);
    expect(tracker.untrack(obj)).toBe(true);
  });
});

describe('weak references', () => {
  it('tracking never keeps an object alive; one collected while tracked stays reported', async () => {
    const tracker = new LeakTracker();
    const kept = tracker.track({}, { name: 'kept', kind: 'file' });
    const ref = trackGarbage(tracker, { name: 'dropped', kind: 'socket' });
    await collectGarbage();
    expect(ref.deref()).toBeUndefined();

    const live = tracker.live();
    expect(live.map((l) => [l.name, l.kind, l.collected])).toEqual([
      ['kept', 'file', false],
      ['dropped', 'socket', true],
    ]);
    const report = tracker.report();
    expect(report).toMatchObject({ total: 2, collected: 1, byKind: { file: 1, socket: 1 } });
    expect(report.text).toMatch(/^2 resources not released \(1 collected without release\)/);
    expect(report.text).toMatch(/"dropped" \(socket, held \d+ ms; collected without release\)/);
    expect(report.text).toMatch(/"kept" \(file, held \d+ ms\)/);
    expect(tracker.untrack(kept)).toBe(true);
  });

  it('an object untracked before it is collected leaves nothing behind', async () => {
    const tracker = new LeakTracker();
    const refs = Array.from({ length: 3 }, (_, i) => {
      const obj = {};
      tracker.track(obj, { name: `r${i}` });
      if (i !== 1) tracker.untrack(obj);
      return new WeakRef(obj);
    });
    await collectGarbage();
    expect(refs.map((r) => r.deref())).toEqual([undefined, undefined, undefined]);
    expect(tracker.live().map((l) => [l.name, l.collected])).toEqual([['r1', true]]);
    tracker.clear();
    await collectGarbage();
    expect(tracker.live()).toEqual([]);
  });

  it('with captureStack, an object that tracks itself in its constructor can still be collected', async () => {
    const tracker = new LeakTracker({ captureStack: true });
    class SelfTracking {
      constructor() {
        tracker.track(this, { kind: 'self' });
      }
    }
    const ref = (() => new WeakRef(new SelfTracking()))();
    await collectGarbage();
    expect(ref.deref()).toBeUndefined();
    const [info] = tracker.live();
    expect(info).toMatchObject({ name: 'self-1', collected: true });
    expect(info!.stack).toMatch(/^ {4}at new SelfTracking \(/);
  });
});

describe('creation stacks', () => {
  function openThing(tracker: LeakTracker): object {
    return tracker.track({}, { name: 'thing', kind: 'thing' });
  }

  it('captureStack records where track() was called and the report shows it', () => {
    const tracker = new LeakTracker({ captureStack: true });
    openThing(tracker);
    const [info] = tracker.live();
    const frames = info!.stack!.split('\n');
    expect(frames[0]).toMatch(/^ {4}at openThing \(.*tracker\.test\.ts:\d+:\d+\)$/);
    expect(frames.every((frame) => frame.startsWith('    at '))).toBe(true);
    expect(info!.stack).not.toMatch(/src[/\\]tracker\.ts/);

    const lines = tracker.report().text.split('\n');
    const at = lines.indexOf('      tracked at:');
    expect(at).toBe(3);
    // V8's "at " goes, so that no test runner takes the line for a frame of the error's own stack.
    expect(lines[at + 1]).toMatch(/^ {8}openThing \(.*tracker\.test\.ts:\d+:\d+\)$/);
  });

  it('without captureStack there is no stack and no "tracked at"', () => {
    const tracker = new LeakTracker({ captureStack: false });
    openThing(tracker);
    expect(tracker.live()[0]).not.toHaveProperty('stack');
    expect(tracker.report().text).not.toContain('tracked at');
  });

  it('says so when the stack is empty', () => {
    const tracker = new LeakTracker({ captureStack: true });
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      openThing(tracker);
    } finally {
      Error.stackTraceLimit = limit;
    }
    expect(tracker.live()[0]!.stack).toBe('');
    expect(tracker.report().text).toContain('tracked at: (no JavaScript stack)');
  });
});

describe('noResourceLeaks()', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("await using + 'raise': ResourceLeakError with the entries tracked in the scope and not released", async () => {
    const tracker = new LeakTracker();
    const before = tracker.track({}, { name: 'before' });
    let error: unknown;
    try {
      await using _scope = noResourceLeaks(tracker, { action: 'raise' });
      tracker.track({}, { name: 'leaked', kind: 'file' });
      tracker.untrack(tracker.track({}, { name: 'released' }));
      tracker.untrack(before);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ResourceLeakError);
    expect(error).toBeInstanceOf(LeakError);
    const leakError = error as ResourceLeakError;
    expect(leakError.name).toBe('ResourceLeakError');
    expect(leakError.code).toBe('ERR_RESOURCE_LEAK');
    expect(leakError.leaks.map((l: LeakInfo) => [l.name, l.kind])).toEqual([['leaked', 'file']]);
    expect(leakError.message).toMatch(
      /^1 resource leaked: tracked in the scope and not released when it ended\n {2}- "leaked" \(file, held [\d.]+ ms\)$/,
    );
  });

  it('entries tracked before the scope are not its leaks; a clean scope closes without a word', async () => {
    const tracker = new LeakTracker();
    tracker.track({}, { name: 'outside' });
    const logger = memoryLogger();
    {
      await using _scope = noResourceLeaks(tracker, { action: 'raise' });
      const conn = tracker.track({}, { name: 'inside' });
      tracker.untrack(conn);
    }
    const scope = noResourceLeaks(tracker, { action: 'log', logger });
    await scope.close();
    expect(logger.messages).toEqual([]);
    expect(tracker.live().map((l) => l.name)).toEqual(['outside']);
  });

  it("using (sync) + 'raise', and a second close is a no-op", () => {
    const tracker = new LeakTracker();
    const error = caught(() => {
      using _scope = noResourceLeaks(tracker, { action: 'raise' });
      tracker.track({}, { name: 'sync-leak' });
    });
    expect((error as ResourceLeakError).leaks.map((l) => l.name)).toEqual(['sync-leak']);

    const scope = noResourceLeaks(tracker, { action: 'raise' });
    tracker.track({}, { name: 'second' });
    expect(scope.leaks().map((l) => l.name)).toEqual(['second']);
    expect(() => scope.closeSync()).toThrow(ResourceLeakError);
    expect(() => scope.closeSync()).not.toThrow();
  });

  it("'warn' (the default) emits a ResourceLeakWarning with code ERR_RESOURCE_LEAK", async () => {
    const emit = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const tracker = new LeakTracker();
    const scope = noResourceLeaks(tracker);
    tracker.track({}, { name: 'warned', kind: 'socket' });
    await scope.close();
    expect(emit).toHaveBeenCalledTimes(1);
    const [message, options] = emit.mock.calls[0]!;
    expect(message).toMatch(/^1 resource leaked: .*\n {2}- "warned" \(socket, /);
    expect(options).toEqual({ type: 'ResourceLeakWarning', code: 'ERR_RESOURCE_LEAK' });
  });

  it("'log' sends the message to the logger, oldest first", async () => {
    const emit = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const tracker = new LeakTracker();
    const logger = memoryLogger();
    const scope = noResourceLeaks(tracker, { action: 'log', logger });
    tracker.track({}, { name: 'a' });
    tracker.track({}, { name: 'b' });
    await scope.close();
    expect(emit).not.toHaveBeenCalled();
    expect(logger.messages).toHaveLength(1);
    expect(logger.messages[0]).toMatch(/^2 resources leaked: tracked in the scope and not released when it ended\n {2}- "a" .*\n {2}- "b" /);
  });

  it('filters by name and by kind: equality, RegExp, predicate, null; both must include an entry', () => {
    const names = (options: Parameters<typeof noResourceLeaks>[1]) => {
      const tracker = new LeakTracker();
      const scope = noResourceLeaks(tracker, { ...options, action: 'raise' });
      tracker.track({}, { name: 'db-1', kind: 'database_connection' });
      tracker.track({}, { name: 'file-1', kind: 'file_r' });
      tracker.track({}, { name: 'file-2', kind: 'file_w' });
      const leaks = scope.leaks().map((l) => l.name);
      if (leaks.length === 0) scope.closeSync();
      else expect(() => scope.closeSync()).toThrow(ResourceLeakError);
      return leaks;
    };
    expect(names({})).toEqual(['db-1', 'file-1', 'file-2']);
    expect(names({ nameFilter: null, kindFilter: null })).toEqual(['db-1', 'file-1', 'file-2']);
    expect(names({ nameFilter: 'file-2' })).toEqual(['file-2']);
    expect(names({ nameFilter: 'file' })).toEqual([]);
    expect(names({ nameFilter: /^file-/g })).toEqual(['file-1', 'file-2']);
    expect(names({ nameFilter: (l) => l.name.endsWith('-1') })).toEqual(['db-1', 'file-1']);
    expect(names({ kindFilter: 'file_w' })).toEqual(['file-2']);
    expect(names({ kindFilter: /^file_/ })).toEqual(['file-1', 'file-2']);
    expect(names({ kindFilter: (l) => l.kind.startsWith('database') })).toEqual(['db-1']);
    expect(names({ nameFilter: /-1$/, kindFilter: /^file_/ })).toEqual(['file-1']);
  });

  it('gracePeriodMs waits for a release that comes after the body, and never waits when clean', async () => {
    const tracker = new LeakTracker();
    {
      await using _scope = noResourceLeaks(tracker, { action: 'raise', gracePeriodMs: 2000 });
      const socket = tracker.track({}, { name: 'closing' });
      setTimeout(() => tracker.untrack(socket), 20);
    }
    expect(tracker.live()).toEqual([]);

    const late = noResourceLeaks(tracker, { action: 'raise' });
    const socket = tracker.track({}, { name: 'closing-late' });
    setTimeout(() => tracker.untrack(socket), 20);
    await expect(late.close()).rejects.toThrow(ResourceLeakError);

    // Nothing tracked: no wait for the 60 s grace period (the test's own
    // timeout, far shorter, would end it).
    await noResourceLeaks(tracker, { action: 'raise', gracePeriodMs: 60_000 }).close();
  });

  it('states the grace period in the message when there was one', async () => {
    const tracker = new LeakTracker();
    const scope = noResourceLeaks(tracker, { action: 'raise', gracePeriodMs: 30 });
    tracker.track({});
    await expect(scope.close()).rejects.toThrow(/^1 resource leaked: tracked in the scope and not released 30 ms after it ended\n/);
  });

  it('an object collected without release inside the scope is a leak', async () => {
    const tracker = new LeakTracker();
    const scope = noResourceLeaks(tracker, { action: 'raise' });
    const ref = trackGarbage(tracker, { name: 'lost', kind: 'socket' });
    await collectGarbage();
    expect(ref.deref()).toBeUndefined();
    const error = await scope.close().catch((e: unknown) => e);
    expect((error as ResourceLeakError).leaks).toMatchObject([{ name: 'lost', kind: 'socket', collected: true }]);
    expect((error as Error).message).toContain('"lost" (socket, held');
    expect((error as Error).message).toContain('collected without release');
  });

  it('wraps a function: each call runs in its own scope, sync stays sync, async is checked after it settles', async () => {
    const tracker = new LeakTracker();
    const open = noResourceLeaks(
      tracker,
      function (this: { prefix: string }, name: string, leak: boolean) {
        const handle = tracker.track({}, { name: `${this.prefix}${name}` });
        if (!leak) tracker.untrack(handle);
        return name.length;
      },
      { action: 'raise' },
    );
    expect(open.length).toBe(2);
    const self = { prefix: 'h:', open };
    expect(self.open('ok', false)).toBe(2);
    expect(() => self.open('bad', true)).toThrow(/"h:bad"/);
    // The leak of the previous call is older than this call's scope.
    expect(self.open('next', false)).toBe(4);

    const fetchAll = noResourceLeaks(tracker, async (leak: boolean) => {
      const conn = tracker.track({}, { name: 'async-conn' });
      await sleep(1);
      if (!leak) tracker.untrack(conn);
      return 'done';
    }, { action: 'raise' });
    const pending = fetchAll(false);
    expect(pending).toBeInstanceOf(Promise);
    await expect(pending).resolves.toBe('done');
    await expect(fetchAll(true)).rejects.toThrow(/"async-conn"/);
  });

  it('decorates a method (as the TC39 decorator call does)', async () => {
    const tracker = new LeakTracker();
    const decorate = noResourceLeaks(tracker, { action: 'raise' });
    const context = { kind: 'method', name: 'run', addInitializer() {} } as unknown as ClassMethodDecoratorContext;
    class Job {
      constructor(readonly leak: boolean) {}
      async run(): Promise<string> {
        const lock = tracker.track({}, { name: 'lock', kind: 'mutex_lock' });
        if (!this.leak) tracker.untrack(lock);
        return 'ran';
      }
    }
    Job.prototype.run = decorate(Job.prototype.run, context);
    await expect(new Job(false).run()).resolves.toBe('ran');
    await expect(new Job(true).run()).rejects.toBeInstanceOf(ResourceLeakError);
  });

  it('when the body throws and a leak is raised too, both surface (SuppressedError shape)', async () => {
    const tracker = new LeakTracker();
    const bodyError = new Error('body failed');
    const wrapped = noResourceLeaks(tracker, () => {
      tracker.track({}, { name: 'half-open' });
      throw bodyError;
    }, { action: 'raise' });
    const error = caught(wrapped) as Error & { error: unknown; suppressed: unknown };
    expect(error.name).toBe('SuppressedError');
    expect(error.error).toBeInstanceOf(ResourceLeakError);
    expect((error.error as ResourceLeakError).leaks.map((l) => l.name)).toEqual(['half-open']);
    expect(error.suppressed).toBe(bodyError);

    let viaUsing: (Error & { error: unknown; suppressed: unknown }) | undefined;
    try {
      await using _scope = noResourceLeaks(tracker, { action: 'raise' });
      tracker.track({}, { name: 'half-open-2' });
      throw bodyError;
    } catch (e) {
      viaUsing = e as typeof viaUsing;
    }
    expect(viaUsing!.error).toBeInstanceOf(ResourceLeakError);
    expect(viaUsing!.suppressed).toBe(bodyError);
  });

  it('a body error alone passes through untouched', () => {
    const tracker = new LeakTracker();
    const bodyError = new Error('only the body');
    expect(caught(noResourceLeaks(tracker, () => {
      throw bodyError;
    }, { action: 'raise' }))).toBe(bodyError);
  });

  it('rejects a missing tracker, bad actions and bad options with a TypeError', () => {
    const tracker = new LeakTracker();
    expectInvalid(() => noResourceLeaks({} as LeakTracker), /^noResourceLeaks\(tracker, options\): tracker must be a LeakTracker, got \{\}/);
    expectInvalid(() => noResourceLeaks(undefined as unknown as LeakTracker, () => {}), /^noResourceLeaks\(tracker, fn, options\): tracker must be a LeakTracker/);
    expectInvalid(() => noResourceLeaks(tracker, { action: 'cancel' as 'raise' }), /action must be one of 'warn', 'log', 'raise', got 'cancel'/);
    expectInvalid(() => noResourceLeaks(tracker, { kindFilter: 5 as unknown as string }), /kindFilter must be a string, a RegExp, a function or null, got 5/);
    expectInvalid(() => noResourceLeaks(tracker, { nameFilter: {} as unknown as string }), /nameFilter must be/);
    expectInvalid(() => noResourceLeaks(tracker, { gracePeriodMs: -1 }), /gracePeriodMs must be a number from 0 to 60000, got -1/);
    expectInvalid(() => noResourceLeaks(tracker, { logger: console, excludeDaemon: true } as never), /unknown option 'excludeDaemon'/);
    expectInvalid(() => noResourceLeaks(tracker, () => {}, { action: 'crash' as 'raise' }), /^noResourceLeaks\(tracker, fn, options\): action/);
  });
});

describe('reportAtExit() (child processes)', () => {
  beforeAll(() => {
    // The children import the compiled package: it must be no older than its sources.
    for (const name of ['tracker', 'report', 'errors', 'scope', 'index']) {
      const source = statSync(join(root, 'src', `${name}.ts`)).mtimeMs;
      const built = statSync(join(root, 'dist', `${name}.js`), { throwIfNoEntry: false })?.mtimeMs ?? 0;
      if (built < source) throw new Error(`dist/${name}.js is older than src/${name}.ts: run \`npm run compile\` first`);
    }
  });

  function runNode(script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { cwd: root, env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  // The tutorial's ManagedFile: reports at exit, registered once however many files are opened.
  const managedFile = (path: string) => `
    import { closeSync, openSync } from 'node:fs';
    import { LeakTracker } from 'threadleak';
    const tracker = new LeakTracker();
    class ManagedFile {
      constructor(path) {
        tracker.reportAtExit();
        this.fd = openSync(path, 'r');
        tracker.track(this, { name: 'file:' + path, kind: 'file_r' });
      }
      close() { closeSync(this.fd); tracker.untrack(this); }
    }
    const path = ${JSON.stringify(path)};
    new ManagedFile(path).close();
    globalThis.leaked = new ManagedFile(path);
  `;

  it('reports what is unreleased at exit, once, with console.warn by default', async () => {
    const path = join(tmp, 'exit.txt');
    writeFileSync(path, 'leak detection test\n');
    const { code, stdout, stderr } = await runNode(managedFile(path));
    expect(code).toBe(0);
    expect(stdout).toBe('');
    const lines = stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^1 resource not released at process exit; oldest held [\d.]+ ms$/);
    expect(lines[1]).toBe('  by kind: file_r 1');
    expect(lines[2]).toMatch(new RegExp(`^ {2}- ${JSON.stringify(`file:${path}`).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(file_r, held`));
    expect(lines).toHaveLength(3);
  });

  it('stays silent when everything was released', async () => {
    const path = join(tmp, 'clean.txt');
    writeFileSync(path, 'clean\n');
    const { code, stdout, stderr } = await runNode(`${managedFile(path)}\n globalThis.leaked.close();`);
    expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('uses the last logger given, keeps the exit code of process.exit(), and reports objects collected without release', async () => {
    const { code, stdout, stderr } = await runNode(`
      import { LeakTracker } from 'threadleak';
      const tracker = new LeakTracker({ captureStack: true });
      tracker.reportAtExit();
      tracker.reportAtExit({ logger: { warn: (m) => process.stdout.write('LOGGED ' + m + '\\n') } });
      function acquire(name) { tracker.track({}, { name, kind: 'socket' }); }
      acquire('dropped');
      globalThis.held = tracker.track({}, { name: 'held', kind: 'lock' });
      await new Promise((r) => setImmediate(r));
      gc();
      await new Promise((r) => setImmediate(r));
      process.exit(3);
    `);
    expect(code).toBe(3);
    expect(stderr).toBe('');
    expect(stdout.match(/LOGGED /g)).toHaveLength(1);
    expect(stdout).toMatch(/^LOGGED 2 resources not released at process exit \(1 collected without release\); oldest held/);
    expect(stdout).toContain('  by kind: lock 1, socket 1\n');
    expect(stdout).toMatch(/ {2}- "dropped" \(socket, held [\d.]+ ms; collected without release\)\n {6}tracked at:\n {8}acquire \(/);
    expect(stdout).toMatch(/ {2}- "held" \(lock, held [\d.]+ ms\)\n {6}tracked at:\n/);
  });

  it('a logger that throws neither skips the other exit listeners nor changes the exit code: the report goes to stderr', async () => {
    const { code, stdout, stderr } = await runNode(`
      import { LeakTracker } from 'threadleak';
      const tracker = new LeakTracker();
      tracker.reportAtExit({ logger: { warn() { throw new Error('logger is down'); } } });
      process.on('exit', (exitCode) => process.stdout.write('next listener ran, exit code ' + exitCode + '\\n'));
      globalThis.held = tracker.track({}, { name: 'held', kind: 'lock' });
      process.exitCode = 3;
    `);
    expect({ code, stdout }).toEqual({ code: 3, stdout: 'next listener ran, exit code 3\n' });
    expect(stderr).toMatch(/^threadleak: the reportAtExit logger threw \(Error: logger is down\); its report follows:\n1 resource not released at process exit; /);
    expect(stderr).toContain('  - "held" (lock, held ');
  });
});
