// The Windows native-stack backend (native/win32/stack_*.cc): suspend, copy,
// resume, unwind the copy, name frames from export tables. The pure parts
// (attribution of Windows frames, the win32 messages) run everywhere; the
// native parts run on Windows (under wine here, on real Windows in CI).
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { win32 } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { attributeStack } from '../src/attribution.js';
import { captureStack, currentThreadId, prewarmThreadpool } from '../src/binding.js';
import { threads, threadStack, type NativeStack } from '../src/index.js';
import { formatStackError } from '../src/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NTDLL = 'C:\\Windows\\SYSTEM32\\ntdll.dll';
const KERNEL32 = 'C:\\Windows\\system32\\KERNEL32.DLL';
const ADDON = 'C:\\app\\node_modules\\native\\build\\Release\\Native.node';
const UCRT = 'C:\\Windows\\System32\\ucrtbase.dll';

describe('attribution of Windows frames', () => {
  const entry = [
    { symbol: 'BaseThreadInitThunk', module: KERNEL32 },
    { symbol: 'RtlUserThreadStart', module: NTDLL },
  ];

  it('takes a stack that ends in ntdll!RtlUserThreadStart as reaching the entry (case-insensitive, backslashes)', () => {
    const frames = [{ symbol: 'NtWaitForSingleObject', module: NTDLL }, { symbol: 'worker_main', module: ADDON }, ...entry];
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'worker_main' });
  });

  it('passes over the C runtime thread entry (ucrtbase) to the function it runs', () => {
    const frames = [{ symbol: 'worker_main', module: ADDON }, { symbol: 'thread_start', module: UCRT }, ...entry];
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'worker_main' });
  });

  it('names the start address when the frames stop short of the entry', () => {
    const frames = [{ symbol: 'NtWaitForSingleObject', module: NTDLL }, { module: 'C:\\app\\other.dll' }];
    const start = { symbol: 'worker_main', module: ADDON };
    expect(attributeStack(frames)).toEqual({ module: 'C:\\app\\other.dll' });
    expect(attributeStack(frames, start)).toEqual({ module: ADDON, startRoutine: 'worker_main' });
  });

  it('prefers frames that reach the entry over the start address', () => {
    const frames = [{ symbol: 'body', module: ADDON }, ...entry];
    expect(attributeStack(frames, { symbol: 'other', module: 'C:\\x\\y.dll' })).toEqual({ module: ADDON, startRoutine: 'body' });
  });

  it('ignores a start address inside a runtime (the CRT entry of _beginthreadex)', () => {
    const frames = [{ symbol: 'NtDelayExecution', module: NTDLL }, { module: ADDON }];
    expect(attributeStack(frames, { symbol: '_beginthreadex', module: UCRT })).toEqual({ module: ADDON });
  });

  it('uses the start address when every frame is runtime or JIT code', () => {
    const frames = [{ symbol: 'NtWaitForSingleObject', module: NTDLL }, {}, ...entry];
    expect(attributeStack(frames, { module: ADDON })).toEqual({ module: ADDON });
  });
});

describe('win32 stack error messages', () => {
  const base = { timeoutMs: 0, recoveredFrames: 0, platform: 'win32' };
  for (const code of ['not-found', 'exited', 'busy', 'os-error', 'unsupported', 'timeout']) {
    it(`'${code}' never mentions a signal or the kernel's view`, () => {
      const text = formatStackError(7, { ...base, code, detail: code === 'os-error' ? 'SuspendThread failed (error 5)' : undefined });
      expect(text).not.toMatch(/signal|kernel|scan/i);
    });
  }

  it('says which call failed and what was recovered', () => {
    const text = formatStackError(7, { ...base, code: 'os-error', detail: 'ReadProcessMemory(stack) failed (error 299)', recoveredFrames: 1 });
    expect(text).toBe('reading the stack of thread 7 failed: ReadProcessMemory(stack) failed (error 299); only its program counter was recovered');
  });
});

// ------------------------------------------------------------------ native

const isWindowsPath = (path: string) => /^([A-Za-z]:\\|\\\\[^?])/.test(path);
const sameFile = (a: string | undefined, b: string) => a !== undefined && a.toLowerCase() === b.toLowerCase();
const NODE = process.platform === 'win32' ? realpathSync(process.execPath) : process.execPath;
const inNode = (stack: NativeStack) => stack.frames.some((f) => sameFile(f.module, NODE));

// A Worker that reports its OS thread id, then idles, spins in JavaScript, or
// posts a message every few ms.
const WORKER_CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const addon = require(workerData.gypBuild)(workerData.root);
parentPort.postMessage({ id: addon.currentThreadId(), key: addon.threadKey(addon.currentThreadId()) });
if (workerData.mode === 'busy') { let x = 0; for (;;) { x += Math.sqrt(x + 1); if (x > 1e12) x = 0; } }
if (workerData.mode === 'idle') setInterval(() => {}, 60_000);
if (workerData.mode === 'tick') { let n = 0; setInterval(() => parentPort.postMessage(++n), 5); }
`;

interface Started {
  worker: Worker;
  id: number;
  key: string;
}

function startWorker(mode: 'busy' | 'idle' | 'tick' | 'exit'): Promise<Started> {
  const gypBuild = createRequire(import.meta.url).resolve('node-gyp-build');
  const worker = new Worker(WORKER_CODE, { eval: true, workerData: { gypBuild, root: ROOT, mode } });
  return new Promise((resolve, reject) => {
    worker.once('message', (m: { id: number; key: string }) => resolve({ worker, ...m }));
    worker.once('error', reject);
  });
}

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

describe.runIf(process.platform === 'win32')('threadStack() on Windows', () => {
  it('walks the calling thread itself into node.exe, with absolute Windows paths', () => {
    const stack = threadStack(currentThreadId(), { timeoutMs: 0 });
    expect(stack.error).toBeUndefined();
    expect(inNode(stack)).toBe(true);
    for (const frame of stack.frames) {
      expect(frame.address).toMatch(/^0x[0-9a-f]+$/);
      if (frame.module !== undefined) expect(isWindowsPath(frame.module)).toBe(true);
      if (frame.offset !== undefined) expect(Number.isSafeInteger(frame.offset) && frame.offset >= 0).toBe(true);
    }
  });

  for (const mode of ['idle', 'busy'] as const) {
    it(`reads a Worker ${mode === 'idle' ? 'idle in its event loop' : 'busy in JavaScript'}: frames in node.exe down to RtlUserThreadStart, attributed to node.exe`, async () => {
      const { worker, id, key } = await startWorker(mode);
      try {
        for (const timeoutMs of [0, 100]) {
          const stack = threadStack(id, { timeoutMs, key: key || undefined });
          expect(stack.error).toBeUndefined();
          expect(stack.frames.length).toBeGreaterThan(3);
          expect(inNode(stack)).toBe(true);
          const outermost = stack.frames[stack.frames.length - 1]!;
          expect(outermost.symbol).toBe('RtlUserThreadStart');
          expect(win32.basename(outermost.module!).toLowerCase()).toBe('ntdll.dll');
          expect(sameFile(stack.module, NODE)).toBe(true);
        }
        // The OS's start address of a Worker's thread is in node.exe too
        // (libuv's thread entry, statically linked with the CRT).
        const raw = captureStack(id, 0);
        expect(raw.start).toBeDefined();
        expect(raw.start!.address).toMatch(/^0x[0-9a-f]+$/);
        expect(sameFile(raw.start!.module, NODE)).toBe(true);
      } finally {
        await worker.terminate();
      }
    });
  }

  it('reads every thread of the process, the libuv threadpool included, attributed to node.exe', () => {
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
      // libuv names its pool threads from Node 22 (libuv 1.50) on.
      if (thread.name === 'libuv-worker') {
        expect(stack.frames[stack.frames.length - 1]!.symbol).toBe('RtlUserThreadStart');
        expect(sameFile(stack.module, NODE)).toBe(true);
      }
    }
    expect(read).toBeGreaterThan(4);
  });

  it("answers 'exited' for a stale key and reads nothing", async () => {
    const { worker, id } = await startWorker('idle');
    try {
      const stack = threadStack(id, { key: `${id}@1` });
      expect(stack.error).toMatch(/exited/);
      expect(stack.frames).toEqual([]);
    } finally {
      await worker.terminate();
    }
  });

  it("answers 'not-found' for an id that is no thread", () => {
    // Thread ids are multiples of 4: this one is none.
    const stack = threadStack(4_294_967_293);
    expect(stack.error).toBe('thread 4294967293 is not a thread of this process');
    expect(stack.frames).toEqual([]);
  });

  it('always resumes the thread: a Worker goes on posting messages after 50 captures', async () => {
    const { worker, id, key } = await startWorker('tick');
    let last = 0;
    worker.on('message', (n: number) => (last = n));
    try {
      expect(await waitUntil(() => last > 0)).toBe(true);
      for (let i = 0; i < 50; i++) {
        const stack = threadStack(id, { timeoutMs: i % 2 === 0 ? 0 : 100, key: key || undefined });
        expect(stack.error).toBeUndefined();
        expect(stack.frames.length).toBeGreaterThan(0);
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const after = last;
      expect(await waitUntil(() => last >= after + 10)).toBe(true);
    } finally {
      await worker.terminate();
    }
  });

  it('never crashes capturing threads that exit mid-way', async () => {
    const outcomes = new Set<string>();
    for (let round = 0; round < 15; round++) {
      const { worker, id, key } = await startWorker('exit');
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      let done = false;
      void exited.then(() => (done = true));
      for (let i = 0; i < 200 && !done; i++) {
        for (const k of [undefined, key || undefined]) {
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
