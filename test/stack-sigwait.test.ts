// The stack probe and threads that take their signals with sigwaitinfo() /
// sigtimedwait(), on a machine whose CPUs are all busy. Such a thread blocks
// every signal but the kernel unblocks the waited-for ones while it waits:
// once a wait ends (a timeout, a signal), the thread is runnable with its
// mask still unblocked and no system call to show until it gets a CPU. A
// probe sent then is taken by its next sigtimedwait as its own signal, and
// never answered. This file runs in its own process (vitest forks).
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { threadStack } from '../src/index.js';
import { fixtureThreads, spawner, stackOutcome } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const fixture = fixtureThreads();

interface SigwaitOptions {
  count: number;
  sigwait: true;
  /** How long one sigtimedwait waits (default 10 ms). */
  sigwaitMs?: number;
  /** SCHED_IDLE: on a busy machine a woken thread waits long for a CPU. */
  idle?: boolean;
  spin?: boolean;
}
/** The fixture's options and stats this file uses beyond helpers.ts's. */
const start = (options: SigwaitOptions | { count: number; idle?: boolean; spin?: boolean; name?: string }) =>
  fixture.start(options as Parameters<typeof fixture.start>[0]);
const probesTaken = (handle: number) => (spawner.stats(handle) as unknown as { probesTaken: number }).probesTaken;

/**
 * One busy-looping child process per CPU, each ending by itself after
 * `lifetimeMs` at most. kill() frees the CPUs at once; ended() waits (10 s at
 * most) until Node has seen them end. Call ended() only once this file's own
 * threads are stopped: 200 sigwait threads waking every millisecond keep the
 * main thread off the CPU for seconds under load (6 s seen with two busy
 * loops beside the test), and it must run for Node to see a child end.
 */
function busyCpus(lifetimeMs: number): { kill(): void; ended(): Promise<void> } {
  const children: ChildProcess[] = [];
  for (let i = 0; i < availableParallelism(); i++) {
    children.push(spawn(process.execPath, ['-e', `const end = Date.now() + ${lifetimeMs}; while (Date.now() < end) {}`], {
      stdio: 'ignore',
    }));
  }
  const exits = children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  }));
  return {
    kill() {
      for (const child of children) child.kill('SIGKILL');
    },
    async ended() {
      await Promise.all(exits.map((exit, i) => new Promise<void>((resolve, reject) => {
        const bound = setTimeout(() => reject(new Error(`busy child ${children[i]!.pid} not seen to end in 10 s`)), 10_000);
        void exit.then(() => {
          clearTimeout(bound);
          resolve();
        });
      })));
    },
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// sigtimedwait and the stack probe signal: Linux's.
describe.runIf(process.platform === 'linux')('threads that wait for signals with sigtimedwait(), every CPU busy', () => {
  it('never sends the probe to a fresh one: none of 200 first captures is taken as its own signal', async () => {
    const busy = busyCpus(60_000);
    const groups: number[] = [];
    const outcomes: Record<string, number> = {};
    let taken: number;
    try {
      try {
        for (let round = 0; round < 10; round++) {
          // Waits of 1 ms: a thread is often just out of one, not yet running.
          const { handle, tids } = start({ count: 20, sigwait: true, sigwaitMs: 1 });
          groups.push(handle);
          for (const tid of tids) {
            const stack = threadStack(tid, { timeoutMs: 200 });
            const key = stackOutcome(stack);
            outcomes[key] = (outcomes[key] ?? 0) + 1;
          }
        }
      } finally {
        busy.kill();
      }
      // A probe taken by a wait is counted once the thread runs again.
      await pause(50);
      taken = groups.reduce((sum, handle) => sum + probesTaken(handle), 0);
    } finally {
      fixture.stopAll();
      await busy.ended();
    }
    expect(taken).toBe(0);
    // Each capture refused the probe: seen in its wait ('blocks'), or, starved
    // of CPU on a busy machine, never seen where a probe is safe ('was not
    // probed'). None was probed, and all 200 were made.
    const refusals = ['blocks the stack probe', 'was not probed'];
    expect(Object.keys(outcomes).filter((k) => !refusals.includes(k)), JSON.stringify(outcomes)).toEqual([]);
    expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(200);
  }, 120_000);

  it('a probe a thread never answers holds up no other capture: a Worker’s captures of a parked thread all answer', async () => {
    // Threads that get a CPU only when one is idle: just out of a wait, or
    // spinning with every signal unblocked, they stay runnable but off CPU.
    const { tids: parked } = start({ count: 1, name: 'parked' });
    const sigwait = start({ count: 4, sigwait: true, sigwaitMs: 1, idle: true });
    const spinning = start({ count: 2, spin: true, idle: true });
    const busy = busyCpus(60_000);
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require('node:module').createRequire(workerData.root + '/package.json')('node-gyp-build')(workerData.root);
      const outcomes = {};
      let stop = false;
      parentPort.on('message', () => { stop = true; });
      (async () => {
        while (!stop) {
          const r = addon.captureStack(workerData.parked, 300);
          const key = r.error ?? 'ok';
          outcomes[key] = (outcomes[key] ?? 0) + 1;
          await new Promise((resolve) => setImmediate(resolve));
        }
        parentPort.postMessage(outcomes);
      })();
      `,
      { eval: true, workerData: { root: ROOT, parked: parked[0] } },
    );
    let workerOutcomes: Record<string, number>;
    const mine: Record<string, number> = {};
    try {
      await pause(20);
      for (const tid of [...sigwait.tids, ...spinning.tids]) {
        const stack = threadStack(tid, { timeoutMs: 1500 });
        const key = stackOutcome(stack);
        mine[key] = (mine[key] ?? 0) + 1;
      }
    } finally {
      busy.kill();
      const done = new Promise<Record<string, number>>((resolve) => worker.once('message', resolve));
      worker.postMessage('stop');
      workerOutcomes = await done;
      await worker.terminate();
    }
    let taken: number;
    try {
      await pause(50);
      taken = probesTaken(sigwait.handle);
    } finally {
      fixture.stopAll();
      await busy.ended();
    }
    // Not one capture of the parked thread waited for another's probe
    // ('busy': held for its whole 300 ms), and no probe was taken.
    expect(Object.keys(workerOutcomes)).toEqual(['ok']);
    expect(taken).toBe(0);
    expect(Object.keys(mine).every((k) => ['ok', 'blocks the stack probe', 'did not answer the stack probe', 'was not probed'].includes(k)), JSON.stringify(mine)).toBe(true);
  });
});
