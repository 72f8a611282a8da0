// threadStack() against threads the probe could harm or misread: deep in a
// small stack, taking signals with sigwaitinfo, blocking signals after an
// answer, in uninterruptible sleep, and captures from several Workers at once. What could crash the
// process runs in a child process of its own.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { threads, threadStack } from '../src/index.js';
import { CHILD_PRELUDE, DEFAULT_ENTRY, fixtureThreads, runNode, SLACK_MS, spawner, timed, waitUntil } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const fixture = fixtureThreads();
const start = fixture.start;


// The probe signal against small stacks, sigwait, seccomp, vfork and D state: Linux's.
describe.runIf(process.platform === 'linux')('threads the probe must not disturb', () => {
  // A probe pushes a signal frame (several KB, more with AVX-512 or AMX
  // state) onto the target's stack: on a thread parked near the end of a small
  // stack that would fault, and a fault in a signal frame kills the process.
  // So this runs in a child process of its own.
  it('never probes a thread parked with too little stack left for a signal frame; reads what the kernel shows', () => {
    const script = `
      ${CHILD_PRELUDE}
      const out = {};
      const parked = (tid) => /^State:\\s*S/m.test(require('node:fs').readFileSync('/proc/self/task/' + tid + '/status', 'utf8'));
      for (const headroomKb of [3, 4, 6, 10, 48]) {
        const { handle, tids } = spawner.start({ count: 1, stackKb: 64, headroomKb });
        // Parked: a thread still running shows the kernel no stack pointer to check.
        while (!parked(tids[0])) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        out[headroomKb] = [1, 2, 3].map(() => addon.captureStack(tids[0], 1000));
        spawner.stop(handle);
      }
      console.log(JSON.stringify(out));
    `;
    const child = runNode(['-e', script], { timeout: 30_000 });
    expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
    const results = JSON.parse(child.stdout) as Record<string, { frames: { symbol?: string; scanned?: boolean }[]; error?: string; detail?: string }[]>;
    // How much a signal needs depends on the CPU's register state (AVX-512,
    // AMX...): 3 KB is too little everywhere; 4 to 10 KB on some CPUs only.
    for (const headroomKb of ['3', '4', '6', '10']) {
      for (const r of results[headroomKb]!) {
        if (headroomKb !== '3' && r.error === undefined) continue;
        expect([headroomKb, r.error]).toEqual([headroomKb, 'stack-low']);
        expect(r.detail).toMatch(/^only \d+ bytes of stack are left below its stack pointer; a signal needs \d+$/);
        // The kernel's view instead: its PC, then scanned return addresses.
        expect(r.frames.slice(1).every((f) => f.scanned)).toBe(true);
        expect(r.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
      }
    }
    for (const r of results['48']!) {
      expect(r.error).toBeUndefined();
      expect(r.frames.map((f) => f.symbol)).toContain('spawner_thread_deep');
    }
  });

  it('probes a thread running deep in a small stack without the unwinder when the handler is short of stack', () => {
    // A running thread shows the kernel no stack pointer, so it cannot be
    // checked beforehand; the handler checks what is left below itself.
    const script = `
      ${CHILD_PRELUDE}
      const out = {};
      for (const headroomKb of [4, 5, 6, 48]) {
        const { handle, tids } = spawner.start({ count: 1, stackKb: 64, headroomKb, spin: true });
        out[headroomKb] = [1, 2, 3].map(() => addon.captureStack(tids[0], 1000));
        spawner.stop(handle);
      }
      console.log(JSON.stringify(out));
    `;
    const child = runNode(['-e', script], { timeout: 30_000 });
    expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
    const results = JSON.parse(child.stdout) as Record<string, { frames: { symbol?: string; scanned?: boolean }[]; error?: string }[]>;
    for (const [headroomKb, rs] of Object.entries(results)) {
      for (const r of rs) {
        expect([headroomKb, r.error]).toEqual([headroomKb, undefined]);
        expect(r.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
      }
    }
    // With room to spare it unwinds (no scanned frames).
    expect(results['48']!.every((r) => r.frames.every((f) => !f.scanned))).toBe(true);
  });

  it('still probes where process_vm_readv is denied (a seccomp profile), as it did before the stack checks', () => {
    // The stack checks read memory with process_vm_readv; without it they
    // cannot tell, and the probe must not then refuse every thread.
    const script = `
      ${CHILD_PRELUDE}
      spawner.denyProcessVmReadv();
      const { handle, tids } = spawner.start({ count: 1 });
      const results = [1, 2, 3].map(() => addon.captureStack(tids[0], 1000));
      spawner.stop(handle);
      console.log(JSON.stringify(results));
    `;
    const child = runNode(['-e', script], { timeout: 30_000 });
    expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
    for (const r of JSON.parse(child.stdout) as { frames: { symbol?: string }[]; error?: string }[]) {
      expect(r.error).toBeUndefined();
      expect(r.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
    }
  });

  it('never sends the probe to a thread that takes signals with sigwaitinfo (it would take the probe as its own)', async () => {
    // Such a thread blocks every signal, but the kernel unblocks the waited-for
    // ones while it waits, so SigBlk shows nothing blocked then.
    const { handle, tids } = start({ count: 1, sigwait: true });
    for (let i = 0; i < 20; i++) {
      const { stack, elapsedMs } = timed(tids[0]!, 1000);
      expect(stack.error).toMatch(new RegExp(`^thread ${tids[0]} blocks the stack probe`));
      // Its stack as the kernel shows it, unless it was just out of a wait and
      // waiting for a CPU the whole time (a busy machine): then it says so.
      if (stack.frames.length > 0) expect(stack.startRoutine).toBe('spawner_thread_main');
      else expect(stack.error).toContain('no frames recovered: the kernel shows no stack pointer while a thread runs');
      expect(elapsedMs).toBeLessThan(SLACK_MS);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(spawner.stats(handle)!.signals).toBe(0);
  });

  it('waits out a moment of uninterruptible sleep (a page fault, a vfork) and probes the thread after it', async () => {
    // In D for 2 ms at a time, with only moments out of it between children.
    const { handle, tids } = start({ count: 1, vforkMs: 2 });
    expect(await waitUntil(() => spawner.stats(handle)!.ticks >= 2)).toBe(true);
    // Seen in D (it is out of it only between two children).
    expect(await waitUntil(() => threads().find((t) => t.id === tids[0])?.rawState === 'D')).toBe(true);
    // Every capture answered, but for one now and then on a busy machine,
    // where the child may not run within the 50 ms a probe waits for a thread
    // in D (refusing threads in D, all ten were 'uninterruptible').
    let answered = 0;
    for (let i = 0; i < 10; i++) {
      const { stack, elapsedMs } = timed(tids[0]!, 1000);
      if (stack.error === undefined) {
        answered++;
        expect(stack.frames.map((f) => f.symbol)).toContain('spawner_thread_body');
      } else {
        expect(stack.error).toMatch(new RegExp(`^thread ${tids[0]} is in uninterruptible sleep`));
      }
      expect(elapsedMs).toBeLessThan(SLACK_MS);
    }
    expect(answered).toBeGreaterThanOrEqual(8);
  });

  it('does not wait long for a thread that stays in uninterruptible sleep; reads what the kernel shows', async () => {
    const { handle, tids } = start({ count: 1, vforkMs: 2500 });
    expect(await waitUntil(() => threads().find((t) => t.id === tids[0])?.rawState === 'D')).toBe(true);
    const ticks = spawner.stats(handle)!.ticks;
    const { stack, elapsedMs } = timed(tids[0]!, 1000);
    expect(stack.error).toMatch(new RegExp(`^thread ${tids[0]} is in uninterruptible sleep`));
    expect(stack.startRoutine).toBe('spawner_thread_main');
    // Its probe is still pending: later captures do not queue more. SigQ
    // counts this user's queued signals, those of other processes too (test
    // files running beside this one probe threads: each of their signals is
    // queued for microseconds), so the least of several readings counts.
    const readSigQ = () => Number(/^SigQ:\s*(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
    const queued = () => {
      let least = readSigQ();
      for (let i = 0; i < 10; i++) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        least = Math.min(least, readSigQ());
      }
      return least;
    };
    const before = queued();
    for (let i = 0; i < 5; i++) {
      const again = timed(tids[0]!, 1000);
      expect(again.stack.error).toMatch(new RegExp(`^thread ${tids[0]} is in uninterruptible sleep`));
      expect(again.elapsedMs).toBeLessThan(SLACK_MS);
    }
    expect(queued()).toBe(before);
    // Given up before its child ended (2.5 s), not when the thread woke.
    expect(spawner.stats(handle)!.ticks).toBe(ticks);
    expect(elapsedMs).toBeLessThan(SLACK_MS);
  });

  it('does not wait for a thread that answered a probe and blocks every signal since', async () => {
    const { handle, tids } = start({ count: 1, sleepMs: 5 });
    expect(threadStack(tids[0]!).error).toBeUndefined();
    spawner.blockSignals(handle);
    const ticks = spawner.stats(handle)!.ticks;
    expect(await waitUntil(() => spawner.stats(handle)!.ticks >= ticks + 2)).toBe(true);
    const { stack, elapsedMs } = timed(tids[0]!, 3000);
    expect(stack.error).toMatch(new RegExp(`^thread ${tids[0]} blocks the stack probe`));
    expect(elapsedMs).toBeLessThan(1000);
  });
});

// macOS reads a stack by suspending the thread and copying its stack (DESIGN.md,
// Platforms -> macOS): nothing runs on the target's stack, so how little of it
// is left does not matter, and the copy is bounded by the thread's pthread
// stack. In a child process all the same, as on Linux: a fault would kill it.
describe.runIf(process.platform === 'darwin')('threads deep in a small stack (macOS: suspension)', () => {
  it('reads a thread parked or running with only a few KB of a 64 KB stack left, to its entry', () => {
    const script = `
      ${CHILD_PRELUDE}
      const out = {};
      for (const spin of [false, true]) {
        for (const headroomKb of [4, 48]) {
          const { handle, tids } = spawner.start({ count: 1, stackKb: 64, headroomKb, spin });
          out[(spin ? 'spin-' : 'parked-') + headroomKb] = [0, 1000, 1000].map((timeoutMs) => addon.captureStack(tids[0], timeoutMs));
          spawner.stop(handle);
        }
      }
      console.log(JSON.stringify(out));
    `;
    const child = runNode(['-e', script], { timeout: 30_000 });
    expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
    const results = JSON.parse(child.stdout) as Record<string, { frames: { symbol?: string; scanned?: boolean }[]; error?: string; detail?: string }[]>;
    expect(Object.keys(results).sort()).toEqual(['parked-4', 'parked-48', 'spin-4', 'spin-48']);
    for (const [what, rs] of Object.entries(results)) {
      for (const r of rs) {
        expect([what, r.error, r.detail]).toEqual([what, undefined, undefined]);
        const names = r.frames.map((f) => f.symbol);
        expect(names).toContain('spawner_thread_deep');
        expect(names).toContain('spawner_thread_main');
        expect(r.frames.every((f) => !f.scanned)).toBe(true);
      }
    }
  });
});

describe('concurrent captures from several Workers', () => {
  it('every capture succeeds, none waits past its bound (one probe per target at a time)', async () => {
    const { tids } = start({ count: 4, name: 'concurrent' });
    const body = `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require('node:module').createRequire(workerData.root + '/package.json')('node-gyp-build')(workerData.root);
      const self = addon.currentThreadId();
      parentPort.postMessage({ self });
      // Alive until terminated: the others probe this thread too.
      parentPort.on('message', ({ others }) => {
        const outcomes = {};
        let slowest = 0;
        for (let i = 0; i < 300; i++) {
          // Fixture threads, the other Workers (busy capturing too) and itself.
          const targets = [...workerData.tids, ...others, self];
          const t0 = performance.now();
          const r = addon.captureStack(targets[i % targets.length], 1000);
          slowest = Math.max(slowest, performance.now() - t0);
          const target = targets[i % targets.length];
          const kind = target === self ? 'self' : workerData.tids.includes(target) ? 'fixture' : 'worker';
          const key = kind + ':' + (r.error ?? (r.frames.length > 0 ? 'ok' : 'empty'));
          outcomes[key] = (outcomes[key] ?? 0) + 1;
        }
        parentPort.postMessage({ outcomes, slowest });
      });
    `;
    const workers = [0, 1, 2].map(() => new Worker(body, { eval: true, workerData: { root: ROOT, tids } }));
    try {
      const selves = await Promise.all(
        workers.map((w) => new Promise<number>((resolve, reject) => {
          w.once('message', (m: { self: number }) => resolve(m.self));
          w.once('error', reject);
        })),
      );
      const done = workers.map((w) => new Promise<{ outcomes: Record<string, number>; slowest: number }>((resolve) => w.once('message', resolve)));
      workers.forEach((w, i) => w.postMessage({ others: selves.filter((_, j) => j !== i) }));
      // The main thread captures at the same time.
      for (let i = 0; i < 100; i++) expect(threadStack(tids[i % tids.length]!, { timeoutMs: 1000 }).startRoutine).toBe(DEFAULT_ENTRY);
      for (const { outcomes, slowest } of await Promise.all(done)) {
        // Every thread answers, even one still returning from another
        // Worker's probe (on a busy machine it may be preempted in the
        // handler for longer than several other probes take), and a Worker
        // busy in JavaScript or in a capture of its own. A Worker may also
        // be caught in uninterruptible sleep (waiting for its memory map
        // lock while others read its memory) for longer than a probe waits
        // for a thread in D: an honest answer, still within the bound.
        const honest = ['fixture:ok', 'self:ok', 'worker:ok', 'worker:uninterruptible'];
        expect(Object.keys(outcomes).filter((k) => !honest.includes(k))).toEqual([]);
        expect(outcomes['worker:ok']).toBeGreaterThan(0);
        expect(slowest).toBeLessThan(1000 + SLACK_MS);
      }
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
    }
  });
});
