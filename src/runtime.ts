// Node awareness: what the runtime and this library own, and which OS thread
// belongs to which Worker.
//
// - The libuv threadpool is created lazily, all at once, on the first async
//   fs/zlib/crypto/dns call. prepareBaseline() pre-warms it before the first
//   baseline so that call, made inside a scope, is never reported.
// - Every Worker is mapped to its OS thread when it is constructed: Node
//   publishes on the 'worker_threads' diagnostics channel synchronously inside
//   the constructor, just after the thread started, so the newest thread not
//   seen in the previous snapshot is the Worker's.
// - A Worker is a daemon when it was unref()'d: it does not keep the process
//   alive, like a Python daemon thread.
import diagnosticsChannel from 'node:diagnostics_channel';
import type { Worker } from 'node:worker_threads';
import { prewarmThreadpool } from './binding.js';
import { threads, type ThreadInfo } from './snapshot.js';

/** Set to 1 / true to skip pre-warming the libuv threadpool. */
export const NO_PREWARM_ENV = 'THREADLEAK_NO_PREWARM';

export interface WorkerRecord {
  worker: Worker;
  /** The JavaScript stack that constructed the Worker, without Node's internal frames. */
  creationStack: string;
  /** False once the Worker was unref()'d (and until it is ref()'d again). */
  refed: boolean;
}

const workersByThreadKey = new Map<string, WorkerRecord>();
const ownThreadKeys = new Set<string>();
let lastSeenKeys = new Set<string>();
let prepared = false;
let tracking = false;

function prewarmDisabled(): boolean {
  const value = process.env[NO_PREWARM_ENV];
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/** Records what a snapshot saw, so a later Worker's thread can be told apart. */
export function noteSnapshot(list: readonly ThreadInfo[]): void {
  lastSeenKeys = new Set(list.map((t) => t.key));
}

/** Called before every baseline: pre-warms the pool once and starts Worker tracking. */
export function prepareBaseline(): void {
  startWorkerTracking();
  if (prepared) return;
  prepared = true;
  if (!prewarmDisabled()) prewarmThreadpool();
}

/** Registers a thread this library started, so no scope ever reports it. */
export function registerOwnThread(key: string): void {
  ownThreadKeys.add(key);
}

export function isOwnThread(key: string): boolean {
  return ownThreadKeys.has(key);
}

export function workerForThread(key: string): WorkerRecord | undefined {
  return workersByThreadKey.get(key);
}

/** The OS thread keys of the Workers alive now (for cancel). */
export function threadKeyOfWorker(worker: Worker): string | undefined {
  for (const [key, record] of workersByThreadKey) if (record.worker === worker) return key;
  return undefined;
}

function creationStack(): string {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  Error.captureStackTrace(holder, onWorkerCreated);
  Error.stackTraceLimit = limit;
  return (holder.stack ?? '')
    .split('\n')
    .slice(1)
    .filter((line) => !line.includes('node:internal') && !line.includes('node:diagnostics_channel'))
    .map((line) => line.trim())
    .join('\n');
}

function newestUnseen(list: readonly ThreadInfo[]): ThreadInfo | undefined {
  let best: ThreadInfo | undefined;
  for (const t of list) {
    if (lastSeenKeys.has(t.key) || workersByThreadKey.has(t.key) || t.id === process.pid) continue;
    // Newest start first; within one clock tick, the higher id (ids grow until they wrap).
    if (!best || (t.startTime ?? 0) > (best.startTime ?? 0) ||
        ((t.startTime ?? 0) === (best.startTime ?? 0) && t.id > best.id)) {
      best = t;
    }
  }
  return best;
}

function onWorkerCreated(message: unknown): void {
  const worker = (message as { worker?: Worker }).worker;
  if (!worker) return;
  const stack = creationStack();
  let list: ThreadInfo[];
  try {
    list = threads();
  } catch {
    return; // never break the user's `new Worker()`
  }
  const thread = newestUnseen(list);
  noteSnapshot(list);
  if (!thread) return;
  const record: WorkerRecord = { worker, creationStack: stack, refed: true };
  const { ref, unref } = worker;
  // Track ref state on the instance: Worker has no public "is ref'd" query on Node 20.
  worker.unref = function (this: Worker) {
    record.refed = false;
    return unref.call(this);
  };
  worker.ref = function (this: Worker) {
    record.refed = true;
    return ref.call(this);
  };
  workersByThreadKey.set(thread.key, record);
  worker.once('exit', () => workersByThreadKey.delete(thread.key));
}

function startWorkerTracking(): void {
  if (tracking) return;
  tracking = true;
  try {
    noteSnapshot(threads());
  } catch {
    tracking = false;
    return;
  }
  diagnosticsChannel.subscribe('worker_threads', onWorkerCreated);
}

// Track from import on, so Workers created before the first scope are known
// too. On a platform without a backend this quietly does nothing.
startWorkerTracking();
