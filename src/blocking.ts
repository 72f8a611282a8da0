// noEventLoopBlocking(): a scope that reports every turn of the event loop
// longer than a threshold, with the stacks the thread was running *during*
// the turn, read by a watchdog Worker (blocking-watchdog.ts) while it blocks.
//
// This thread beats on an unref'd timer every quarter of the threshold: it
// writes the time for the watchdog, and measures the turn that just ended.
// A late beat alone does not say how long the blocking turn was (the block may
// have started anywhere in the interval), so a block's duration is the time
// the loop was not idle since the previous beat: the event loop's own idle
// time (performance.eventLoopUtilization) subtracted from the time between
// beats. A scope also beats when it opens and closes, so a block in the
// turn that closes it (a `using` scope, a wrapped sync function) counts, and
// one from before it opened does not.
//
// One watchdog serves every open scope (reference-counted); each scope keeps
// the blocks longer than its own threshold. It keeps its Worker for a while
// after the last scope closes, disconnected from the inspector, for the next
// scope; at exit it disconnects first (a session still connected at exit
// makes Node wait for the debugger, forever under --inspect).
import { createRequire } from 'node:module';
import timers from 'node:timers';
import { isMainThread, MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { addonPath, currentThreadId, threadKey, type RawStack } from './binding.js';
import { nativeStackTells, sampleKey } from './blocking-samples.js';
import {
  BEAT_AT,
  CAPTURE_SYMBOL,
  CAPTURING,
  CONNECT,
  CONNECTED,
  ENDED,
  EPOCH,
  FLOAT64_SLOTS,
  INT32_SLOTS,
  PARKED,
  QUIT,
  READY,
  RUN,
  SHARED_BYTES,
  STATE,
  THRESHOLD,
  WATCHDOG_SOURCE,
  type WatchdogData,
  type WatchdogMessage,
} from './blocking-watchdog.js';
import { EventLoopBlockError, invalidOption, watchdogStartError } from './errors.js';
import { checkOptionsObject, rejectUnknownOptions } from './options.js';
import { EVENT_LOOP_STACK_NOT_MAIN_THREAD, EVENT_LOOP_STACK_UNREACHABLE, formatEventLoopBlocks } from './report.js';
import { forgetWorker, registerLibraryThread } from './runtime.js';
import {
  checkDecoratorKind,
  isDecoratorContext,
  LeakScope,
  resolveAction,
  resolveLogger,
  wrapInScope,
  type LeakAction,
  type LeakDetector,
  type ResolvedScopeOptions,
} from './scope.js';
import { nativeStackFromRaw } from './snapshot.js';
import type { EventLoopBlock, EventLoopBlockingOptions, EventLoopBlockSample } from './types.js';

export type { EventLoopBlock, EventLoopBlockingOptions, EventLoopBlockSample } from './types.js';

const OPTION_NAMES = ['action', 'thresholdMs', 'logger'] as const;
const ACTIONS: readonly LeakAction[] = ['warn', 'log', 'raise'];
const DEFAULT_THRESHOLD_MS = 200;
const MIN_THRESHOLD_MS = 1;
const MAX_THRESHOLD_MS = 60_000;
// How long a scope waits at open for the watchdog's thread to start (seconds under wine).
const START_TIMEOUT_MS = 15_000;
// How long a beat or a close waits (spinning) for a sample of the block that just ended.
const SAMPLE_WAIT_MS = 250;
// How long the watchdog's thread is kept after the last scope closed.
const KEEP_IDLE_MS = 1000;
// How long the exit hook waits for the watchdog to disconnect and end its thread.
const EXIT_QUIT_MS = 1000;
// The stack depth read during a block.
const STACK_LIMIT = 64;
const NATIVE_STACK_TIMEOUT_MS = 100;
// A look that caught the thread running the watchdog's own request (the
// inspector's Runtime.evaluate, answered when a native call returned) saw
// the watchdog, not the block: it is left out. (Where node's symbols are
// not readable, as on Windows, it cannot be told apart.)
const ANSWERING_WATCHDOG = /\bv8_inspector::V8RuntimeAgentImpl::evaluate\b/;

// Clocks and timers as they were at load: a test's fake timers must neither
// stop the heartbeat nor move the clock it measures with.
const realSetInterval = timers.setInterval;
const realClearInterval = timers.clearInterval;
const realSetTimeout = timers.setTimeout;
const realClearTimeout = timers.clearTimeout;
const hrtime = process.hrtime.bigint;
const perfNow = performance.now.bind(performance);
const eventLoopUtilization = performance.eventLoopUtilization.bind(performance);
const monotonicNow = (): number => Number(hrtime()) / 1e6;
const wallNow = (): number => performance.timeOrigin + perfNow();

/** The folder of threadleak's own modules (src/ or dist/): their frames are listed after the app's. */
const PACKAGE_DIR = __dirname;

interface PendingSample {
  at: number;
  raw?: RawStack;
  stack?: string;
  stackError?: string;
  stackDelayMs?: number;
}

/** An open scope, as the watchdog sees it. */
interface Listener {
  thresholdMs: number;
  blocks: EventLoopBlock[];
}

/** Why JavaScript stacks cannot be read here, or undefined when they can. */
let jsStacksUnavailable: string | undefined;

class Watchdog {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #ctl: Int32Array;
  readonly #times: Float64Array;
  readonly #target: number;
  readonly #listeners = new Set<Listener>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #thresholdMs = DEFAULT_THRESHOLD_MS;
  #lastBeatAt = 0;
  #lastIdleMs = 0;
  #epoch = 0;
  #samples = new Map<number, PendingSample>();
  #samplesEpoch = -1;
  #ended = false;

  constructor() {
    const shared = new SharedArrayBuffer(SHARED_BYTES);
    this.#ctl = new Int32Array(shared, 0, INT32_SLOTS);
    this.#times = new Float64Array(shared, INT32_SLOTS * 4, FLOAT64_SLOTS);
    Atomics.store(this.#ctl, CAPTURING, -1);
    this.#target = currentThreadId();
    if (!isMainThread) jsStacksUnavailable = EVENT_LOOP_STACK_NOT_MAIN_THREAD;
    const captureId = installCapture(this.#ctl);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    let file = '';
    try {
      file = addonPath();
    } catch {
      // No addon for this platform: durations and JavaScript stacks only.
    }
    const data: WatchdogData = {
      shared,
      port: port2,
      addonPath: file,
      target: { id: this.#target, key: file === '' ? '' : threadKey(this.#target) },
      jsStacks: isMainThread,
      captureId,
    };
    this.#worker = new Worker(WATCHDOG_SOURCE, {
      eval: true,
      workerData: data,
      transferList: [port2],
      // Its own output never reaches the app's: it prints nothing, and a
      // stream of a Worker keeps its parent's loop alive while it is piped.
      stdout: true,
      stderr: true,
      name: 'threadleak-watchdog',
    } as ConstructorParameters<typeof Worker>[1]);
    forgetWorker(this.#worker);
    this.#worker.unref();
    this.#worker.on('error', () => this.#end());
    this.#worker.on('exit', () => this.#end());
    // Waits for its thread, so that no thread-leak scope ever sees it as the
    // app's (Worker start-up needs nothing from this thread's loop).
    const started = waitWhile(this.#ctl, READY, (ready) => ready === 0, START_TIMEOUT_MS, false);
    this.#drain(-1);
    if (!started) {
      void this.#worker.terminate().catch(() => {});
      throw watchdogStartError(START_TIMEOUT_MS);
    }
  }

  get ended(): boolean {
    return this.#ended;
  }

  #end(): void {
    this.#ended = true;
    if (this.#timer) realClearInterval(this.#timer);
    this.#timer = undefined;
    this.#clearIdleTimer();
    if (watchdog === this) watchdog = undefined;
  }

  add(listener: Listener): void {
    this.#clearIdleTimer();
    if (this.#listeners.size > 0) this.beat();
    else this.#reset();
    this.#listeners.add(listener);
    this.#setThreshold();
    if (Atomics.load(this.#ctl, CONNECT) === 0 || Atomics.load(this.#ctl, STATE) !== CONNECTED) {
      Atomics.store(this.#ctl, CONNECT, 1);
      Atomics.notify(this.#ctl, CONNECT);
      // Connecting needs this thread to answer (between the slices of the
      // wait): tens of ms. Slower than the bound (a machine under load),
      // blocks are still measured; their JavaScript stacks may be missing.
      waitWhile(this.#ctl, STATE, (state) => state !== CONNECTED, START_TIMEOUT_MS, false);
    }
    Atomics.store(this.#ctl, RUN, 1);
    Atomics.notify(this.#ctl, RUN);
  }

  remove(listener: Listener): void {
    if (!this.#listeners.has(listener)) return;
    // No beat here: the scope's last findLeaks() just beat, ending its window.
    this.#listeners.delete(listener);
    if (this.#listeners.size > 0) {
      this.#setThreshold();
      return;
    }
    if (this.#timer) realClearInterval(this.#timer);
    this.#timer = undefined;
    Atomics.store(this.#ctl, RUN, 0);
    Atomics.notify(this.#ctl, EPOCH);
    this.#idleTimer = realSetTimeout(() => this.#disconnect(), KEEP_IDLE_MS);
    this.#idleTimer.unref();
  }

  #clearIdleTimer(): void {
    if (this.#idleTimer) realClearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  /** No scope for a while: the session goes; the thread a while later. */
  #disconnect(): void {
    Atomics.store(this.#ctl, CONNECT, 0);
    Atomics.notify(this.#ctl, RUN);
    Atomics.notify(this.#ctl, CONNECT);
    this.#idleTimer = realSetTimeout(() => this.#retire(), KEEP_IDLE_MS);
    this.#idleTimer.unref();
  }

  /** Long after its session was disconnected: its thread ends. */
  #retire(): void {
    this.#idleTimer = undefined;
    if (this.#listeners.size > 0 || Atomics.load(this.#ctl, STATE) !== PARKED) return;
    this.#end();
    this.#quit();
  }

  /** Tells the watchdog to disconnect and end its own thread (see blocking-watchdog.ts, Life cycle). */
  #quit(): void {
    Atomics.store(this.#ctl, RUN, 0);
    Atomics.store(this.#ctl, CONNECT, 0);
    Atomics.store(this.#ctl, QUIT, 1);
    Atomics.notify(this.#ctl, RUN);
    Atomics.notify(this.#ctl, CONNECT);
    Atomics.notify(this.#ctl, EPOCH);
  }

  /**
   * At exit: the session disconnected and the thread ended before Node tears
   * the Worker down (a session left connected makes Node wait for the
   * debugger under --inspect).
   */
  quitAtExit(): void {
    if (this.#ended) return;
    this.#quit();
    waitWhile(this.#ctl, STATE, (state) => state !== ENDED, EXIT_QUIT_MS);
  }

  #setThreshold(): void {
    let threshold = MAX_THRESHOLD_MS;
    for (const l of this.#listeners) threshold = Math.min(threshold, l.thresholdMs);
    this.#thresholdMs = threshold;
    this.#times[THRESHOLD] = threshold;
    if (this.#timer) realClearInterval(this.#timer);
    this.#timer = realSetInterval(() => this.beat(), Math.max(1, threshold / 4));
    this.#timer.unref();
  }

  /** A new window: what happened before it belongs to no open scope. */
  #reset(): void {
    this.#lastBeatAt = monotonicNow();
    this.#lastIdleMs = eventLoopUtilization().idle;
    this.#times[BEAT_AT] = this.#lastBeatAt;
    this.#epoch = Atomics.add(this.#ctl, EPOCH, 1) + 1;
    this.#drain(this.#epoch);
  }

  /**
   * Ends the window since the previous beat: if the loop was busy for longer
   * than the threshold in it, that is a block, with what the watchdog saw.
   */
  beat(): void {
    if (this.#ended) return;
    const now = monotonicNow();
    const idle = eventLoopUtilization().idle;
    const busyMs = now - this.#lastBeatAt - (idle - this.#lastIdleMs);
    const epoch = this.#epoch;
    // A new epoch first: from now on the watchdog's stack function returns nothing for the old one.
    this.#lastBeatAt = now;
    this.#lastIdleMs = idle;
    this.#times[BEAT_AT] = now;
    this.#epoch = Atomics.add(this.#ctl, EPOCH, 1) + 1;
    if (busyMs <= this.#thresholdMs) {
      this.#drain(this.#epoch);
      return;
    }
    // A sample of this block may be under way: wait for it, a little.
    waitWhile(this.#ctl, CAPTURING, (capturing) => capturing === epoch, SAMPLE_WAIT_MS);
    this.#drain(epoch);
    const block = this.#block(busyMs, now);
    this.#drain(this.#epoch);
    for (const listener of this.#listeners) {
      if (busyMs > listener.thresholdMs) listener.blocks.push(block);
    }
  }

  /** Reads the watchdog's messages; keeps the samples of `epoch`, drops older ones. */
  #drain(epoch: number): void {
    if (epoch !== this.#samplesEpoch) {
      this.#samples.clear();
      this.#samplesEpoch = epoch;
    }
    for (let received = receiveMessageOnPort(this.#port); received; received = receiveMessageOnPort(this.#port)) {
      const message = received.message as WatchdogMessage;
      switch (message.type) {
        case 'ready':
          registerLibraryThread(message.key);
          break;
        case 'no-session':
          jsStacksUnavailable = message.error;
          break;
        case 'native':
          if (message.epoch === epoch) this.#samples.set(message.sample, { at: message.at, raw: message.raw as RawStack | undefined });
          break;
        case 'js':
          for (const id of message.epoch === epoch ? message.samples : []) {
            const sample = this.#samples.get(id);
            if (!sample) continue;
            if (message.stack !== undefined) sample.stack = message.stack;
            if (message.error !== undefined) sample.stackError = message.error === 'no-function' ? EVENT_LOOP_STACK_UNREACHABLE : message.error;
            if (message.late) sample.stackDelayMs = Math.round(message.delayMs);
          }
          break;
      }
    }
  }

  #block(busyMs: number, endedAt: number): EventLoopBlock {
    const samples: EventLoopBlockSample[] = [];
    let previousKey = '';
    for (const [, pending] of [...this.#samples].sort(([a], [b]) => a - b)) {
      const sample: EventLoopBlockSample = { at: pending.at, stack: pending.stack ?? '', count: 1 };
      if (pending.raw) sample.nativeStack = nativeStackFromRaw(this.#target, pending.raw, NATIVE_STACK_TIMEOUT_MS, true);
      if (sample.nativeStack?.frames.some((f) => ANSWERING_WATCHDOG.test(f.symbol ?? ''))) continue;
      if (pending.stackDelayMs !== undefined) sample.stackDelayMs = pending.stackDelayMs;
      const stackError = pending.stackError ?? jsStacksUnavailable;
      if (stackError !== undefined && sample.stack === '') sample.stackError = stackError;
      const key = sampleKey(sample);
      const last = samples[samples.length - 1];
      if (last && key === previousKey) last.count++;
      else samples.push(sample);
      previousKey = key;
    }
    // The stack of the block: the first read while JavaScript ran, else the first read at all.
    const withStack =
      samples.find((s) => s.stack !== '' && !nativeStackTells(s)) ?? samples.find((s) => s.stack !== '') ?? samples[0];
    const block: EventLoopBlock = {
      durationMs: Math.round(busyMs * 10) / 10,
      startedAt: Math.round(wallNow() - (monotonicNow() - endedAt) - busyMs),
      stack: withStack?.stack ?? '',
      samples,
    };
    if (withStack?.nativeStack) block.nativeStack = withStack.nativeStack;
    return block;
  }
}

/**
 * Waits while `holds(ctl[index])`, at most `timeoutMs`; false when it still
 * holds. With `spin` (the default) it spins in JavaScript instead of sleeping
 * in Atomics.wait: the inspector's requests reach this thread in JavaScript,
 * but one that comes while it sleeps in Atomics.wait may wait for its next
 * event-loop turn (Node 22 and 26), and what it waits for may need one.
 */
function waitWhile(ctl: Int32Array, index: number, holds: (value: number) => boolean, timeoutMs: number, spin = true): boolean {
  const deadline = monotonicNow() + timeoutMs;
  for (let value = Atomics.load(ctl, index); holds(value); value = Atomics.load(ctl, index)) {
    const left = deadline - monotonicNow();
    if (left <= 0) return false;
    if (!spin) Atomics.wait(ctl, index, value, left);
  }
  return true;
}

let watchdog: Watchdog | undefined;
let exitHooked = false;

function sharedWatchdog(): Watchdog {
  if (watchdog && !watchdog.ended) return watchdog;
  watchdog = new Watchdog();
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => watchdog?.quitAtExit());
  }
  return watchdog;
}

// ------------------------------------------------ the stack function

let captureSeq = 0;

/**
 * Installs the function the watchdog's Runtime.evaluate calls (by id: two
 * copies of threadleak in one process each have their own) where the
 * expression finds it: on this realm's global, and, for a test runner that
 * runs modules in a vm context of their own (Jest), on the node:worker_threads
 * module object, which every realm of the process shares.
 */
function installCapture(ctl: Int32Array): string {
  const key = Symbol.for(CAPTURE_SYMBOL);
  const holder = globalThis as unknown as Record<symbol, Record<string, unknown> | undefined>;
  const registry = (holder[key] ??= Object.create(null) as Record<string, unknown>);
  // The module object itself (a test runner's require of a Node module gives the process's own).
  const builtin = createRequire(__filename)('node:worker_threads') as Record<symbol, unknown>;
  if (builtin[key] === undefined) Object.defineProperty(builtin, key, { value: registry, configurable: true });
  const id = `${process.pid}-${++captureSeq}-${Math.random().toString(36).slice(2)}`;
  registry[id] = function captureEventLoopStack(epoch: number): string | null {
    // The thread beat since the block was noticed: where it is now is not the block.
    if (Atomics.load(ctl, EPOCH) !== epoch) return null;
    const holderError: { stack?: unknown } = {};
    const limit = Error.stackTraceLimit;
    try {
      Error.stackTraceLimit = STACK_LIMIT;
      Error.captureStackTrace(holderError, captureEventLoopStack);
    } finally {
      Error.stackTraceLimit = limit;
    }
    const lines = String(holderError.stack ?? '').split('\n').slice(1);
    // The evaluated expression's own frame comes first.
    while (lines.length > 0 && /^\s*at <anonymous>:\d+:\d+\)?$/.test(lines[0]!)) lines.shift();
    return lines.join('\n');
  };
  return id;
}

// ------------------------------------------------ the scope

interface ResolvedBlockingOptions extends ResolvedScopeOptions<EventLoopBlock> {
  thresholdMs: number;
}

function resolveOptions(where: string, options: unknown): ResolvedBlockingOptions {
  const raw = checkOptionsObject(where, options);
  rejectUnknownOptions(where, raw, OPTION_NAMES);
  if (raw.action === 'cancel') {
    throw invalidOption(
      where,
      'action',
      raw.action,
      "'warn', 'log' or 'raise' ('cancel' cannot be done: a blocked event loop is running code, which cannot be stopped from outside)",
    );
  }
  const threshold = raw.thresholdMs;
  if (threshold !== undefined && (typeof threshold !== 'number' || !(threshold >= MIN_THRESHOLD_MS) || threshold > MAX_THRESHOLD_MS)) {
    throw invalidOption(where, 'thresholdMs', threshold, `a number from ${MIN_THRESHOLD_MS} to ${MAX_THRESHOLD_MS}`);
  }
  return {
    action: resolveAction(where, raw.action, ACTIONS),
    logger: resolveLogger(where, raw.logger),
    gracePeriodMs: 0,
    includes: () => true,
    filterNeedsDetail: false,
    thresholdMs: (threshold as number | undefined) ?? DEFAULT_THRESHOLD_MS,
  };
}

class BlockDetector implements LeakDetector<EventLoopBlock> {
  readonly warning = { type: 'EventLoopBlockWarning', code: 'ERR_EVENT_LOOP_BLOCKED' };
  readonly #listener: Listener;
  readonly #watchdog: Watchdog;

  constructor(thresholdMs: number) {
    this.#listener = { thresholdMs, blocks: [] };
    this.#watchdog = sharedWatchdog();
    this.#watchdog.add(this.#listener);
  }

  findLeaks(): EventLoopBlock[] {
    this.#watchdog.beat();
    return [...this.#listener.blocks];
  }

  release(): void {
    this.#watchdog.remove(this.#listener);
  }

  message(blocks: EventLoopBlock[]): string {
    return formatEventLoopBlocks(blocks, this.#listener.thresholdMs, PACKAGE_DIR, jsStacksUnavailable);
  }

  error(blocks: EventLoopBlock[], message: string): EventLoopBlockError {
    return new EventLoopBlockError(message, blocks);
  }
}

/** An event-loop blocking scope: `await using`, `using`, `close()`, or a method decorator. */
export type EventLoopBlockingScope = LeakScope<EventLoopBlock>;

function openBlockingScope(options: ResolvedBlockingOptions): EventLoopBlockingScope {
  return new LeakScope<EventLoopBlock>(new BlockDetector(options.thresholdMs), options, () => openBlockingScope(options));
}

/**
 * Reports every turn of the event loop longer than `thresholdMs` while the
 * scope is open, with the JavaScript and native stacks the thread was running
 * during it.
 *
 * - `noEventLoopBlocking(options)` starts watching now and returns a scope to
 *   close with `await using`, `using` or `close()`.
 * - `noEventLoopBlocking(fn, options)` returns `fn` wrapped so that each call
 *   is watched in its own scope (a sync function stays sync).
 * - `@noEventLoopBlocking` and `@noEventLoopBlocking(options)` decorate a class method.
 */
export function noEventLoopBlocking(options?: EventLoopBlockingOptions): EventLoopBlockingScope;
export function noEventLoopBlocking<F extends (...args: any[]) => any>(fn: F, options?: EventLoopBlockingOptions): F;
export function noEventLoopBlocking<F extends (...args: any[]) => any>(fn: F, context: ClassMethodDecoratorContext): F;
export function noEventLoopBlocking(
  fnOrOptions?: ((...args: any[]) => any) | EventLoopBlockingOptions,
  options?: EventLoopBlockingOptions | ClassMethodDecoratorContext,
): unknown {
  if (typeof fnOrOptions === 'function') {
    checkDecoratorKind('@noEventLoopBlocking', options);
    const resolved = resolveOptions('noEventLoopBlocking(fn, options)', isDecoratorContext(options) ? undefined : options);
    return wrapInScope(fnOrOptions, () => openBlockingScope(resolved));
  }
  return openBlockingScope(resolveOptions('noEventLoopBlocking(options)', fnOrOptions));
}
