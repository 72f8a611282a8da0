// The data types the layers share: plain shapes, no code, no imports of this
// package's modules, so that any module (errors.ts, report.ts) can name them
// without an import cycle. The modules that produce them re-export them.
import type { Worker } from 'node:worker_threads';

export type ThreadState = 'running' | 'sleeping' | 'blocked' | 'stopped' | 'zombie' | 'unknown';

export interface ThreadInfo {
  /** OS thread id (Linux tid, macOS thread_id, Windows thread id). */
  id: number;
  /** Identity that survives id reuse: equal for the same thread across snapshots. */
  key: string;
  /** '' when the thread has none. */
  name: string;
  state: ThreadState;
  /** The OS's own word for the state: 'S', 'TH_STATE_WAITING', 'Waiting/WrQueue'. */
  rawState: string;
  /** ms since the epoch, where the OS tells. */
  startTime?: number;
  userCpuMs: number;
  systemCpuMs: number;
}

/** One frame of a native stack. */
export interface NativeFrame {
  /** The return (or program-counter) address, in hex: '0x7f12...'. */
  address: string;
  symbol?: string;
  /** Absolute path of the shared object or executable that holds the address. */
  module?: string;
  /** Offset of the address from `symbol` (or from the module's base when no symbol). */
  offset?: number;
  /** Found by scanning the thread's stack memory, not by unwinding. */
  scanned?: boolean;
}

/** The native stack of one thread. */
export interface NativeStack {
  threadId: number;
  frames: NativeFrame[];
  /** The function the thread was started with, where it can be told. */
  startRoutine?: string;
  /** The shared object (.node, .so, .dll, .dylib) that holds it. */
  module?: string;
  /** Why frames are missing or partial (signals blocked, timed out, exited, unsupported). */
  error?: string;
}

/** A leaked Worker: the JavaScript stack of `new Worker()`, and the Worker itself. */
export interface WorkerOrigin {
  kind: 'worker';
  creationStack: string;
  worker: Worker;
}

/** A leaked native thread: the shared object and the function that started it, where they can be told. */
export interface NativeOrigin {
  kind: 'native';
  module?: string;
  startRoutine?: string;
}

/** Where a leaked thread came from. */
export type ThreadOrigin = WorkerOrigin | NativeOrigin;

export interface LeakedThread extends ThreadInfo {
  origin: ThreadOrigin;
  /** Native frames, where they could be captured. */
  stack?: NativeStack;
}

/** One tracked resource that was not released (yet). */
export interface LeakInfo {
  /** Sequence number within its tracker, from 1; tracking again gives a new one. */
  id: number;
  name: string;
  kind: string;
  /** When it was tracked, in ms since the epoch. */
  createdAt: number;
  /** How long it has been tracked, in ms (monotonic clock). */
  ageMs: number;
  /** True when the object was garbage-collected while still tracked: it was never released. */
  collected: boolean;
  /** Where track() was called (V8 stack frames, one a line), with `captureStack`. */
  stack?: string;
}

/** What LeakTracker#report() returns. */
export interface LeakReport {
  /** How many entries are unreleased, collected ones included. */
  total: number;
  /** How many of them were garbage-collected without release. */
  collected: number;
  /** Entries by kind, kinds in sorted order. */
  byKind: Record<string, number>;
  /** The age of the oldest entry in ms; 0 when there is none. */
  oldestAgeMs: number;
  /** Every entry, oldest first. */
  leaks: LeakInfo[];
  /** The report as text; also what `String(report)` gives. */
  text: string;
  toString(): string;
}
