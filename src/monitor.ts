// monitorThreads(): a process watched over time (the thread-exhaustion
// material of seed 003): how many threads, which ones started and exited,
// which burn CPU, how close the process is to the limits that stop a new
// thread, and whether libuv's pool is the bottleneck.
//
// - Each sample is one snapshot (threads()), compared with the previous one by
//   key: started, exited, and each thread's CPU time over the interval.
// - headroom (Linux): src/headroom.ts.
// - threadpoolDelayMs (this process): one no-op libuv work item is queued at
//   each sample (native probeThreadpool); its wait for a pool thread is the
//   pool's saturation, which no Node API gives. The item queued at one sample
//   is reported at the next; one still waiting then reports how long it has
//   waited so far, and no second one is queued beside it. The first item
//   creates the pool when nothing has yet: the pool is pre-warmed before the
//   first snapshot, as for a scope, so its threads are not taken for started
//   ones (with THREADLEAK_NO_PREWARM set, nothing is queued and there is no
//   threadpoolDelayMs).
// - Alerts are said once per episode: when their condition starts to hold,
//   not at every sample while it holds.
// - The timer is unref'd and taken from node:timers at load, like the clocks,
//   so a test's fake timers neither stop nor speed a monitor.
import timers from 'node:timers';
import { probeThreadpool } from './binding.js';
import { invalidOption } from './errors.js';
import { readHeadroom } from './headroom.js';
import { checkOptionsObject, rejectUnknownOptions } from './options.js';
import { formatMonitorAlert, formatMonitorCallbackThrew, formatMonitorStopped } from './report.js';
import { prepareBaseline, prewarmDisabled } from './runtime.js';
import { threads } from './snapshot.js';
import type {
  SampledThread,
  ThreadAlert,
  ThreadAlertKind,
  ThreadInfo,
  ThreadMonitor,
  ThreadMonitorOptions,
  ThreadSample,
} from './types.js';

const WHERE = 'monitorThreads()';
const OPTION_NAMES = ['intervalMs', 'pid', 'maxThreads', 'growthSamples', 'onSample', 'onAlert', 'onError'] as const;
export const DEFAULT_INTERVAL_MS = 1000;
export const MIN_INTERVAL_MS = 10;
export const MAX_INTERVAL_MS = 3_600_000;
export const DEFAULT_GROWTH_SAMPLES = 10;
/** headroom alerts below this share of the limit. */
export const HEADROOM_ALERT_SHARE = 0.1;
/** threadpool alerts above max(this, THREADPOOL_IDLE_FACTOR × the idle median). */
export const THREADPOOL_ALERT_FLOOR_MS = 50;
export const THREADPOOL_IDLE_FACTOR = 4;
// The idle median is taken over this many of the latest delays below the alert level.
const IDLE_DELAYS_KEPT = 31;

const realSetInterval = timers.setInterval;
const realClearInterval = timers.clearInterval;
const monotonicNow = performance.now.bind(performance);
const wallClockNow = Date.now;

interface ResolvedOptions {
  intervalMs: number;
  pid: number | undefined; // undefined: this process
  maxThreads: number | undefined;
  growthSamples: number;
  onSample: ((sample: ThreadSample) => void) | undefined;
  onAlert: ((alert: ThreadAlert) => void) | undefined;
  onError: ((error: Error) => void) | undefined;
}

function wholeNumber(option: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(WHERE, `options.${option}`, value, `a whole number from ${min} to ${max}`);
  }
  return value;
}

function callback<T>(option: string, value: unknown): ((arg: T) => void) | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw invalidOption(WHERE, `options.${option}`, value, 'a function');
  return value as (arg: T) => void;
}

function resolveOptions(options: unknown): ResolvedOptions {
  const raw = checkOptionsObject(WHERE, options);
  rejectUnknownOptions(WHERE, raw, OPTION_NAMES);
  const pid = raw.pid === undefined ? undefined : wholeNumber('pid', raw.pid, 1, Number.MAX_SAFE_INTEGER);
  return {
    intervalMs: raw.intervalMs === undefined ? DEFAULT_INTERVAL_MS : wholeNumber('intervalMs', raw.intervalMs, MIN_INTERVAL_MS, MAX_INTERVAL_MS),
    pid: pid === process.pid ? undefined : pid,
    maxThreads: raw.maxThreads === undefined ? undefined : wholeNumber('maxThreads', raw.maxThreads, 1, Number.MAX_SAFE_INTEGER),
    growthSamples:
      raw.growthSamples === undefined ? DEFAULT_GROWTH_SAMPLES : wholeNumber('growthSamples', raw.growthSamples, 2, 1_000_000),
    onSample: callback('onSample', raw.onSample),
    onAlert: callback('onAlert', raw.onAlert),
    onError: callback('onError', raw.onError),
  };
}

function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const round1 = (value: number) => Math.round(value * 10) / 10;

/** The waits of the pool probe: the last one measured, or the one still waiting. */
class ThreadpoolProbe {
  private queuedAt: number | undefined; // monotonic; set while one waits
  private lastWaitMs: number | undefined;
  private idleDelays: number[] = [];
  private stopped = false;

  /** The delay to report now, then queues the next probe when none waits. */
  sample(now: number): number | undefined {
    const delay = this.queuedAt !== undefined ? now - this.queuedAt : this.lastWaitMs;
    if (this.queuedAt === undefined && !this.stopped) this.queue(now);
    return delay === undefined ? undefined : round1(delay);
  }

  queue(now = monotonicNow()): void {
    this.queuedAt = now;
    probeThreadpool((waitedMs) => {
      this.queuedAt = undefined;
      this.lastWaitMs = waitedMs;
    });
  }

  stop(): void {
    this.stopped = true;
  }

  /** The alert level: max(50 ms, 4 × the median of the recent delays below it). */
  alertLevel(): number {
    return Math.max(THREADPOOL_ALERT_FLOOR_MS, THREADPOOL_IDLE_FACTOR * median(this.idleDelays));
  }

  /** Notes a reported delay; true when it is above the alert level. */
  isSaturated(delay: number): boolean {
    const saturated = delay > this.alertLevel();
    if (!saturated) {
      this.idleDelays.push(delay);
      if (this.idleDelays.length > IDLE_DELAYS_KEPT) this.idleDelays.shift();
    }
    return saturated;
  }
}

class Monitor implements ThreadMonitor {
  private timer: ReturnType<typeof setInterval> | undefined;
  private previous: Map<string, ThreadInfo>;
  private previousAt: number;
  private last: ThreadSample | undefined;
  private readonly probe: ThreadpoolProbe | undefined;
  private previousCount: number;
  private growthStreak = 0;
  private readonly episodes = new Set<ThreadAlertKind>();

  constructor(private readonly options: ResolvedOptions) {
    if (options.pid === undefined && !prewarmDisabled()) {
      prepareBaseline(); // the pool exists before the first snapshot
      this.probe = new ThreadpoolProbe();
    }
    // A bad or unknown pid throws here, at the call.
    this.previous = new Map(this.list().map((t) => [t.key, t]));
    this.previousAt = monotonicNow();
    this.previousCount = this.previous.size;
    this.probe?.queue();
    this.timer = realSetInterval(() => this.tick(), options.intervalMs);
    this.timer.unref();
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  latest(): ThreadSample | undefined {
    return this.last;
  }

  stop(): void {
    if (this.timer === undefined) return;
    realClearInterval(this.timer);
    this.timer = undefined;
    this.probe?.stop();
  }

  [Symbol.dispose](): void {
    this.stop();
  }

  private list(): ThreadInfo[] {
    return this.options.pid === undefined ? threads() : threads({ pid: this.options.pid });
  }

  private tick(): void {
    if (this.timer === undefined) return;
    let sample: ThreadSample;
    try {
      sample = this.take();
    } catch (error) {
      this.stop();
      const failure = error instanceof Error ? error : new Error(String(error));
      if (this.options.onError) this.call('onError', this.options.onError, failure);
      else process.emitWarning(formatMonitorStopped(this.options.pid ?? process.pid, failure), { type: 'ThreadMonitorWarning', code: 'ERR_THREADLEAK_MONITOR_STOPPED' });
      return;
    }
    this.last = sample;
    if (this.options.onSample) this.call('onSample', this.options.onSample, sample);
    for (const alert of this.alerts(sample)) {
      if (this.options.onAlert) this.call('onAlert', this.options.onAlert, alert);
    }
  }

  /** One sample: a snapshot compared with the previous one. */
  private take(): ThreadSample {
    const list = this.list();
    const now = monotonicNow();
    const intervalMs = Math.max(now - this.previousAt, 1e-3);
    const current = new Map<string, ThreadInfo>();
    const started: ThreadInfo[] = [];
    // threads() made these objects for this sample alone: each gets its CPU % in place.
    const sampled = list as SampledThread[];
    for (const thread of sampled) {
      const before = this.previous.get(thread.key);
      if (before === undefined) started.push(thread);
      const cpuMs =
        thread.userCpuMs + thread.systemCpuMs - (before === undefined ? 0 : before.userCpuMs + before.systemCpuMs);
      thread.cpuPercent = round1(Math.max(0, (cpuMs / intervalMs) * 100));
      current.set(thread.key, thread);
    }
    const exited: ThreadInfo[] = [];
    for (const [key, thread] of this.previous) if (!current.has(key)) exited.push(thread);
    sampled.sort((a, b) => a.id - b.id);
    this.previous = current;
    this.previousAt = now;
    const sample: ThreadSample = {
      at: wallClockNow(),
      intervalMs: round1(intervalMs),
      count: list.length,
      started,
      exited,
      threads: sampled,
    };
    const headroom = readHeadroom(this.options.pid ?? process.pid);
    if (headroom !== undefined) sample.headroom = headroom;
    const delay = this.probe?.sample(now);
    if (delay !== undefined) sample.threadpoolDelayMs = delay;
    return sample;
  }

  /** The alerts whose episode starts with this sample. */
  private alerts(sample: ThreadSample): ThreadAlert[] {
    const { maxThreads, growthSamples } = this.options;
    const pid = this.options.pid ?? process.pid;
    this.growthStreak = sample.count > this.previousCount ? this.growthStreak + 1 : 0;
    this.previousCount = sample.count;
    const holding: [ThreadAlertKind, boolean][] = [
      ['max-threads', maxThreads !== undefined && sample.count >= maxThreads],
      ['growth', this.growthStreak >= growthSamples],
      ['headroom', sample.headroom !== undefined && sample.headroom.remaining < HEADROOM_ALERT_SHARE * sample.headroom.limit],
      ['threadpool', sample.threadpoolDelayMs !== undefined && this.probe!.isSaturated(sample.threadpoolDelayMs)],
    ];
    const alerts: ThreadAlert[] = [];
    for (const [kind, holds] of holding) {
      if (!holds) {
        this.episodes.delete(kind);
      } else if (!this.episodes.has(kind)) {
        this.episodes.add(kind);
        const message = formatMonitorAlert(kind, {
          pid,
          count: sample.count,
          maxThreads,
          growthSamples,
          headroom: sample.headroom,
          threadpoolDelayMs: sample.threadpoolDelayMs,
          threadpoolAlertMs: this.probe?.alertLevel(),
        });
        alerts.push({ kind, message, sample });
      }
    }
    return alerts;
  }

  /** Calls a user callback; what it throws becomes a warning, and the monitor goes on. */
  private call<T>(name: string, fn: (arg: T) => void, arg: T): void {
    try {
      fn(arg);
    } catch (error) {
      const detail = error instanceof Error ? error.stack : undefined;
      process.emitWarning(formatMonitorCallbackThrew(name, error), {
        type: 'ThreadMonitorWarning',
        code: 'ERR_THREADLEAK_MONITOR_CALLBACK',
        ...(detail === undefined ? {} : { detail }),
      });
    }
  }
}

/**
 * Watches a process's threads: a sample every `intervalMs` (the first one
 * `intervalMs` after this call, whose snapshot is the first one's baseline),
 * with alerts said once per episode. A bad option is a TypeError; a pid that
 * cannot be read throws the OS error here.
 */
export function monitorThreads(options?: ThreadMonitorOptions): ThreadMonitor {
  return new Monitor(resolveOptions(options));
}
