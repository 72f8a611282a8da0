// The leak-scope machinery every detector shares: option validation, the
// baseline-then-check life cycle, waiting with capped exponential backoff,
// and acting on what leaked (warn / log / cancel / raise). A detector says
// what a "leak" is; this module decides when to look and what to do.
import timers from 'node:timers';
import { invalidOption } from './errors.js';
import { formatFilterThrew } from './report.js';
import type { LeakError } from './errors.js';

export type LeakAction = 'warn' | 'log' | 'cancel' | 'raise';

export interface LeakLogger {
  warn(message: string): void;
}

/** A name filter as users give it: equality, RegExp#test, a predicate, or null (all). */
export type NameFilter<T> = string | RegExp | ((item: T) => boolean) | null;

/** Options after validation, with defaults applied. */
export interface ResolvedScopeOptions<T> {
  action: LeakAction;
  /** true: the item is in scope of the check (pyleak's "include" meaning). */
  includes: (item: T) => boolean;
  /** true when `includes` needs the enriched item (a predicate was given). */
  filterNeedsDetail: boolean;
  logger: LeakLogger;
  gracePeriodMs: number;
}

/** What one kind of leak check provides to the shared machinery. */
export interface LeakDetector<Leak> {
  /** The leaks visible now: new since the baseline, after every filter. */
  findLeaks(): Leak[];
  /** Called once on the final, non-empty set before acting. */
  finalize?(leaks: Leak[]): Leak[];
  /** Stops what can be stopped; returns the leaks that could not be. */
  cancel?(leaks: Leak[]): Promise<Leak[]>;
  cancelSync?(leaks: Leak[]): Leak[];
  /** The message for warn, log and raise. */
  message(leaks: Leak[]): string;
  /** The message logged for leaks that `cancel` could not stop. */
  cannotStopMessage?(leaks: Leak[]): string;
  error(leaks: Leak[], message: string): LeakError;
  warning: { type: string; code: string };
  /** Called once when the scope closes, after its last look (a watcher it started stops). */
  release?(): void;
}

/** What the scope itself needs: the rest of the options belong to the detector. */
export type ScopeActOptions = Pick<ResolvedScopeOptions<unknown>, 'action' | 'logger' | 'gracePeriodMs'>;

const ACTIONS: readonly LeakAction[] = ['warn', 'log', 'cancel', 'raise'];

export function resolveAction(
  where: string,
  value: unknown,
  allowed: readonly LeakAction[] = ACTIONS,
  fallback: LeakAction = 'warn',
): LeakAction {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidOption(where, 'action', value, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return value as LeakAction;
}

export function resolveLogger(where: string, value: unknown): LeakLogger {
  if (value === undefined) return console;
  if (value === null || typeof value !== 'object' || typeof (value as LeakLogger).warn !== 'function') {
    throw invalidOption(where, 'logger', value, 'an object with a warn(message) method');
  }
  return value as LeakLogger;
}

/** The longest grace period: a scope that waits longer is a hang, not a check. */
export const MAX_GRACE_PERIOD_MS = 60_000;

export function resolveGracePeriod(where: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value >= 0) || value > MAX_GRACE_PERIOD_MS) {
    throw invalidOption(where, 'gracePeriodMs', value, `a number from 0 to ${MAX_GRACE_PERIOD_MS}`);
  }
  return value;
}

export function resolveBoolean(where: string, option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidOption(where, option, value, 'a boolean');
  return value;
}

const PREDICATE_EXPECTED = 'a predicate that returns a boolean, not a Promise (a filter is not awaited)';

function isAsyncFunction(fn: object): boolean {
  const tag = Object.prototype.toString.call(fn);
  return tag === '[object AsyncFunction]' || tag === '[object AsyncGeneratorFunction]';
}

/** Calls a filter predicate: its own error is said to be its own, and a Promise is refused. */
function callPredicate<T>(where: string, option: string, predicate: (item: T) => unknown, item: T): boolean {
  let result: unknown;
  try {
    result = predicate(item);
  } catch (error) {
    const failure = new Error(formatFilterThrew(where, option, error), { cause: error }) as Error & { code: string };
    failure.code = 'ERR_THREADLEAK_FILTER_THREW';
    throw failure;
  }
  if (isPromiseLike(result)) {
    // It may reject later: that is reported here, not as an unhandled rejection.
    Promise.resolve(result).catch(() => {});
    throw invalidOption(where, option, predicate, `${PREDICATE_EXPECTED}; it returned a Promise`);
  }
  return Boolean(result);
}

/**
 * Compiles a name filter. `nameOf` picks the text that strings and RegExps
 * are matched against; a predicate receives the whole item.
 */
export function resolveNameFilter<T>(
  where: string,
  value: unknown,
  fallback: NameFilter<T>,
  nameOf: (item: T) => string,
  option = 'nameFilter',
): { includes: (item: T) => boolean; needsDetail: boolean } {
  const filter = value === undefined ? fallback : value;
  if (filter === null) return { includes: () => true, needsDetail: false };
  if (typeof filter === 'string') return { includes: (item) => nameOf(item) === filter, needsDetail: false };
  if (filter instanceof RegExp) {
    // A global or sticky RegExp keeps lastIndex between test() calls: match on a fresh copy.
    const pattern = filter.global || filter.sticky ? new RegExp(filter.source, filter.flags.replace(/[gy]/g, '')) : filter;
    return { includes: (item) => pattern.test(nameOf(item)), needsDetail: false };
  }
  if (typeof filter === 'function') {
    if (isAsyncFunction(filter)) throw invalidOption(where, option, filter, PREDICATE_EXPECTED);
    const predicate = filter as (item: T) => unknown;
    return { includes: (item) => callPredicate(where, option, predicate, item), needsDetail: true };
  }
  throw invalidOption(where, option, value, 'a string, a RegExp, a function or null');
}

// The timer functions as they were when this module loaded: a test that
// installs fake timers (Jest's, vitest's: they replace the global functions
// and those of node:timers and performance) must not stop a scope's wait from
// ending, nor make it endless.
const realSetTimeout = timers.setTimeout;
const realSetImmediate = timers.setImmediate;
const monotonicNow = performance.now.bind(performance);

// Backoff while waiting for new threads or resources to go: the first check is
// immediate, then 0.25 ms doubling up to a 4 ms cap, so a verdict comes a few
// ms after the last one ends, while a long grace period costs few checks.
const FIRST_DELAY_MS = 0.25;
const MAX_DELAY_MS = 4;

/** The waits between checks, until `gracePeriodMs` from now has passed; none when it is 0. */
function* backoff(gracePeriodMs: number): Generator<number> {
  const deadline = monotonicNow() + gracePeriodMs;
  for (let delay = FIRST_DELAY_MS; ; delay = Math.min(delay * 2, MAX_DELAY_MS)) {
    const wait = Math.min(delay, deadline - monotonicNow());
    if (wait <= 0) return;
    yield wait;
  }
}

/** Polls `findLeaks` until it is empty or `gracePeriodMs` passed, yielding to the event loop. */
export async function waitForLeaks<Leak>(findLeaks: () => Leak[], gracePeriodMs: number): Promise<Leak[]> {
  let leaks = findLeaks();
  if (leaks.length === 0) return leaks; // the clean exit: no timer, no allocation
  for (const wait of backoff(gracePeriodMs)) {
    await new Promise<void>((resolve) => (wait < 1 ? realSetImmediate(resolve) : realSetTimeout(resolve, wait)));
    leaks = findLeaks();
    if (leaks.length === 0) break;
  }
  return leaks;
}

let sleeper: Int32Array | undefined;

/** Blocks the calling thread for `ms` without spinning. */
function sleepSync(ms: number): void {
  sleeper ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(sleeper, 0, 0, ms);
}

/** Like waitForLeaks, but blocks the event loop while it waits. */
export function waitForLeaksSync<Leak>(findLeaks: () => Leak[], gracePeriodMs: number): Leak[] {
  let leaks = findLeaks();
  if (leaks.length === 0) return leaks; // the clean exit: no timer, no allocation
  for (const wait of backoff(gracePeriodMs)) {
    sleepSync(wait);
    leaks = findLeaks();
    if (leaks.length === 0) break;
  }
  return leaks;
}

function act<Leak>(detector: LeakDetector<Leak>, options: ScopeActOptions, leaks: Leak[]): void {
  const message = detector.message(leaks);
  switch (options.action) {
    case 'raise':
      throw detector.error(leaks, message);
    case 'log':
      options.logger.warn(message);
      return;
    case 'cancel':
      if (leaks.length > 0) options.logger.warn(detector.cannotStopMessage?.(leaks) ?? message);
      return;
    case 'warn':
      process.emitWarning(message, { type: detector.warning.type, code: detector.warning.code });
      return;
  }
}

// A base class whose instances are functions: `new` returns the function it
// is given, re-prototyped, and subclasses install their fields on it. This is
// what lets a scope object double as a TC39 method decorator.
class CallableObject {
  constructor(call: (...args: any[]) => unknown) {
    return Object.setPrototypeOf(call, new.target.prototype);
  }
}

/** Decorates methods or wraps functions so each call runs in a fresh scope. */
export interface LeakScope<Leak> {
  <F extends (...args: any[]) => any>(fn: F, context?: ClassMethodDecoratorContext): F;
}

/**
 * One entered scope. The baseline lives in the detector; closing runs the
 * check once (a second close is a no-op). Calling the scope with a function
 * (or using it as a method decorator) wraps that function so that each of its
 * calls runs in a new scope with the same options; the scope itself is then
 * just a template and need not be closed.
 */
export class LeakScope<Leak> extends CallableObject {
  #detector: LeakDetector<Leak>;
  #options: ScopeActOptions;
  #closed = false;

  constructor(detector: LeakDetector<Leak>, options: ScopeActOptions, reopen: () => LeakScope<Leak>) {
    super((fn: unknown, context?: unknown) => {
      if (typeof fn !== 'function') throw invalidOption('scope(fn)', 'fn', fn, 'a function');
      if (context !== undefined && !isDecoratorContext(context)) {
        throw invalidOption('scope(fn)', 'context', context, 'a decorator context or undefined');
      }
      checkDecoratorKind('scope(fn)', context);
      return wrapInScope(fn as (...args: unknown[]) => unknown, reopen);
    });
    this.#detector = detector;
    this.#options = options;
  }

  /** Waits (yielding to the event loop) up to the grace period, then acts. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const detector = this.#detector;
    let leaks: Leak[];
    try {
      leaks = await waitForLeaks(() => detector.findLeaks(), this.#options.gracePeriodMs);
    } finally {
      detector.release?.();
    }
    if (leaks.length === 0) return;
    if (detector.finalize) leaks = detector.finalize(leaks);
    if (leaks.length === 0) return;
    if (this.#options.action === 'cancel' && detector.cancel) leaks = await detector.cancel(leaks);
    act(detector, this.#options, leaks);
  }

  /** Blocks the event loop up to the grace period, then acts. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    const detector = this.#detector;
    let leaks: Leak[];
    try {
      leaks = waitForLeaksSync(() => detector.findLeaks(), this.#options.gracePeriodMs);
    } finally {
      detector.release?.();
    }
    if (leaks.length === 0) return;
    if (detector.finalize) leaks = detector.finalize(leaks);
    if (leaks.length === 0) return;
    if (this.#options.action === 'cancel' && detector.cancelSync) leaks = detector.cancelSync(leaks);
    act(detector, this.#options, leaks);
  }

  /** The leaks visible right now, without waiting or acting. */
  leaks(): Leak[] {
    const leaks = this.#detector.findLeaks();
    return leaks.length > 0 && this.#detector.finalize ? this.#detector.finalize(leaks) : leaks;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  [Symbol.dispose](): void {
    this.closeSync();
  }
}

/** The standard shape for "the body threw, and closing the scope threw too". */
export function suppressed(error: unknown, suppressedError: unknown): Error {
  const Native = (globalThis as { SuppressedError?: new (e: unknown, s: unknown, m?: string) => Error }).SuppressedError;
  const message = 'A leak was detected after the scope body threw';
  if (Native) return new Native(error, suppressedError, message);
  const result = new Error(message) as Error & { error: unknown; suppressed: unknown };
  result.name = 'SuppressedError';
  result.error = error;
  result.suppressed = suppressedError;
  return result;
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as PromiseLike<unknown>).then === 'function';
}

/**
 * Wraps `fn` so that each call runs in its own scope from `open()`. A sync
 * function stays sync (its check blocks, like `using`); a call that returns a
 * promise is checked after the promise settles. `this`, arguments, the return
 * value, `name` and `length` are preserved.
 */
export function wrapInScope<F extends (...args: any[]) => any, Leak>(fn: F, open: () => LeakScope<Leak>): F {
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    const scope = open();
    let result: unknown;
    try {
      result = fn.apply(this, args);
    } catch (bodyError) {
      try {
        scope.closeSync();
      } catch (leakError) {
        throw suppressed(leakError, bodyError);
      }
      throw bodyError;
    }
    if (!isPromiseLike(result)) {
      scope.closeSync();
      return result;
    }
    return Promise.resolve(result).then(
      async (value) => {
        await scope.close();
        return value;
      },
      async (bodyError) => {
        try {
          await scope.close();
        } catch (leakError) {
          throw suppressed(leakError, bodyError);
        }
        throw bodyError;
      },
    );
  };
  Object.defineProperty(wrapped, 'name', { value: fn.name, configurable: true });
  Object.defineProperty(wrapped, 'length', { value: fn.length, configurable: true });
  return wrapped as F;
}

/**
 * A scope factory decorates methods only: used on a class, a field, a getter
 * or an accessor it is a TypeError when the decorator is applied, not a
 * wrapper that fails (or silently checks nothing) later.
 */
export function checkDecoratorKind(where: string, context: unknown): void {
  if (isDecoratorContext(context) && context.kind !== 'method') {
    throw invalidOption(where, 'context.kind', context.kind, "'method' (it decorates methods, not classes, fields or accessors)");
  }
}

/** True when `value` is the context object a TC39 standard decorator receives. */
export function isDecoratorContext(value: unknown): value is ClassMethodDecoratorContext {
  return value !== null && typeof value === 'object' &&
    typeof (value as ClassMethodDecoratorContext).kind === 'string' &&
    typeof (value as ClassMethodDecoratorContext).addInitializer === 'function';
}
