import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { attributeStack, isSystemRuntimeModule } from '../src/attribution.js';
import { threads, threadStack, type NativeStack } from '../src/index.js';
import { DEFAULT_ENTRY, FIXTURE_ENTRY, FIXTURE_SHARED_LIBSTDCXX, fixtureThreads, KERNEL_VIEW_EMULATED, mainThreadId, SLACK_MS, spawner, spawnerPath, stackOutcome, timed, waitUntil } from './helpers.js';

const SPAWNER = realpathSync(spawnerPath);
const NODE = realpathSync(process.execPath);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const fixture = fixtureThreads();
const start = fixture.start;
const linux = process.platform === 'linux';
const darwin = process.platform === 'darwin';
/** A frame in the system libraries a blocked macOS thread waits in: the system call stubs or libpthread. */
const inDarwinWait = (module: string | undefined) => module !== undefined && /\/libsystem_(kernel|pthread)\.dylib$/.test(module);

/** The ids of this process's threads (Linux: straight from /proc, as cheap as it gets). */
const threadIds = (): number[] => (linux ? readdirSync('/proc/self/task').map(Number) : threads().map((t) => t.id));


const symbols = (stack: NativeStack) => stack.frames.map((f) => f.symbol);

describe('threadStack() of a fixture thread', () => {
  it(`unwinds a parked thread and attributes it to spawner.node and ${DEFAULT_ENTRY}`, () => {
    const { tids } = start({ count: 1, name: 'stack-parked' });
    const stack = threadStack(tids[0]!);
    expect(stack.error).toBeUndefined();
    expect(stack.threadId).toBe(tids[0]);
    expect(stack.module).toBe(SPAWNER);
    expect(stack.startRoutine).toBe(DEFAULT_ENTRY);
    // Innermost first: waiting in libc (Linux), ntdll (Windows) or libsystem_kernel / libsystem_pthread
    // (macOS: __psynch_cvwait, _pthread_cond_wait), called from the fixture's body.
    const wait = linux
      ? symbols(stack).indexOf('pthread_cond_wait')
      : darwin
        ? stack.frames.findIndex((f) => inDarwinWait(f.module))
        : stack.frames.findIndex((f) => f.module !== undefined && /[\\/]ntdll\.dll$/i.test(f.module));
    expect(wait).toBeGreaterThanOrEqual(0);
    const body = symbols(stack).indexOf('spawner_thread_body');
    const main = symbols(stack).indexOf(DEFAULT_ENTRY);
    expect(body).toBeGreaterThan(wait);
    expect(main).toBe(body + 1);
    for (const frame of stack.frames) {
      expect(frame.address).toMatch(/^0x[0-9a-f]+$/);
      expect(frame.scanned).toBeUndefined();
      if (frame.module !== undefined) expect(isAbsolute(frame.module)).toBe(true);
      if (frame.offset !== undefined) expect(Number.isSafeInteger(frame.offset) && frame.offset >= 0).toBe(true);
    }
    const mainFrame = stack.frames[main]!;
    expect(mainFrame.module).toBe(SPAWNER);
    // A return address a few bytes into the entry.
    expect(mainFrame.offset).toBeGreaterThan(0);
    expect(mainFrame.offset).toBeLessThan(256);
  });

  it("attributes a std::thread to the addon, not to libstdc++, which it enters through", () => {
    const { tids } = start({ count: 1, kind: 'std' });
    const stack = threadStack(tids[0]!);
    expect(stack.error).toBeUndefined();
    // Linux: a libstdc++.so frame; the Windows fixture links libstdc++ statically into spawner.node;
    // macOS: libc++'s entry (std::__1::__thread_proxy) is a template instantiated in spawner.node.
    if (FIXTURE_SHARED_LIBSTDCXX) expect(stack.frames.some((f) => f.module !== undefined && /libstdc\+\+\.so/.test(f.module))).toBe(true);
    expect(stack.module).toBe(SPAWNER);
    expect(stack.startRoutine).toBe(FIXTURE_ENTRY.std);
  });

  it('gives the same attribution for every thread of a group', () => {
    const { tids } = start({ count: 5 });
    for (const tid of tids) {
      const stack = threadStack(tid);
      expect([stack.error, stack.module, stack.startRoutine]).toEqual([undefined, SPAWNER, DEFAULT_ENTRY]);
    }
  });
});

// ELF symbol tables (.symtab) and the file mapped from disk: Linux's.
describe.runIf(linux)('functions that are not exported', () => {
  it.skipIf(KERNEL_VIEW_EMULATED)('names a static start routine from the file’s symbol table, probed or read from the kernel', async () => {
    const { tids } = start({ count: 1, kind: 'local' });
    for (const timeoutMs of [1000, 0]) {
      // The kernel shows a stack only once the thread is off CPU again (it
      // may still be returning from the probe): look until it does.
      let stack!: NativeStack;
      expect(await waitUntil(() => (stack = threadStack(tids[0]!, { timeoutMs })).frames.length > 0)).toBe(true);
      expect(stack.module).toBe(SPAWNER);
      expect(stack.startRoutine).toBe('spawner_local_thread_main(void*)');
      const entry = stack.frames.find((f) => f.symbol === stack.startRoutine)!;
      expect(entry.module).toBe(SPAWNER);
      expect(entry.offset).toBeGreaterThan(0);
      expect(entry.offset).toBeLessThan(64);
    }
  });

  // Needs this machine's own build of the addon, as the other ELF file.
  it.runIf(existsSync(join(ROOT, 'build/Release/threadleak.node')))('never names a function from a file that replaced the mapped one on disk', () => {
    // A copy of the fixture is loaded, then its file is replaced by another
    // ELF file (the threadleak addon) with other functions at those addresses.
    const dir = mkdtempSync(join(tmpdir(), 'threadleak-symtab-'));
    const copy = join(dir, 'spawner-copy.node');
    copyFileSync(SPAWNER, copy);
    const loaded = { exports: {} as typeof spawner };
    process.dlopen(loaded, copy);
    const { handle, tids } = loaded.exports.start({ count: 1, kind: 'local' });
    try {
      rmSync(copy);
      copyFileSync(join(ROOT, 'build/Release/threadleak.node'), copy);
      const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
      expect(stack.error).toBeUndefined();
      expect(stack.module).toBe(copy);
      expect(stack.startRoutine).toBeUndefined();
      expect(stack.frames.filter((f) => f.module === copy).map((f) => f.symbol)).not.toContain('spawner_local_thread_main(void*)');
    } finally {
      loaded.exports.stop(handle);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('code without unwind tables', () => {
  // The 'nocfi' fixture (hand-written assembly without CFI) and the stack scan are Linux's.
  it.runIf(linux && !KERNEL_VIEW_EMULATED)('scans on from where the unwinder stopped, up to the thread’s entry', () => {
    const { tids } = start({ count: 1, kind: 'nocfi' });
    const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
    expect(stack.error).toBeUndefined();
    const names = symbols(stack);
    // Unwound down to the trampoline, which has no unwind tables...
    const trampoline = names.indexOf('spawner_nocfi_trampoline');
    expect(trampoline).toBe(names.indexOf('spawner_thread_body') + 1);
    expect(stack.frames.slice(0, trampoline + 1).every((f) => f.scanned === undefined)).toBe(true);
    // ...then scanned: the entry it was called from, and the C runtime's thread start.
    const entry = names.indexOf('spawner_nocfi_thread_main');
    expect(entry).toBeGreaterThan(trampoline);
    expect(stack.frames.slice(trampoline + 1).every((f) => f.scanned === true)).toBe(true);
    expect(stack.frames.at(-1)!.module).toMatch(/\/libc\.so/);
    expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, 'spawner_nocfi_thread_main']);
  });

  // Windows x64: such a caller is no leaf (it called the body), so its return
  // address is not at RSP: one frame-pointer step passes it. V8 runs every
  // garbage collection of a busy isolate under such code (its register-pushing
  // trampoline in node.exe has no unwind information).
  it.runIf(process.platform === 'win32')('unwinds through a caller without unwind information by its frame pointer, to the thread’s entry', () => {
    const { tids } = start({ count: 1, kind: 'nocfi' });
    for (const timeoutMs of [0, 1000]) {
      const stack = threadStack(tids[0]!, { timeoutMs });
      expect(stack.error).toBeUndefined();
      const names = symbols(stack);
      const body = names.indexOf('spawner_thread_body');
      expect(body).toBeGreaterThan(0);
      // The caller without unwind information: in the fixture (a GCC or clang
      // build) or in memory no module holds (an MSVC build writes it there),
      // and never named after the export just before it.
      const caller = stack.frames[body + 1]!;
      expect([undefined, SPAWNER]).toContain(caller.module);
      expect(caller.symbol).toBeUndefined();
      expect(names[body + 2]).toBe('spawner_nocfi_thread_main');
      expect(names.at(-1)).toBe('RtlUserThreadStart');
      expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, 'spawner_nocfi_thread_main']);
    }
  });

  // macOS: no unwind tables are used at all. The trampoline keeps a frame record
  // (its prologue pushes one, as every function with a frame must on both ABIs),
  // so the frame-pointer walk passes it like any other function.
  it.runIf(darwin)('walks through a caller without unwind tables by its frame record, to the thread’s entry', () => {
    const { tids } = start({ count: 1, kind: 'nocfi' });
    for (const timeoutMs of [0, 1000]) {
      const stack = threadStack(tids[0]!, { timeoutMs });
      expect(stack.error).toBeUndefined();
      const names = symbols(stack);
      const body = names.indexOf('spawner_thread_body');
      expect(body).toBeGreaterThan(0);
      expect(names[body + 1]).toBe('spawner_nocfi_trampoline');
      expect(names[body + 2]).toBe('spawner_nocfi_thread_main');
      expect(stack.frames.filter((f) => f.scanned)).toEqual([]);
      expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, 'spawner_nocfi_thread_main']);
    }
  });

  it('does not scan a stack that was unwound to the thread’s entry', () => {
    const { tids } = start({ count: 1 });
    const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
    expect(stack.error).toBeUndefined();
    expect(stack.frames.length).toBeGreaterThan(2);
    expect(stack.frames.filter((f) => f.scanned)).toEqual([]);
  });
});

describe('threads that cannot answer the probe', () => {
  // Signals, and what the kernel shows of a thread: Linux's.
  it.runIf(linux && !KERNEL_VIEW_EMULATED)('reports a thread that blocks every signal without waiting, with scanned frames from its stack', () => {
    const { tids } = start({ count: 1, blockSignals: true });
    const { stack, elapsedMs } = timed(tids[0]!, 5000);
    expect(stack.error).toMatch(new RegExp(`^thread ${tids[0]} blocks the stack probe \\(signal \\d+\\)`));
    expect(stack.error).toMatch(/scanned: true/);
    // It never waits for a thread that cannot answer (bound: far below the 5 s timeout).
    expect(elapsedMs).toBeLessThan(SLACK_MS);
    // The PC the kernel reports, then words of its stack that are return addresses.
    expect(stack.frames.length).toBeGreaterThan(2);
    expect(stack.frames[0]!.scanned).toBeUndefined();
    expect(stack.frames.slice(1).every((f) => f.scanned === true)).toBe(true);
    const fixtureFrames = stack.frames.filter((f) => f.module === SPAWNER);
    expect(fixtureFrames.map((f) => f.symbol)).toContain('spawner_thread_main');
    expect(stack.module).toBe(SPAWNER);
    expect(stack.startRoutine).toBe('spawner_thread_main');
  });

  // What the kernel shows (/proc/<tid>/syscall, stack): Linux's.
  it.runIf(linux && !KERNEL_VIEW_EMULATED)('reads only what the kernel shows when timeoutMs is 0, without interrupting the thread', async () => {
    const { handle, tids } = start({ count: 1, sleepMs: 20 });
    expect(await waitUntil(() => spawner.stats(handle)!.ticks >= 1)).toBe(true);
    const before = spawner.stats(handle)!;
    // The kernel shows SP and PC only while the thread is off CPU, which this
    // one is but for a few µs per 20 ms: look again in the unlikely case.
    let stack = threadStack(tids[0]!, { timeoutMs: 0 });
    for (let i = 0; i < 5 && stack.frames.length === 0; i++) stack = threadStack(tids[0]!, { timeoutMs: 0 });
    expect(stack.error).toBe(
      `thread ${tids[0]} was not probed (timeoutMs is 0); frames recovered from what the kernel shows: its PC and a scan of its stack (scanned: true)`,
    );
    expect(stack.frames[0]!.scanned).toBeUndefined();
    expect(stack.frames.slice(1).every((f) => f.scanned === true)).toBe(true);
    expect(symbols(stack)).toContain('spawner_thread_main');
    expect(stack.startRoutine).toBe('spawner_thread_main');
    expect(await waitUntil(() => spawner.stats(handle)!.ticks >= before.ticks + 3)).toBe(true);
    expect(spawner.stats(handle)!.interrupted).toBe(before.interrupted);
  });

  it('returns an error result for ids that are not threads of this process', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)'], { stdio: 'ignore' });
    try {
      await waitUntil(() => child.pid !== undefined);
      for (const id of [1, child.pid!, 2 ** 31 + 5, Number.MAX_SAFE_INTEGER]) {
        const { stack, elapsedMs } = timed(id, 100);
        expect(stack).toEqual({ threadId: id, frames: [], error: `thread ${id} is not a thread of this process` });
        expect(elapsedMs).toBeLessThan(100 + SLACK_MS);
      }
    } finally {
      child.kill();
    }
  });

  it('reports a thread that has exited', async () => {
    const { handle, tids } = spawner.start({ count: 1 });
    fixture.stop(handle);
    // stop() joined it; the kernel may still be reaping it for a moment, and
    // then it is a thread that exited. Once gone from the thread list it is
    // no thread of this process (Linux hands tids out cyclically, Windows
    // ids are reused but not this soon in a quiet process).
    const exited = threadStack(tids[0]!);
    expect(exited.frames).toEqual([]);
    expect(exited.error).toMatch(new RegExp(`^thread ${tids[0]} (exited before its stack could be read|is not a thread of this process)$`));
    expect(await waitUntil(() => (linux ? !existsSync(`/proc/self/task/${tids[0]}`) : !threadIds().includes(tids[0]!)))).toBe(true);
    expect(threadStack(tids[0]!)).toEqual({ threadId: tids[0], frames: [], error: `thread ${tids[0]} is not a thread of this process` });
  });
});

// Windows' own kinds of thread entry, and threads another thread suspended.
describe.runIf(process.platform === 'win32')('threadStack() of Windows fixture threads', () => {
  for (const kind of ['win32', 'crt', 'std'] as const) {
    it(`attributes a '${kind}' thread to spawner.node and its entry`, () => {
      const { tids } = start({ count: 1, kind });
      const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
      expect(stack.error).toBeUndefined();
      expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, FIXTURE_ENTRY[kind]]);
      expect(symbols(stack).indexOf('spawner_thread_body')).toBeGreaterThanOrEqual(0);
    });
  }

  it('reads the stack of a suspended thread, which stays suspended and is joined once resumed', async () => {
    const { handle, tids } = spawner.start({ count: 1, suspended: true });
    try {
      for (let i = 0; i < 3; i++) {
        const stack = threadStack(tids[0]!, { timeoutMs: 1000 });
        expect(stack.error).toBeUndefined();
        expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, DEFAULT_ENTRY]);
        expect(symbols(stack).indexOf('spawner_thread_body')).toBeGreaterThanOrEqual(0);
      }
    } finally {
      expect(fixture.stop(handle)).toBe(true);
    }
    expect(await waitUntil(() => !threadIds().includes(tids[0]!))).toBe(true);
  });
});

// macOS reads a stack by suspending the thread for a moment (thread_suspend):
// no signal, so nothing a thread does with signals matters, no system call of
// it fails with EINTR, and timeoutMs 0 reads the whole stack too (DESIGN.md,
// Platforms -> macOS).
describe.runIf(darwin)('threadStack() of threads a signal could not read (macOS: suspension)', () => {
  it('reads a thread that blocks every signal like any other, at once, for every timeout', () => {
    const { tids } = start({ count: 1, blockSignals: true });
    for (const timeoutMs of [0, 1000]) {
      const { stack, elapsedMs } = timed(tids[0]!, timeoutMs);
      expect(stack.error).toBeUndefined();
      expect(stack.frames.filter((f) => f.scanned)).toEqual([]);
      expect([stack.module, stack.startRoutine]).toEqual([SPAWNER, 'spawner_thread_main']);
      expect(symbols(stack)).toContain('spawner_thread_body');
      expect(elapsedMs).toBeLessThan(SLACK_MS);
    }
  });

  it('reads a thread sleeping in nanosleep, with timeoutMs 0 too, and never interrupts its sleeps (no EINTR)', async () => {
    const { handle, tids } = spawner.start({ count: 2, sleepMs: 2 });
    try {
      expect(await waitUntil(() => spawner.stats(handle)!.ticks >= 2)).toBe(true);
      for (let i = 0; i < 50; i++) {
        const stack = threadStack(tids[i % 2]!, { timeoutMs: i % 4 < 2 ? 0 : 1000 });
        expect(stack.error).toBeUndefined();
        expect(stack.frames.filter((f) => f.scanned)).toEqual([]);
        expect(stack.startRoutine).toBe('spawner_thread_main');
      }
      const after = spawner.stats(handle)!;
      expect(after.interrupted).toBe(0);
      expect(await waitUntil(() => spawner.stats(handle)!.ticks >= after.ticks + 10)).toBe(true);
      expect(spawner.stats(handle)!.interrupted).toBe(0);
    } finally {
      expect(fixture.stop(handle)).toBe(true);
    }
    expect(await waitUntil(() => !threadIds().includes(tids[0]!))).toBe(true);
  });
});

describe('threads keep running after a probe', () => {
  // EINTR from the probe signal is Linux's (Windows and macOS suspend the thread instead: see above for macOS).
  it.runIf(linux)('a thread sleeping in nanosleep carries on (its sleeps see EINTR) and can be stopped', async () => {
    const { handle, tids } = spawner.start({ count: 2, sleepMs: 2 });
    try {
      let inSleep = 0;
      for (let i = 0; i < 50; i++) {
        const stack = threadStack(tids[i % 2]!, { timeoutMs: 1000 });
        expect(stack.error).toBeUndefined();
        expect(stack.startRoutine).toBe('spawner_thread_main');
        // Mostly caught sleeping; sometimes between two sleeps.
        if (symbols(stack).some((s) => s === 'nanosleep' || s === 'clock_nanosleep')) inSleep++;
      }
      expect(inSleep).toBeGreaterThan(0);
      const after = spawner.stats(handle)!;
      // The documented caveat: a probe interrupts a blocking call with EINTR.
      expect(after.interrupted).toBeGreaterThan(0);
      expect(after.interrupted).toBeLessThanOrEqual(50);
      expect(await waitUntil(() => spawner.stats(handle)!.ticks >= after.ticks + 10)).toBe(true);
    } finally {
      expect(fixture.stop(handle)).toBe(true);
    }
    // A joined thread can linger in /proc for a moment while the kernel reaps it.
    expect(await waitUntil(() => !readdirSync('/proc/self/task').includes(String(tids[0])))).toBe(true);
  });

  it('a parked thread probed many times still wakes up and is joined by stop()', async () => {
    const { handle, tids } = spawner.start({ count: 1 });
    // Back to back: the next probe often arrives while the thread is still
    // returning from the previous probe's handler.
    for (let i = 0; i < 200; i++) {
      const stack = threadStack(tids[0]!);
      expect(stack.error).toBeUndefined();
      expect(stack.startRoutine).toBe(DEFAULT_ENTRY);
      // Never the frames of threadleak's own handler.
      expect(stack.frames.filter((f) => f.module !== undefined && /[\\/]threadleak\.node$/.test(f.module))).toEqual([]);
      expect(symbols(stack).indexOf('spawner_thread_body')).toBeGreaterThan(0);
    }
    expect(fixture.stop(handle)).toBe(true);
    // A joined thread can linger in the list for a moment while the kernel reaps it.
    expect(await waitUntil(() => !threadIds().includes(tids[0]!))).toBe(true);
  });
});

describe('1000 captures of churning threads', () => {
  it('never crash or hang; every result comes back within its bound', () => {
    const { tids: parked } = start({ count: 10, name: 'churn-parked' });
    const before = new Set(threadIds());
    /** A thread of the churn, as the OS lists it now (waited for: the churn always has one soon). */
    const churning = (i: number): number => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = threadIds().filter((tid) => !before.has(tid));
        if (found.length > 0) return found[i % found.length]!;
        if (Date.now() > deadline) throw new Error('the churn started no thread in 5 s');
      }
    };
    spawner.churnStart(4);
    const outcomes = { parked: {} as Record<string, number>, churn: {} as Record<string, number> };
    let slowest = 0;
    try {
      for (let i = 0; i < 1000; i++) {
        // Three in four: a thread of the churn (short-lived, often gone or
        // half-started by the time it is probed); else a parked one.
        const kind = i % 4 === 3 ? 'parked' : 'churn';
        const id = kind === 'parked' ? parked[i % parked.length]! : churning(i);
        // A parked thread gets time to answer on a busy machine; the churn's
        // threads are often gone before 100 ms anyway.
        const timeoutMs = kind === 'parked' ? 2000 : 100;
        const { stack, elapsedMs } = timed(id, timeoutMs);
        slowest = Math.max(slowest, elapsedMs - timeoutMs);
        expect(stack.threadId).toBe(id);
        expect(Array.isArray(stack.frames)).toBe(true);
        let key = stackOutcome(stack);
        if (kind === 'parked' && key === 'ok' && stack.module !== SPAWNER) key = `ok, but attributed to ${stack.module}`;
        outcomes[kind][key] = (outcomes[kind][key] ?? 0) + 1;
      }
    } finally {
      expect(spawner.churnStop()).toBeGreaterThan(0);
    }
    // Past its timeout by the slack at most.
    expect(slowest).toBeLessThan(SLACK_MS);
    // A parked thread answers every probe, whatever the churn around it does.
    expect(outcomes.parked).toEqual({ ok: 250 });
    // The churn's threads were all probed or looked up, and had only the
    // outcomes a live, churning thread can have: never an OS error, a lost
    // probe signal or a capture left waiting for another.
    const expected = [
      'ok',
      'is not a thread of this process',
      'exited before its stack could be read',
      'blocks the stack probe',
      'did not answer the stack probe',
      'was not probed',
      'is in uninterruptible sleep',
    ];
    expect(Object.keys(outcomes.churn).filter((k) => !expected.includes(k))).toEqual([]);
    expect(Object.values(outcomes.churn).reduce((a, b) => a + b, 0)).toBe(750);
    // Still working afterwards.
    expect(threadStack(parked[0]!).startRoutine).toBe(DEFAULT_ENTRY);
  });
});

describe('the main thread and the calling thread', () => {
  it('unwinds the calling thread directly, without this addon’s own frames', () => {
    // Vitest runs this file on the main thread of its own process.
    const stack = threadStack(mainThreadId());
    expect(stack.error).toBeUndefined();
    expect(stack.frames.length).toBeGreaterThan(0);
    expect(stack.frames.some((f) => f.module === NODE)).toBe(true);
    expect(stack.frames.some((f) => f.module !== undefined && /threadleak\.node$/.test(f.module))).toBe(false);
  });

  it('probes the main thread from a Worker, and a Worker’s own thread', async () => {
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const load = require('node:module').createRequire(workerData.root + '/package.json')('node-gyp-build');
      const addon = load(workerData.root);
      const self = addon.currentThreadId();
      // The main thread is mostly idle in its event loop (epoll) meanwhile, but
      // may be running JavaScript at any one moment: look a few times.
      const nap = new Int32Array(new SharedArrayBuffer(4));
      const errors = [];
      let main;
      for (let i = 0; i < 100; i++) {
        main = addon.captureStack(workerData.pid, 1000);
        if (main.error) errors.push(main.error);
        if (main.frames.some((f) => f.symbol === 'uv_run')) break;
        Atomics.wait(nap, 0, 0, 5);
      }
      parentPort.postMessage({ main, errors, self: addon.captureStack(self, 1000) });
      `,
      { eval: true, workerData: { root: ROOT, pid: mainThreadId() } },
    );
    try {
      const { main, errors, self } = await new Promise<{ main: NativeStack; errors: string[]; self: NativeStack }>(
        (resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        },
      );
      expect(errors).toEqual([]);
      expect(main.frames.map((f) => f.symbol)).toContain('uv_run');
      expect(attributeStack(main.frames).module).toBe(NODE);
      expect(self.error).toBeUndefined();
      expect(self.frames.some((f) => f.module === NODE)).toBe(true);
    } finally {
      await worker.terminate();
    }
  });
});

describe('arguments', () => {
  it('rejects a bad id with a TypeError naming it', () => {
    for (const id of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5', null, undefined]) {
      expect(() => threadStack(id as number)).toThrow(
        expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/^threadStack\(\): id must be a positive safe integer/) }),
      );
    }
  });

  it('rejects a bad timeoutMs or options with a TypeError naming the option', () => {
    for (const timeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, 10_001, '10', null]) {
      expect(() => threadStack(process.pid, { timeoutMs: timeoutMs as number })).toThrow(
        expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/^threadStack\(\): options\.timeoutMs must be/) }),
      );
    }
    for (const options of [null, 5, 'fast']) {
      expect(() => threadStack(process.pid, options as object)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/options must be an object/) }),
      );
    }
    expect(threadStack(mainThreadId(), { timeoutMs: 10_000 }).error).toBeUndefined();
    expect(threadStack(mainThreadId(), {}).error).toBeUndefined();
  });
});

describe('attributeStack()', () => {
  const frame = (module?: string, symbol?: string) => ({ module, symbol });

  it('takes the outermost frame outside the C/C++ runtimes', () => {
    const frames = [
      frame('/lib/x86_64-linux-gnu/libc.so.6', 'pthread_cond_wait'),
      frame('/x/libfoo.so', 'foo_wait'),
      frame('/x/addon.node', 'addon_worker'),
      frame('/lib/x86_64-linux-gnu/libc.so.6'),
      frame('/lib/x86_64-linux-gnu/libc.so.6', 'clone3'),
    ];
    expect(attributeStack(frames)).toEqual({ module: '/x/addon.node', startRoutine: 'addon_worker' });
  });

  it('passes over C++ runtime templates instantiated in the addon, JIT frames and CRT entry code', () => {
    expect(
      attributeStack([
        frame('/x/addon.node', 'Pool::Run()'),
        frame(undefined, undefined),
        frame('/x/addon.node', 'std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (*)()> > >::_M_run()'),
        frame('/usr/lib/libstdc++.so.6.0.30'),
        frame('/usr/lib/libc.so.6'),
      ]),
    ).toEqual({ module: '/x/addon.node', startRoutine: 'Pool::Run()' });
    expect(attributeStack([frame('/usr/bin/node', 'node::Start(int, char**)'), frame('/usr/bin/node', '_start')])).toEqual({
      module: '/usr/bin/node',
      startRoutine: 'node::Start(int, char**)',
    });
    // Only runtime code outside the runtimes: the outermost of it.
    expect(attributeStack([frame('/x/a.node', 'std::__invoke_impl<void>()'), frame('/usr/lib/libc.so.6')])).toEqual({
      module: '/x/a.node',
      startRoutine: 'std::__invoke_impl<void>()',
    });
    expect(attributeStack([frame('/x/a.node')])).toEqual({ module: '/x/a.node' });
    expect(attributeStack([frame('/usr/lib/libc.so.6'), frame(undefined)])).toEqual({});
    expect(attributeStack([])).toEqual({});
  });

  it('names no start routine when the frames stop short of the thread entry', () => {
    // sharp's libvips: the unwinder stops at g_cond_wait_until (its unwind tables end there).
    const libvips = '/app/node_modules/@img/sharp-libvips-linux-x64/lib/libvips-cpp.so.8.18.7';
    expect(attributeStack([frame('/usr/lib/libc.so.6', 'syscall'), frame(libvips, 'g_cond_wait_until')])).toEqual({
      module: libvips,
    });
    // Stopped in unknown memory (JIT code, a bad return address): no entry either.
    expect(attributeStack([frame('/x/a.node', 'Pool::Wait()'), frame(undefined)])).toEqual({ module: '/x/a.node' });
    // Reaching libc (start_thread, clone3) or a CRT entry is reaching the entry.
    expect(attributeStack([frame('/x/a.node', 'Pool::Run()'), frame(undefined), frame('/usr/lib/libc.so.6')])).toEqual({
      module: '/x/a.node',
      startRoutine: 'Pool::Run()',
    });
    expect(attributeStack([frame('/usr/bin/node', 'main'), frame('/usr/bin/node', '_start')]).startRoutine).toBe('main');
  });

  it('knows the runtimes of Linux, Windows and macOS by file name', () => {
    for (const m of [
      '/usr/lib/x86_64-linux-gnu/libc.so.6',
      '/lib/ld-musl-x86_64.so.1',
      '/lib64/ld-linux-x86-64.so.2',
      '/lib/ld-linux-aarch64.so.1',
      '/usr/lib/libstdc++.so.6.0.30',
      '/usr/lib/libc++.so.1',
      '/usr/lib/libc++abi.so.1',
      '/lib/libgcc_s.so.1',
      '/lib/libpthread.so.0',
      'C:\\Windows\\SYSTEM32\\ntdll.dll',
      'C:\\Windows\\System32\\KERNEL32.DLL',
      'C:\\Windows\\System32\\KernelBase.dll',
      'C:\\Windows\\System32\\ucrtbase.dll',
      'C:\\Windows\\System32\\msvcrt.dll',
      'C:\\Windows\\System32\\MSVCP140.dll',
      'C:\\Windows\\System32\\VCRUNTIME140_1.dll',
      'C:\\mingw\\bin\\libwinpthread-1.dll',
      '/usr/lib/system/libsystem_pthread.dylib',
      '/usr/lib/system/libsystem_c.dylib',
      '/usr/lib/system/libdyld.dylib',
      '/usr/lib/libc++.1.dylib',
      '/usr/lib/libc++abi.dylib',
    ]) {
      expect([m, isSystemRuntimeModule(m)]).toEqual([m, true]);
    }
    for (const m of ['/x/addon.node', '/usr/bin/node', '/usr/lib/libcrypto.so.3', '/x/libcurl.so', '/x/libcx.so', 'C:\\x\\foo.dll', '/x/libzmq.dylib']) {
      expect([m, isSystemRuntimeModule(m)]).toEqual([m, false]);
    }
  });
});
