// noThreadLeaks(): a leak scope over the OS threads of this process.
import type { Worker } from 'node:worker_threads';
import { ThreadLeakError } from './errors.js';
import { formatCannotStopThreads, formatThreadLeaks } from './report.js';
import { isLibraryThread, isRuntimeModule, mapWorkers, takeBaseline, workerForThread, type WorkerBaseline } from './runtime.js';
import {
  checkDecoratorKind,
  isDecoratorContext,
  LeakScope,
  resolveAction,
  resolveBoolean,
  resolveGracePeriod,
  resolveLogger,
  resolveNameFilter,
  waitForLeaks,
  waitForLeaksSync,
  wrapInScope,
  type LeakAction,
  type LeakDetector,
  type LeakLogger,
  type ResolvedScopeOptions,
} from './scope.js';
import { checkOptionsObject, rejectUnknownOptions } from './options.js';
import { leakReportStack, threads } from './snapshot.js';
import type { LeakedThread, ThreadInfo, ThreadOrigin } from './types.js';

export type { LeakedThread, ThreadOrigin } from './types.js';

export interface ThreadLeakOptions {
  /** What to do when threads leak. Default 'warn'. */
  action?: LeakAction;
  /** Which threads are checked (includes): equality, RegExp#test, predicate, or null for all. */
  nameFilter?: string | RegExp | ((thread: LeakedThread) => boolean) | null;
  /** Receives the message for action 'log' and 'cancel'. Default console. */
  logger?: LeakLogger;
  /** Leave out daemon threads (unref()'d Workers). Default true. */
  excludeDaemon?: boolean;
  /** How long to wait for new threads to end before reporting. Default 100. */
  gracePeriodMs?: number;
  /** Capture the native stack of each leaked native thread. Default true. */
  captureStacks?: boolean;
}

/**
 * The default name filter: every thread except the kernel's io_uring helper
 * threads (iou-sqp-N, iou-wrk-N), which the kernel starts and ends on its own.
 */
export const DEFAULT_THREAD_NAME_FILTER: RegExp = /^(?!iou-(?:sqp|wrk)-\d+$)/;

/** The options noThreadLeaks() takes (the test-runner integrations take these and `scope`). */
export const THREAD_LEAK_OPTION_NAMES = ['action', 'nameFilter', 'logger', 'excludeDaemon', 'gracePeriodMs', 'captureStacks'] as const;
const DEFAULT_GRACE_PERIOD_MS = 100;
// How long 'cancel' waits for terminated Workers' OS threads to end.
const CANCEL_WAIT_MS = 2000;

export interface ResolvedThreadOptions extends ResolvedScopeOptions<LeakedThread> {
  excludeDaemon: boolean;
  captureStacks: boolean;
  /**
   * A new thread that runs Node's own code and is not a Worker made here is
   * left out: it is the runtime's (its libuv pool, when it was not pre-warmed
   * before the baseline) or another JavaScript thread's (a test runner's
   * Workers that run other test files in this process).
   */
  excludeRuntimeThreads: boolean;
}

/** Validates `raw`, whose names the caller has checked, with `action` defaulting to `defaultAction`. */
export function resolveThreadLeakOptions(
  where: string,
  raw: Record<string, unknown>,
  defaultAction: LeakAction = 'warn',
): ResolvedThreadOptions {
  const filter = resolveNameFilter<LeakedThread>(where, raw.nameFilter, DEFAULT_THREAD_NAME_FILTER, (t) => t.name);
  return {
    action: resolveAction(where, raw.action, undefined, defaultAction),
    includes: filter.includes,
    filterNeedsDetail: filter.needsDetail,
    logger: resolveLogger(where, raw.logger),
    gracePeriodMs: resolveGracePeriod(where, raw.gracePeriodMs, DEFAULT_GRACE_PERIOD_MS),
    excludeDaemon: resolveBoolean(where, 'excludeDaemon', raw.excludeDaemon, true),
    captureStacks: resolveBoolean(where, 'captureStacks', raw.captureStacks, true),
    excludeRuntimeThreads: false,
  };
}

function resolveOptions(where: string, options: unknown): ResolvedThreadOptions {
  const raw = checkOptionsObject(where, options);
  rejectUnknownOptions(where, raw, THREAD_LEAK_OPTION_NAMES);
  return resolveThreadLeakOptions(where, raw);
}

function originOf(thread: ThreadInfo): ThreadOrigin {
  const record = workerForThread(thread.key);
  if (record) return { kind: 'worker', creationStack: record.creationStack, worker: record.worker };
  return { kind: 'native' };
}

/** A native thread (not a Worker of this realm) running Node's own code. */
function isRuntimeThread(thread: LeakedThread): boolean {
  return thread.origin.kind === 'native' && thread.origin.module !== undefined && isRuntimeModule(thread.origin.module);
}

function isDaemon(thread: ThreadInfo): boolean {
  const record = workerForThread(thread.key);
  return record !== undefined && !record.refed;
}

// How long one leaked thread's stack probe may take, when it is probed at all
// (see leakReportStack: a thread blocked in a system call is never interrupted).
const STACK_TIMEOUT_MS = 100;

/**
 * Adds the module and function that started a native thread, and its stack
 * when `withStack`. Without it, only what the kernel shows is read (timeout 0
 * never sends the probe): the creator of a thread blocked in a system call --
 * most leaked threads are idle -- is still known, at no risk to the thread.
 */
function withNativeDetail(thread: LeakedThread, withStack: boolean): LeakedThread {
  const stack = leakReportStack(thread.id, withStack ? STACK_TIMEOUT_MS : 0, thread.key);
  const origin: ThreadOrigin = { kind: 'native' };
  if (stack.module !== undefined) origin.module = stack.module;
  if (stack.startRoutine !== undefined) origin.startRoutine = stack.startRoutine;
  return withStack ? { ...thread, origin, stack } : { ...thread, origin };
}

class ThreadLeakDetector implements LeakDetector<LeakedThread> {
  readonly warning = { type: 'ThreadLeakWarning', code: 'ERR_THREAD_LEAK' };
  readonly #baseline: WorkerBaseline;
  readonly #options: ResolvedThreadOptions;
  // Native threads with their creator (and stack) by key: read once per scope.
  readonly #detail = new Map<string, LeakedThread>();

  constructor(options: ResolvedThreadOptions, baseline: WorkerBaseline = takeBaseline()) {
    this.#options = options;
    this.#baseline = baseline;
  }

  #enrich(thread: ThreadInfo, withDetail: boolean): LeakedThread {
    // The origin is looked up every time: a Worker's OS thread may have been settled since.
    const origin = originOf(thread);
    if (origin.kind === 'worker' || !withDetail) return { ...thread, origin };
    // Names and states come from the newest snapshot; the creator and stack
    // from the first look (what `thread` carries of them may be less: a
    // leak found again, before its detail was added).
    const cached = this.#detail.get(thread.key);
    if (cached) {
      const { origin: _origin, stack: _stack, ...latest } = thread as LeakedThread;
      return { ...cached, ...latest };
    }
    const leaked = withNativeDetail({ ...thread, origin }, this.#options.captureStacks);
    this.#detail.set(thread.key, leaked);
    return leaked;
  }

  findLeaks(): LeakedThread[] {
    const options = this.#options;
    const leaks: LeakedThread[] = [];
    const list = threads();
    mapWorkers(list, this.#baseline);
    for (const thread of list) {
      if (this.#baseline.keys.has(thread.key) || thread.state === 'zombie' || isLibraryThread(thread.key)) continue;
      if (options.excludeDaemon && isDaemon(thread)) continue;
      const leaked = this.#enrich(thread, options.filterNeedsDetail || options.excludeRuntimeThreads);
      if (options.excludeRuntimeThreads && isRuntimeThread(leaked)) continue;
      if (!options.includes(leaked)) continue;
      leaks.push(leaked);
    }
    return leaks.sort((a, b) => a.id - b.id);
  }

  finalize(leaks: LeakedThread[]): LeakedThread[] {
    return leaks.map((t) => this.#enrich(t, true));
  }

  #stillAlive(keys: Set<string>): () => string[] {
    return () => threads().filter((t) => keys.has(t.key) && t.state !== 'zombie').map((t) => t.key);
  }

  async cancel(leaks: LeakedThread[]): Promise<LeakedThread[]> {
    const workers = leaks.filter((t) => t.origin.kind === 'worker');
    if (workers.length === 0) return leaks;
    await Promise.allSettled(workers.map((t) => (t.origin as { worker: Worker }).worker.terminate()));
    const keys = new Set(workers.map((t) => t.key));
    const alive = new Set(await waitForLeaks(this.#stillAlive(keys), CANCEL_WAIT_MS));
    return leaks.filter((t) => t.origin.kind === 'native' || alive.has(t.key));
  }

  cancelSync(leaks: LeakedThread[]): LeakedThread[] {
    const workers = leaks.filter((t) => t.origin.kind === 'worker');
    if (workers.length === 0) return leaks;
    // terminate() stops the Worker's JavaScript from this thread; its OS thread
    // then ends by itself, which a blocking wait can observe.
    for (const t of workers) void (t.origin as { worker: Worker }).worker.terminate().catch(() => {});
    const keys = new Set(workers.map((t) => t.key));
    const alive = new Set(waitForLeaksSync(this.#stillAlive(keys), CANCEL_WAIT_MS));
    return leaks.filter((t) => t.origin.kind === 'native' || alive.has(t.key));
  }

  message(leaks: LeakedThread[]): string {
    return formatThreadLeaks(leaks, this.#options.gracePeriodMs);
  }

  cannotStopMessage(leaks: LeakedThread[]): string {
    return formatCannotStopThreads(leaks);
  }

  error(leaks: LeakedThread[], message: string): ThreadLeakError {
    return new ThreadLeakError(message, leaks);
  }
}

/** A thread-leak scope: `await using`, `using`, `close()`, or a method decorator. */
export type ThreadLeakScope = LeakScope<LeakedThread>;

/**
 * Opens a scope with options already resolved (the integrations resolve
 * theirs once), and with a baseline taken before, if given (see
 * runtime.takeBaseline: threadleak/register takes it without loading this).
 */
export function openThreadLeakScope(options: ResolvedThreadOptions, baseline?: WorkerBaseline): ThreadLeakScope {
  return new LeakScope<LeakedThread>(new ThreadLeakDetector(options, baseline), options, () => openThreadLeakScope(options));
}

/**
 * Checks that no OS thread started in a scope is still alive when it ends.
 *
 * - `noThreadLeaks(options)` takes the baseline now and returns a scope to
 *   close with `await using`, `using` (blocks while it waits) or `close()`.
 * - `noThreadLeaks(fn, options)` returns `fn` wrapped so that each call runs
 *   in its own scope.
 * - `@noThreadLeaks` and `@noThreadLeaks(options)` decorate a class method.
 */
export function noThreadLeaks(options?: ThreadLeakOptions): ThreadLeakScope;
export function noThreadLeaks<F extends (...args: any[]) => any>(fn: F, options?: ThreadLeakOptions): F;
export function noThreadLeaks<F extends (...args: any[]) => any>(fn: F, context: ClassMethodDecoratorContext): F;
export function noThreadLeaks(
  fnOrOptions?: ((...args: any[]) => any) | ThreadLeakOptions,
  options?: ThreadLeakOptions | ClassMethodDecoratorContext,
): unknown {
  if (typeof fnOrOptions === 'function') {
    const where = 'noThreadLeaks(fn, options)';
    checkDecoratorKind('@noThreadLeaks', options);
    const resolved = resolveOptions(where, isDecoratorContext(options) ? undefined : options);
    return wrapInScope(fnOrOptions, () => openThreadLeakScope(resolved));
  }
  return openThreadLeakScope(resolveOptions('noThreadLeaks(options)', fnOrOptions));
}
