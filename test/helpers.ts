// Shared test helpers: the native spawner fixture and bounded polling.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import { threadStack, type NativeStack } from '../src/index.js';

export interface SpawnOptions {
  count?: number;
  /** At most 15 bytes (the Linux limit). */
  name?: string;
  /** Block every signal in the new threads. */
  blockSignals?: boolean;
  /** End by themselves after this many ms (default: wait for stop()). */
  lifetimeMs?: number;
  /**
   * 'pthread' (default), 'std' (std::thread), 'local' (a pthread entry that is
   * not exported) or 'nocfi' (a pthread whose body is called through code
   * without unwind tables).
   */
  kind?: 'pthread' | 'std' | 'local' | 'nocfi';
  /** Sleep in nanosleep(sleepMs) in a loop instead of parking; see stats(). */
  sleepMs?: number;
  /** The threads' stack size (pthreads only). */
  stackKb?: number;
  /** Park with only about this much stack left below (pthreads only). */
  headroomKb?: number;
  /** Busy-loop instead of parking (state R, no system call). */
  spin?: boolean;
  /** Block every signal and take them with sigtimedwait in a loop; see stats().signals. */
  sigwait?: boolean;
  /** vfork() in a loop a child that sleeps this long: the thread waits in state D; see stats().ticks. */
  vforkMs?: number;
}

export interface Spawner {
  start(options?: SpawnOptions): { handle: number; tids: number[] };
  stop(handle: number): boolean;
  churnStart(width?: number): void;
  churnStop(): number;
  /** Wake-ups and EINTR-interrupted sleeps of a `sleepMs` group, signals taken by a `sigwait` group; null for an unknown handle. */
  stats(handle: number): { ticks: number; interrupted: number; signals: number } | null;
  /** The sleepers of a `sleepMs` group block every signal from their next wake-up on. */
  blockSignals(handle: number): boolean;
  /** From now on process_vm_readv fails with EPERM in this whole process (a seccomp filter). */
  denyProcessVmReadv(): void;
  /** Installs a process-wide handler that counts deliveries of signal `sig`. */
  countSignal(sig: number): void;
  signalCount(sig: number): number;
}

const require = createRequire(import.meta.url);
export const spawnerPath = require.resolve('./fixtures/spawner/build/Release/spawner.node');
export const spawner = require(spawnerPath) as Spawner;

/**
 * The start of a CommonJS script for `node -e` (tests that need a fresh
 * process, or one that may crash): `addon` is threadleak's native addon as
 * node-gyp-build loads it, `spawner` the fixture.
 */
export const CHILD_PRELUDE = (() => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  return `
    const addon = require('node:module').createRequire(${JSON.stringify(`${root}package.json`)})('node-gyp-build')(${JSON.stringify(root)});
    const spawner = require(${JSON.stringify(spawnerPath)});
  `;
})();

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last result. */
export async function waitUntil(check: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/**
 * Fixture threads for one test file: everything started through `start` and
 * not stopped by the test is stopped after each test.
 */
export function fixtureThreads() {
  const handles = new Set<number>();
  afterEach(() => {
    for (const handle of handles) spawner.stop(handle);
    handles.clear();
  });
  return {
    start(options?: SpawnOptions) {
      const started = spawner.start(options);
      handles.add(started.handle);
      return started;
    },
    stop(handle: number): boolean {
      handles.delete(handle);
      return spawner.stop(handle);
    },
    stopAll(): void {
      for (const handle of handles) spawner.stop(handle);
      handles.clear();
    },
  };
}

// Never-hang checks only: a capture must come back within its timeout plus
// this (procfs reads and symbolization on a loaded CI machine).
export const SLACK_MS = 2000;

/** threadStack(id, { timeoutMs }) and how long it took. */
export function timed(id: number, timeoutMs: number): { stack: NativeStack; elapsedMs: number } {
  const t0 = performance.now();
  const stack = threadStack(id, { timeoutMs });
  return { stack, elapsedMs: performance.now() - t0 };
}

/** The creation stack of a Worker that piscina starts for the caller's startPool(), as V8 prints it. */
export const PISCINA_CREATION_STACK: readonly string[] = [
  'at new WorkerInfo (/app/node_modules/piscina/dist/worker_pool/index.js:38:23)',
  'at ThreadPool._addNewWorker (/app/node_modules/piscina/dist/index.js:139:28)',
  'at ThreadPool._ensureMinimumWorkers (/app/node_modules/piscina/dist/index.js:132:18)',
  'at new ThreadPool (/app/node_modules/piscina/dist/index.js:123:14)',
  'at new Piscina (/app/node_modules/piscina/dist/index.js:656:53)',
  'at startPool (file:///app/pool.mjs:4:31)',
  'at file:///app/pool.mjs:6:14',
];
