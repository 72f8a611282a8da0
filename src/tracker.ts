// LeakTracker: register any resource when it is acquired, unregister it when
// it is released, and report what never was. Entries hold their objects
// weakly, so tracking never keeps anything alive; an object collected while
// still tracked is kept in the reports as "collected without release".
// noResourceLeaks() runs the shared leak-scope machinery over one tracker.
import { writeSync } from 'node:fs';
import { invalidOption, ResourceLeakError } from './errors.js';
import { formatExitLoggerThrew, formatResourceLeaks, formatResourceReport } from './report.js';
import {
  LeakScope,
  resolveAction,
  resolveBoolean,
  resolveGracePeriod,
  resolveLogger,
  resolveNameFilter,
  wrapInScope,
  type LeakDetector,
  type LeakLogger,
  type ResolvedScopeOptions,
} from './scope.js';
import { checkOptionsObject, rejectUnknownOptions } from './options.js';
import type { LeakInfo, LeakReport } from './types.js';

export type { LeakInfo, LeakReport } from './types.js';

export interface LeakTrackerOptions {
  /** Record the JavaScript stack of every track() call and show it in reports. Default false. */
  captureStack?: boolean;
}

export interface TrackOptions {
  /** A label for reports. Default `${kind}-${id}`. */
  name?: string;
  /** What sort of resource this is ('file', 'db-connection'); reports count by it. Default 'object'. */
  kind?: string;
}

export interface ReportAtExitOptions {
  /** Receives the report when something is unreleased at exit. Default console. */
  logger?: LeakLogger;
}

interface Entry {
  readonly id: number;
  readonly name: string;
  readonly kind: string;
  readonly createdAt: number;
  /** performance.now() at track(), for ages that do not jump with the wall clock. */
  readonly trackedAt: number;
  readonly ref: WeakRef<object>;
  readonly stack?: string;
  collected: boolean;
}

const TRACKER_OPTION_NAMES = ['captureStack'] as const;
const TRACK_OPTION_NAMES = ['name', 'kind'] as const;
const EXIT_OPTION_NAMES = ['logger'] as const;
const DEFAULT_KIND = 'object';

function resolveLabel(where: string, option: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw invalidOption(where, option, value, 'a non-empty string');
  return value;
}

function isTrackable(value: unknown): value is object {
  return (typeof value === 'object' && value !== null) || typeof value === 'function';
}

const reportPrototype = {
  toString(this: LeakReport): string {
    return this.text;
  },
};

// Filled in by LeakTracker's static block: what noResourceLeaks() reads of a tracker.
let lastIdOf!: (tracker: LeakTracker) => number;
let leaksSince!: (tracker: LeakTracker, id: number) => LeakInfo[];

/**
 * Tracks resources weakly and reports the ones never released.
 *
 * Tracking an object that is already tracked starts it over: it is the same
 * as `untrack(obj)` then `track(obj, options)` (a new id, name, kind, time
 * and stack). Entries of objects collected without release stay until
 * `clear()`.
 */
export class LeakTracker {
  readonly #captureStack: boolean;
  readonly #entries = new Map<number, Entry>();
  #byObject = new WeakMap<object, Entry>();
  readonly #registry = new FinalizationRegistry<number>((id) => {
    const entry = this.#entries.get(id);
    if (entry) entry.collected = true;
  });
  #lastId = 0;
  #exitLogger: LeakLogger = console;
  #exitListener: (() => void) | undefined;

  static {
    lastIdOf = (tracker) => tracker.#lastId;
    leaksSince = (tracker, id) => tracker.#infos((entry) => entry.id > id);
  }

  constructor(options?: LeakTrackerOptions) {
    const where = 'new LeakTracker(options)';
    const raw = checkOptionsObject(where, options);
    rejectUnknownOptions(where, raw, TRACKER_OPTION_NAMES);
    this.#captureStack = resolveBoolean(where, 'captureStack', raw.captureStack, false);
  }

  /** Starts tracking `obj` (an object or a function) and returns it. */
  track<T extends object>(obj: T, options?: TrackOptions): T {
    const where = 'LeakTracker.track(obj, options)';
    if (!isTrackable(obj)) throw invalidOption(where, 'obj', obj, 'an object or a function');
    const raw = checkOptionsObject(where, options);
    rejectUnknownOptions(where, raw, TRACK_OPTION_NAMES);
    const kind = resolveLabel(where, 'kind', raw.kind) ?? DEFAULT_KIND;
    const name = resolveLabel(where, 'name', raw.name);
    // Read now, not when reported: an unformatted V8 stack holds the receivers
    // of its frames, which would keep an object tracked from its own constructor alive.
    const stack = this.#captureStack ? this.#stackOfCaller() : undefined;
    this.untrack(obj);
    const id = ++this.#lastId;
    const entry: Entry = {
      id,
      name: name ?? `${kind}-${id}`,
      kind,
      createdAt: Date.now(),
      trackedAt: performance.now(),
      ref: new WeakRef(obj),
      ...(stack === undefined ? {} : { stack }),
      collected: false,
    };
    this.#entries.set(id, entry);
    this.#byObject.set(obj, entry);
    this.#registry.register(obj, id, entry);
    return obj;
  }

  /** Stops tracking `obj`: it was released. Returns whether it was tracked. */
  untrack(obj: object): boolean {
    if (!isTrackable(obj)) return false;
    const entry = this.#byObject.get(obj);
    if (!entry) return false;
    this.#byObject.delete(obj);
    this.#entries.delete(entry.id);
    this.#registry.unregister(entry);
    return true;
  }

  /** Every unreleased entry, oldest first, collected ones included (`collected: true`). */
  live(): LeakInfo[] {
    return this.#infos(() => true);
  }

  /** Forgets every entry, collected ones included. */
  clear(): void {
    for (const entry of this.#entries.values()) this.#registry.unregister(entry);
    this.#entries.clear();
    this.#byObject = new WeakMap();
  }

  /** A summary of what is unreleased now: totals, count by kind, oldest age, entries, text. */
  report(): LeakReport {
    return this.#report();
  }

  /**
   * Reports the unreleased entries with `logger.warn` when the process exits
   * (the 'exit' event: a normal end, process.exit() or an uncaught exception;
   * not a kill by signal). Silent when everything was released. Calling it
   * again registers nothing more; the last logger given is used.
   */
  reportAtExit(options?: ReportAtExitOptions): void {
    const where = 'LeakTracker.reportAtExit(options)';
    const raw = checkOptionsObject(where, options);
    rejectUnknownOptions(where, raw, EXIT_OPTION_NAMES);
    this.#exitLogger = resolveLogger(where, raw.logger);
    if (this.#exitListener) return;
    this.#exitListener = () => {
      const report = this.#report('at process exit');
      if (report.total === 0) return;
      try {
        this.#exitLogger.warn(report.text);
      } catch (error) {
        // A throw here would skip the other 'exit' listeners and change the
        // exit code: the report goes to stderr, with what the logger threw.
        try {
          writeSync(2, formatExitLoggerThrew(error, report.text));
        } catch {
          // stderr is closed: nothing more can be said
        }
      }
    };
    process.on('exit', this.#exitListener);
  }

  #report(when?: string): LeakReport {
    const leaks = this.live();
    const counts = new Map<string, number>();
    for (const leak of leaks) counts.set(leak.kind, (counts.get(leak.kind) ?? 0) + 1);
    const kinds = [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const data = {
      total: leaks.length,
      collected: leaks.filter((leak) => leak.collected).length,
      // fromEntries defines own properties: a kind named '__proto__' stays a key.
      byKind: Object.fromEntries(kinds),
      oldestAgeMs: leaks[0]?.ageMs ?? 0,
      leaks,
    };
    return Object.assign(Object.create(reportPrototype) as LeakReport, data, { text: formatResourceReport(data, when) });
  }

  #infos(select: (entry: Entry) => boolean): LeakInfo[] {
    const now = performance.now();
    const infos: LeakInfo[] = [];
    // A Map iterates in insertion order, which is id order: oldest first.
    for (const entry of this.#entries.values()) {
      if (!select(entry)) continue;
      // deref() sees a collection before the finalization callback has run.
      if (!entry.collected && entry.ref.deref() === undefined) entry.collected = true;
      const info: LeakInfo = {
        id: entry.id,
        name: entry.name,
        kind: entry.kind,
        createdAt: entry.createdAt,
        ageMs: Math.max(0, now - entry.trackedAt),
        collected: entry.collected,
      };
      if (entry.stack !== undefined) info.stack = entry.stack;
      infos.push(info);
    }
    return infos;
  }

  #stackOfCaller(): string {
    const holder: { stack?: string } = {};
    Error.captureStackTrace(holder, LeakTracker.prototype.track);
    const lines = (holder.stack ?? '').split('\n');
    return lines.filter((line) => /^\s+at /.test(line)).join('\n');
  }
}

// ------------------------------------------------------------ resource scopes

export interface ResourceLeakOptions {
  /** What to do when resources leak. Default 'warn'. */
  action?: 'warn' | 'log' | 'raise';
  /** Which entries are checked, by name: equality, RegExp#test, predicate, or null for all. Default null. */
  nameFilter?: string | RegExp | ((leak: LeakInfo) => boolean) | null;
  /** Which entries are checked, by kind: equality, RegExp#test, predicate, or null for all. Default null. */
  kindFilter?: string | RegExp | ((leak: LeakInfo) => boolean) | null;
  /** Receives the message for action 'log'. Default console. */
  logger?: LeakLogger;
  /** How long to wait for entries to be released before reporting. Default 0. */
  gracePeriodMs?: number;
}

const SCOPE_OPTION_NAMES = ['action', 'nameFilter', 'kindFilter', 'logger', 'gracePeriodMs'] as const;
const DEFAULT_GRACE_PERIOD_MS = 0;

function resolveScopeOptions(where: string, options: unknown): ResolvedScopeOptions<LeakInfo> {
  const raw = checkOptionsObject(where, options);
  rejectUnknownOptions(where, raw, SCOPE_OPTION_NAMES);
  const byName = resolveNameFilter<LeakInfo>(where, raw.nameFilter, null, (leak) => leak.name);
  const byKind = resolveNameFilter<LeakInfo>(where, raw.kindFilter, null, (leak) => leak.kind, 'kindFilter');
  return {
    action: resolveAction(where, raw.action, ['warn', 'log', 'raise']),
    includes: (leak) => byName.includes(leak) && byKind.includes(leak),
    filterNeedsDetail: false,
    logger: resolveLogger(where, raw.logger),
    gracePeriodMs: resolveGracePeriod(where, raw.gracePeriodMs, DEFAULT_GRACE_PERIOD_MS),
  };
}

class ResourceLeakDetector implements LeakDetector<LeakInfo> {
  readonly warning = { type: 'ResourceLeakWarning', code: 'ERR_RESOURCE_LEAK' };
  readonly #tracker: LeakTracker;
  readonly #baseline: number;
  readonly #options: ResolvedScopeOptions<LeakInfo>;

  constructor(tracker: LeakTracker, options: ResolvedScopeOptions<LeakInfo>) {
    this.#tracker = tracker;
    this.#options = options;
    this.#baseline = lastIdOf(tracker);
  }

  findLeaks(): LeakInfo[] {
    return leaksSince(this.#tracker, this.#baseline).filter(this.#options.includes);
  }

  message(leaks: LeakInfo[]): string {
    return formatResourceLeaks(leaks, this.#options.gracePeriodMs);
  }

  error(leaks: LeakInfo[], message: string): ResourceLeakError {
    return new ResourceLeakError(message, leaks);
  }
}

/** A resource-leak scope: `await using`, `using`, `close()`, or a method decorator. */
export type ResourceLeakScope = LeakScope<LeakInfo>;

function openScope(tracker: LeakTracker, options: ResolvedScopeOptions<LeakInfo>): ResourceLeakScope {
  return new LeakScope<LeakInfo>(new ResourceLeakDetector(tracker, options), options, () => openScope(tracker, options));
}

/**
 * Checks that every resource tracked by `tracker` in a scope is released
 * (untracked) by the time it ends. Entries tracked before the scope are not
 * its business; an entry collected without release inside it is a leak.
 *
 * - `noResourceLeaks(tracker, options)` takes the baseline now and returns a
 *   scope to close with `await using`, `using` or `close()`.
 * - `noResourceLeaks(tracker, fn, options)` returns `fn` wrapped so that each
 *   call runs in its own scope.
 * - `@noResourceLeaks(tracker, options)` decorates a class method.
 */
export function noResourceLeaks(tracker: LeakTracker, options?: ResourceLeakOptions): ResourceLeakScope;
export function noResourceLeaks<F extends (...args: any[]) => any>(
  tracker: LeakTracker,
  fn: F,
  options?: ResourceLeakOptions,
): F;
export function noResourceLeaks(
  tracker: LeakTracker,
  fnOrOptions?: ((...args: any[]) => any) | ResourceLeakOptions,
  options?: ResourceLeakOptions,
): unknown {
  const wrapping = typeof fnOrOptions === 'function';
  const where = wrapping ? 'noResourceLeaks(tracker, fn, options)' : 'noResourceLeaks(tracker, options)';
  if (!(tracker instanceof LeakTracker)) throw invalidOption(where, 'tracker', tracker, 'a LeakTracker');
  if (!wrapping) return openScope(tracker, resolveScopeOptions(where, fnOrOptions));
  const resolved = resolveScopeOptions(where, options);
  return wrapInScope(fnOrOptions, () => openScope(tracker, resolved));
}
