// Node awareness: what the runtime owns, and which OS thread belongs to which
// Worker. Importing this module loads nothing native and reads nothing from
// the OS (DESIGN.md, Semantics -> Lazy).
//
// - The libuv threadpool is created lazily, all at once, on the first async
//   fs/zlib/crypto/dns call. prepareBaseline() pre-warms it before the first
//   baseline so that call, made inside a scope, is never reported.
// - `new Worker()` is only noted when it happens: Node publishes on the
//   'worker_threads' diagnostics channel synchronously inside the
//   constructor, just after the Worker's OS thread started. The note holds
//   the Worker, its creation stack, when it was made (the wall clock, which
//   the kernel's thread start times are given in), a sequence number, and
//   whether it is ref'd. No system call.
// - A Worker is matched to its OS thread only when a scope looks at threads
//   it did not have in its baseline (mapWorkers), from what can still be
//   known then:
//   - its thread is not in the baseline of a scope opened before the Worker
//     was made (and is in that of a scope opened after it);
//   - its thread started no later than the note (start times are exact to a
//     clock tick, 10 ms, and rounded down), and most likely just before it:
//     any thread started before the constructor ran is older;
//   - its name, where Node tells it (worker.threadName, 24 and later: its
//     `name` option or `WorkerThread`, cut to 15 bytes): a thread that has
//     neither that name nor its creator's is not it. (Names are labels, but
//     this one nobody else has changed yet.)
//   - what the kernel shows of it (no signal is sent): a Worker's thread runs
//     Node's own code, a library's thread its own shared object. A thread
//     that is running shows nothing: a match to it is kept as a guess and
//     looked at again by later looks.
//   Workers are matched newest first, each to the newest thread left that
//   passes: thread ids and start times grow in the order threads start.
//   A Worker that exited before any look is simply dropped.
// - A Worker is a daemon when it was unref()'d: it does not keep the process
//   alive, like a Python daemon thread.
import diagnosticsChannel from 'node:diagnostics_channel';
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { attributeStack } from './attribution.js';
import { captureStack, currentThreadId, listThreads, prewarmThreadpool, type RawThread } from './binding.js';
import { systemError } from './errors.js';
import type { ThreadInfo } from './snapshot.js';

/** Set to 1 / true to skip pre-warming the libuv threadpool. */
export const NO_PREWARM_ENV = 'THREADLEAK_NO_PREWARM';

export interface WorkerRecord {
  worker: Worker;
  /** The JavaScript stack that constructed the Worker, without Node's internal frames. */
  creationStack: string;
  /** False once the Worker was unref()'d (and until it is ref()'d again). */
  refed: boolean;
  /** Order of construction, from 1. */
  readonly seq: number;
  /** Date.now() when the constructor published it: its thread started no later. */
  readonly createdAt: number;
  /** The name Node gave its thread, where Node tells it (worker.threadName, 24 and later). */
  readonly threadName: string | undefined;
  /** The key of its OS thread, once a look has matched it (a guess until `settled`). */
  key: string | undefined;
  settled: boolean;
  /** How many looks tried to settle a guess; performance.now() before which it is not tried again. */
  tries: number;
  nextTry: number;
}

/** A scope's baseline as the matching reads it: the threads it held, and the last Worker made before it. */
export interface WorkerBaseline {
  keys: ReadonlySet<string>;
  seq: number;
}

const records = new Map<Worker, WorkerRecord>();
const recordsByKey = new Map<string, WorkerRecord>();
let lastSeq = 0;
// Date.now as it was at load: a test's fake clock must not move a Worker's note.
const wallClockNow = Date.now;
let prepared = false;

/** True when THREADLEAK_NO_PREWARM turns pre-warming the libuv pool off. */
export function prewarmDisabled(): boolean {
  const value = process.env[NO_PREWARM_ENV];
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/** Called before every baseline: pre-warms the pool once. Returns the Worker sequence number now. */
export function prepareBaseline(): number {
  if (!prepared) {
    prepared = true;
    if (!prewarmDisabled()) prewarmThreadpool();
  }
  return lastSeq;
}

// Threads threadleak starts itself (the exit watchdog): never reported.
const libraryThreads = new Set<string>();

/** Notes a thread threadleak started itself, by key: no scope reports it. */
export function registerLibraryThread(key: string): void {
  if (key !== '') libraryThreads.add(key);
}

export function isLibraryThread(key: string): boolean {
  return libraryThreads.size > 0 && libraryThreads.has(key);
}

/** A Worker threadleak made itself: not one of the app's, never matched to a thread (its own is registered by key). */
export function forgetWorker(worker: Worker): void {
  const record = records.get(worker);
  records.delete(worker);
  if (record?.key !== undefined && recordsByKey.get(record.key) === record) recordsByKey.delete(record.key);
}

/**
 * A scope's baseline: the keys of this process's threads now, the libuv pool
 * pre-warmed first unless `prewarm` is false (threadleak/register, whose
 * check at exit leaves out the runtime's threads instead: an app that never
 * uses the pool gets none).
 */
export function takeBaseline(prewarm = true): WorkerBaseline {
  const seq = prewarm ? prepareBaseline() : lastSeq;
  return { keys: new Set(listOwnThreads().map((t) => t.key)), seq };
}

/** This process's threads as the addon lists them; an OS failure is thrown. */
export function listOwnThreads(): RawThread[] {
  const list = listThreads(0);
  if (!Array.isArray(list)) throw systemError('threads()', list);
  return list;
}

/** The Worker whose OS thread has this key, as far as the looks so far could tell. */
export function workerForThread(key: string): WorkerRecord | undefined {
  return recordsByKey.get(key);
}

// --------------------------------------------------------------- the notes

// Node 24 and later name a Worker's thread after its name option, or this,
// and say so in worker.threadName. Node 23.11 names it too but does not say
// which name, and earlier versions leave it the creator's: where
// worker.threadName is missing, the name is not used to match.
const DEFAULT_WORKER_THREAD_NAME = 'WorkerThread';
// Linux thread names hold at most 15 bytes and macOS ones 63 (MAXTHREADNAMESIZE
// is 64 with the NUL); Windows thread descriptions are UTF-16 strings of any
// length (libuv sets them whole).
const MAX_THREAD_NAME_BYTES: Partial<Record<string, number>> = { linux: 15, darwin: 63 };

function osThreadName(name: string): string {
  const max = MAX_THREAD_NAME_BYTES[process.platform];
  if (max === undefined) return name;
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length <= max) return name;
  // Cut on a character boundary, as Node does: drop a partial UTF-8 sequence.
  let end = max;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
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

function onWorkerCreated(message: unknown): void {
  const worker = (message as { worker?: Worker }).worker;
  if (!worker || records.has(worker)) return;
  const given = (worker as { threadName?: unknown }).threadName;
  const record: WorkerRecord = {
    worker,
    creationStack: creationStack(),
    refed: true,
    seq: ++lastSeq,
    createdAt: wallClockNow(),
    threadName: typeof given === 'string' ? osThreadName(given === '' ? DEFAULT_WORKER_THREAD_NAME : given) : undefined,
    key: undefined,
    settled: false,
    tries: 0,
    nextTry: 0,
  };
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
  records.set(worker, record);
  worker.once('exit', () => {
    records.delete(worker);
    if (record.key !== undefined && recordsByKey.get(record.key) === record) recordsByKey.delete(record.key);
  });
}

// From import on, so Workers made before the first scope are known too. This
// subscribes a JavaScript function, nothing more.
diagnosticsChannel.subscribe('worker_threads', onWorkerCreated);

// ------------------------------------------------------------- the matching

// At most this many threads are read per Worker in one look, newest first
// (each read costs about 1 ms): its own is among them unless more threads
// than that started in the instant between it and the note. Threads read for
// an earlier Worker of the same look are not read again.
const MAX_READS = 32;
// How often a guess is looked at again (by the leak checks, at doubling
// intervals from 2 ms: about 2 s in all) before it is kept.
const MAX_SETTLE_TRIES = 10;
// Start times are rounded down to a clock tick (USER_HZ is 100 on Linux); the
// kernel's wall clock base and Date.now() may also differ by a little.
const START_TIME_SLACK_MS = 10;
// How often threads that were running are read again while one Worker is
// matched, after pauses that double from the first (at most 31.5 ms a Worker):
// on a busy machine a thread that has just started may wait that long for a
// CPU before it blocks and shows its code.
const RUNNING_RECHECKS = 6;
const FIRST_RECHECK_PAUSE_MS = 0.5;
let recheckPause: Int32Array | undefined;

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
 * 'node' for Node's own code (its executable, or libnode), 'other' for a
 * library's, undefined when the kernel shows nothing (the thread is running).
 */
function codeOf(thread: ThreadInfo): 'node' | 'other' | undefined {
  let module: string | undefined;
  try {
    const raw = captureStack(thread.id, 0, thread.key);
    module = attributeStack(raw.frames, raw.start).module;
  } catch {
    return undefined;
  }
  if (module === undefined) return undefined;
  return isRuntimeModule(module) ? 'node' : 'other';
}

/** True when `module` (a path) is Node itself: its executable, or a distribution's shared libnode.so / libnode.dll. */
export function isRuntimeModule(module: string): boolean {
  return sameFile(module, nodeExecutable()) || sameFile(module, process.execPath) || /^libnode\.(so(\.|$)|dll$)/i.test(basename(module));
}

/** Paths of one file: equal, or equal but for case on Windows (its file names are case-insensitive). */
function sameFile(a: string, b: string): boolean {
  return a === b || (process.platform === 'win32' && a.toLowerCase() === b.toLowerCase());
}

function assign(record: WorkerRecord, key: string | undefined, settled: boolean): void {
  if (record.key !== undefined && recordsByKey.get(record.key) === record) recordsByKey.delete(record.key);
  record.key = key;
  record.settled = settled;
  if (key !== undefined) recordsByKey.set(key, record);
}

/** Newest start first; within one clock tick, the higher id (ids grow until they wrap). */
const newestFirst = (a: ThreadInfo, b: ThreadInfo): number => (b.startTime ?? 0) - (a.startTime ?? 0) || b.id - a.id;

/**
 * The threads that may be `record`'s, the likeliest first (the name Node gave
 * it, then the newest): alive,
 * not matched to another Worker, not the calling thread, not in the
 * baseline of a scope opened before the Worker was made, started no later
 * than the note, and with a name its thread can have. A test that rules
 * out every thread is dropped (a clock stepped back, a thread that renamed
 * itself): the others still decide.
 */
function candidatesFor(record: WorkerRecord, list: readonly ThreadInfo[], baseline: WorkerBaseline, self: number, creatorName: string | undefined): ThreadInfo[] {
  let alive = list.filter((t) => {
    if (t.id === self || t.state === 'zombie' || baseline.keys.has(t.key) || isLibraryThread(t.key)) return false;
    const owner = recordsByKey.get(t.key);
    return owner === undefined || owner === record;
  });
  const started = alive.filter((t) => t.startTime === undefined || t.startTime <= record.createdAt + START_TIME_SLACK_MS);
  if (started.length > 0) alive = started;
  if (record.threadName !== undefined) {
    const named = alive.filter((t) => t.name === creatorName || t.name === record.threadName);
    if (named.length > 0) alive = named;
  }
  alive.sort(newestFirst);
  // A thread with the name Node gave this Worker comes before one with its
  // creator's: a library's thread started just after the Worker's, and still
  // running (the kernel shows nothing of it), is otherwise the first guess.
  const given = record.threadName;
  if (given === undefined || given === creatorName) return alive;
  return [...alive.filter((t) => t.name === given), ...alive.filter((t) => t.name !== given)];
}

/**
 * Matches the Workers made after `baseline` whose OS thread is not settled
 * yet to threads of `list` (a fresh snapshot), newest Worker first. Called by
 * a scope's checks, so a Worker costs nothing until a scope looks.
 */
export function mapWorkers(list: readonly ThreadInfo[], baseline: WorkerBaseline): void {
  const now = performance.now();
  const pending = [...records.values()]
    .filter((r) => r.seq > baseline.seq && !r.settled && now >= r.nextTry)
    .sort((a, b) => b.seq - a.seq);
  if (pending.length === 0) return;
  const self = currentThreadId();
  const creatorName = list.find((t) => t.id === self)?.name;
  // What the kernel shows of a thread, read once per look (each read costs
  // about 1 ms, more with thousands of threads). A thread that just started
  // runs for a moment before it blocks: a library's thread soon shows its
  // code, a starting Worker's thread runs Node's start-up for ms. A running
  // thread is read again after a short pause, a few times per Worker at most.
  const codes = new Map<string, ReturnType<typeof codeOf>>();
  let rechecks = 0;
  const code = (record: WorkerRecord, t: ThreadInfo): ReturnType<typeof codeOf> => {
    // Node named it as this Worker's thread, which its creator is not called.
    if (record.threadName !== undefined && t.name === record.threadName && t.name !== creatorName) return 'node';
    let seen = codes.has(t.key) ? codes.get(t.key) : codeOf(t);
    while (seen === undefined && rechecks > 0) {
      const pauseMs = FIRST_RECHECK_PAUSE_MS * 2 ** (RUNNING_RECHECKS - rechecks);
      rechecks--;
      recheckPause ??= new Int32Array(new SharedArrayBuffer(4));
      Atomics.wait(recheckPause, 0, 0, pauseMs);
      seen = codeOf(t);
    }
    codes.set(t.key, seen);
    return seen;
  };
  for (const record of pending) {
    // The newest thread that may be its own: a library's thread is never a
    // Worker's (a running thread shows nothing, and may be).
    rechecks = RUNNING_RECHECKS;
    let choice: ThreadInfo | undefined;
    let choiceCode: ReturnType<typeof codeOf>;
    let reads = 0;
    for (const t of candidatesFor(record, list, baseline, self, creatorName)) {
      // Threads already read in this look cost nothing; new ones count.
      if (!codes.has(t.key) && ++reads > MAX_READS) break;
      choiceCode = code(record, t);
      if (choiceCode !== 'other') {
        choice = t;
        break;
      }
    }
    if (choice && choiceCode === 'node') {
      assign(record, choice.key, true);
      continue;
    }
    // No thread left (its Worker is ending), or one that was running: a guess, looked at again later.
    record.tries++;
    record.nextTry = now + 2 ** record.tries;
    assign(record, choice?.key, choice !== undefined && record.tries >= MAX_SETTLE_TRIES);
  }
}
