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

// ------------------------------------------------------------ monitorThreads()

/** How many more threads can start before a limit stops them (Linux). */
export interface ThreadHeadroom {
  /** Threads that can still start under the tightest limit. */
  remaining: number;
  /** That limit. */
  limit: number;
  /**
   * Which limit it is: the cgroup's `pids.max` (minus `pids.current`, the
   * tightest of the process's cgroup and its ancestors), the user's
   * RLIMIT_NPROC (minus the user's threads), or the kernel's
   * /proc/sys/kernel/threads-max (minus the system's threads).
   */
  source: 'pids.max' | 'RLIMIT_NPROC' | 'threads-max';
}

/** A thread in a sample, with its CPU use over the interval. */
export interface SampledThread extends ThreadInfo {
  /** CPU time over the interval, in % of one core (a thread that started in it: since it started). */
  cpuPercent: number;
}

/** One look at a process by monitorThreads(). */
export interface ThreadSample {
  /** ms since the epoch. */
  at: number;
  /** How long the interval was, in ms (the first sample's: since monitorThreads() was called). */
  intervalMs: number;
  count: number;
  /** Threads alive now that the previous sample did not have (by key). */
  started: ThreadInfo[];
  /** Threads of the previous sample that are gone (by key), as they were then. */
  exited: ThreadInfo[];
  /** Every thread alive now, in id order. */
  threads: SampledThread[];
  /** Linux: how many more threads can start; undefined elsewhere or when no limit could be read. */
  headroom?: ThreadHeadroom;
  /**
   * This process only: how long, in ms, the last no-op libuv work item waited
   * for a pool thread. While one still waits, how long it has waited so far.
   */
  threadpoolDelayMs?: number;
}

export type ThreadAlertKind = 'max-threads' | 'growth' | 'headroom' | 'threadpool';

/** Said once per episode: when a condition starts to hold, not at every sample while it does. */
export interface ThreadAlert {
  kind: ThreadAlertKind;
  message: string;
  sample: ThreadSample;
}

export interface ThreadMonitorOptions {
  /** ms between samples; default 1000, from 10 to 3600000. The timer is unref'd. */
  intervalMs?: number;
  /** Another process to watch; default this process. */
  pid?: number;
  /** Alert `max-threads` when the count reaches this. */
  maxThreads?: number;
  /** Alert `growth` when the count grew in each of the last N samples; default 10, at least 2. */
  growthSamples?: number;
  onSample?: (sample: ThreadSample) => void;
  onAlert?: (alert: ThreadAlert) => void;
  /**
   * Called when a sample cannot be taken (the watched process ended, access
   * was lost); the monitor stops then. Default: process.emitWarning.
   */
  onError?: (error: Error) => void;
}

export interface ThreadMonitor {
  /** Stops sampling (idempotent). */
  stop(): void;
  [Symbol.dispose](): void;
  /** The newest sample, undefined before the first (intervalMs after the call). */
  latest(): ThreadSample | undefined;
  /** True until stop() or an error stopped it. */
  readonly running: boolean;
}

// ------------------------------------------------------- noEventLoopBlocking()

/** One look at the blocked thread during a block (consecutive equal looks are merged). */
export interface EventLoopBlockSample {
  /** ms since the epoch, when the look was taken. */
  at: number;
  /** The JavaScript stack, as `Error.stack` lines without the first; '' when it could not be read. */
  stack: string;
  /** The thread's native frames at that moment: they name a native call the JavaScript is waiting in. */
  nativeStack?: NativeStack;
  /**
   * Set when the JavaScript stack was read only this many ms after it was asked
   * for: the thread was in a native call then, and the stack is where it
   * returned to JavaScript (the native stack shows the call itself).
   */
  stackDelayMs?: number;
  /** Why the JavaScript stack could not be read, when it could not. */
  stackError?: string;
  /** How many consecutive looks saw this same stack. */
  count: number;
}

/** A turn of the event loop that took longer than the threshold. */
export interface EventLoopBlock {
  /** How long the loop was busy, in ms, as the blocked thread measured it when it resumed. */
  durationMs: number;
  /** ms since the epoch. */
  startedAt: number;
  /** The JavaScript stack seen during the block (the first sample's); '' when none was seen. */
  stack: string;
  /** The native stack seen with it. */
  nativeStack?: NativeStack;
  /** Every distinct stack seen while the block went on, in order. */
  samples: EventLoopBlockSample[];
}

export interface EventLoopBlockingOptions {
  /** What to do about blocks: 'warn' (default), 'log' or 'raise'. ('cancel' is a TypeError: a running stack cannot be stopped.) */
  action?: 'warn' | 'log' | 'raise';
  /** A turn of the loop longer than this, in ms, is a block. Default 200. */
  thresholdMs?: number;
  /** Receives the message for action 'log'. Default console. */
  logger?: { warn(message: string): void };
}
