// Node awareness: what the runtime and this library own, and which OS thread
// belongs to which Worker.
//
// - The libuv threadpool is created lazily, all at once, on the first async
//   fs/zlib/crypto/dns call. prepareBaseline() pre-warms it before the first
//   baseline so that call, made inside a scope, is never reported.
// - Every Worker is mapped to its OS thread when it is constructed: Node
//   publishes on the 'worker_threads' diagnostics channel synchronously inside
//   the constructor, just after the thread started, so the newest thread not
//   seen in the previous snapshot is the Worker's -- unless another thread (a
//   native library's, started from the libuv pool) started in the instant
//   between the two. Two things tell them apart:
//   - At that instant the Worker's thread has run only Node's start-up code,
//     so its name is still its creator's (Linux copies it) or the one Node
//     gives Worker threads; a candidate that already gave itself another name
//     is not it. (Names are labels, but this one cannot have been changed by
//     anyone else yet.)
//   - When more than one candidate is left, the newest is taken for now and
//     the mapping is settled later from what the kernel shows of each (no
//     signal is sent): a Worker's thread runs Node's own code, a library's
//     thread its own shared object.
// - A Worker is a daemon when it was unref()'d: it does not keep the process
//   alive, like a Python daemon thread.
import diagnosticsChannel from 'node:diagnostics_channel';
import { realpathSync } from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { attributeStack } from './attribution.js';
import { captureStack, currentThreadId, prewarmThreadpool } from './binding.js';
import { threads, type ThreadInfo } from './snapshot.js';

/** Set to 1 / true to skip pre-warming the libuv threadpool. */
export const NO_PREWARM_ENV = 'THREADLEAK_NO_PREWARM';

export interface WorkerRecord {
  worker: Worker;
  /** The JavaScript stack that constructed the Worker, without Node's internal frames. */
  creationStack: string;
  /** False once the Worker was unref()'d (and until it is ref()'d again). */
  refed: boolean;
  /** The key of its OS thread (may change once while the mapping is settled). */
  key: string;
}

/** A Worker whose OS thread could not be told for sure when it was constructed. */
interface Unsettled {
  record: WorkerRecord;
  /** Keys of the threads that may be its OS thread, the tentative one first. */
  candidates: string[];
  tries: number;
  /** performance.now() before which it is not looked at again. */
  nextTry: number;
}

const workersByThreadKey = new Map<string, WorkerRecord>();
const ownThreadKeys = new Set<string>();
const unsettled = new Set<Unsettled>();
let lastSeenKeys = new Set<string>();
let prepared = false;
let tracking = false;

function prewarmDisabled(): boolean {
  const value = process.env[NO_PREWARM_ENV];
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/**
 * Records what a snapshot saw, so a later Worker's thread can be told apart,
 * and returns the set of its keys (never mutated: a scope may keep it as its
 * baseline).
 */
export function noteSnapshot(list: readonly ThreadInfo[]): ReadonlySet<string> {
  lastSeenKeys = new Set(list.map((t) => t.key));
  return lastSeenKeys;
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

// At most this many candidates are looked at: the newest unseen threads. The
// Worker's thread is among them unless more threads than that started in the
// instant between it and the look (which can last tens of ms on a busy machine).
const MAX_CANDIDATES = 8;
// How often an ambiguous mapping is looked at (by the leak checks, at
// doubling intervals from 2 ms: about 2 s in all) before the tentative one is kept.
const MAX_SETTLE_TRIES = 10;
// The name Node (24 and later) gives a Worker's thread as it starts it.
const NODE_WORKER_THREAD_NAMES: ReadonlySet<string> = new Set(['WorkerThread']);

/** Threads not seen before and not mapped yet, newest first. */
function unseenNewestFirst(list: readonly ThreadInfo[]): ThreadInfo[] {
  return list
    .filter((t) => !lastSeenKeys.has(t.key) && !workersByThreadKey.has(t.key) && t.id !== process.pid)
    // Newest start first; within one clock tick, the higher id (ids grow until they wrap).
    .sort((a, b) => (b.startTime ?? 0) - (a.startTime ?? 0) || b.id - a.id);
}

let executable: string | undefined;

/** The real path of the Node executable (the module a Worker's thread is attributed to). */
function nodeExecutable(): string {
  if (executable === undefined) {
    try {
      executable = realpathSync(process.execPath);
    } catch {
      executable = process.execPath;
    }
  }
  return executable;
}

/**
 * Where a thread's code comes from, from the kernel's view of it (no signal):
 * 'node' for Node's own code, 'other' for a library's, undefined when the
 * kernel shows nothing (the thread is running).
 */
function codeOf(thread: ThreadInfo): 'node' | 'other' | undefined {
  let module: string | undefined;
  try {
    module = attributeStack(captureStack(thread.id, 0, thread.key).frames).module;
  } catch {
    return undefined;
  }
  if (module === undefined) return undefined;
  return module === nodeExecutable() || module === process.execPath ? 'node' : 'other';
}

function remap(record: WorkerRecord, key: string): void {
  if (record.key === key) return;
  if (workersByThreadKey.get(record.key) === record) workersByThreadKey.delete(record.key);
  record.key = key;
  workersByThreadKey.set(key, record);
}

/**
 * Settles the Workers whose OS thread was ambiguous at construction: the one
 * candidate that runs Node's code, or the one the kernel shows nothing of
 * when every other runs a library's code. `list` is a fresh snapshot.
 */
export function settleWorkerThreads(list: readonly ThreadInfo[]): void {
  if (unsettled.size === 0) return;
  const byKey = new Map(list.map((t) => [t.key, t]));
  const now = performance.now();
  for (const entry of unsettled) {
    if (now < entry.nextTry) continue;
    entry.tries++;
    entry.nextTry = now + 2 ** entry.tries;
    const tentative = byKey.get(entry.record.key);
    // The common case: the newest was the Worker's after all (one look).
    if (tentative && codeOf(tentative) === 'node') {
      unsettled.delete(entry);
      continue;
    }
    const alive = entry.candidates
      .map((key) => byKey.get(key))
      .filter((t): t is ThreadInfo => t !== undefined && t.state !== 'zombie' &&
        (t.key === entry.record.key || !workersByThreadKey.has(t.key)));
    const code = alive.map(codeOf);
    const node = alive.filter((_, i) => code[i] === 'node');
    const unknown = alive.filter((_, i) => code[i] === undefined);
    let settled: ThreadInfo | undefined;
    if (node.length === 1) settled = node[0];
    else if (node.length === 0 && unknown.length === 1) settled = unknown[0];
    if (settled) remap(entry.record, settled.key);
    if (settled || entry.tries >= MAX_SETTLE_TRIES) unsettled.delete(entry);
  }
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
  const unseen = unseenNewestFirst(list);
  noteSnapshot(list);
  let creatorName: string | undefined;
  try {
    const self = currentThreadId();
    creatorName = list.find((t) => t.id === self)?.name;
  } catch {
    // no creator name: no candidate is ruled out by its name
  }
  const named = unseen.filter((t) => t.name === creatorName || NODE_WORKER_THREAD_NAMES.has(t.name));
  const candidates = creatorName === undefined || named.length === 0 ? unseen : named;
  const thread = candidates[0];
  if (!thread) return;
  const record: WorkerRecord = { worker, creationStack: stack, refed: true, key: thread.key };
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
  let entry: Unsettled | undefined;
  if (candidates.length > 1) {
    const keys = candidates.slice(0, MAX_CANDIDATES).map((t) => t.key);
    entry = { record, candidates: keys, tries: 0, nextTry: 0 };
    unsettled.add(entry);
  }
  worker.once('exit', () => {
    if (entry) unsettled.delete(entry);
    if (workersByThreadKey.get(record.key) === record) workersByThreadKey.delete(record.key);
  });
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
