// The one place that turns data into text: every message threadleak prints or
// throws is formatted here, so wording and layout stay consistent.
import { inspect } from 'node:util';
import { groupSamples, nativeStackTells } from './blocking-samples.js';
import type {
  EventLoopBlock,
  EventLoopBlockSample,
  LeakedThread,
  LeakInfo,
  LeakReport,
  NativeFrame,
  NativeOrigin,
  ThreadAlertKind,
  ThreadHeadroom,
  WorkerOrigin,
} from './types.js';

// The real clock, as it was at load: ages stay true under a test's fake timers.
const wallClockNow = Date.now;

/** A short, unambiguous rendering of a user-supplied value for messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  return inspect(value, { depth: 1, breakLength: Infinity, maxStringLength: 60, maxArrayLength: 5 });
}

export function formatInvalidOption(where: string, option: string, value: unknown, expected: string): string {
  return `${where}: ${option} must be ${expected}, got ${describeValue(value)}`;
}

export function formatOsError(
  what: string,
  detail: { code: string; syscall: string; message: string },
  pid?: number,
): string {
  const target = pid === undefined ? 'this process' : `pid ${pid}`;
  const reason =
    detail.code === 'ESRCH'
      ? 'no such process'
      : detail.code === 'EACCES' || detail.code === 'EPERM'
        ? 'permission denied'
        : detail.code;
  return `${what}: cannot read the threads of ${target}: ${reason} (${detail.code}: ${detail.message})`;
}

export function formatUnsupportedPlatform(platform: string): string {
  return `threadleak is not yet supported on ${platform}: its native thread backends exist for linux, darwin (macOS) and win32 only`;
}

// ---------------------------------------------------------------- thread leaks

/**
 * What a thread-leak message is made from: a leaked thread, of which a
 * Worker's origin need not carry the Worker itself.
 */
type ThreadForReport = Pick<LeakedThread, 'id' | 'name' | 'state' | 'startTime' | 'stack'> & {
  origin: NativeOrigin | Omit<WorkerOrigin, 'worker'>;
};

const TOP_FRAMES = 5;
const CREATION_FRAMES = 4;

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10_000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * One native frame: `symbol+0xoffset (module)`, or, with no symbol,
 * `address (module+0xoffset)` — the offset from the module's load base, which
 * `addr2line -f -C -e <module> <offset>` resolves.
 */
export function formatFrame(frame: NativeFrame): string {
  const offset = frame.offset !== undefined ? `+0x${frame.offset.toString(16)}` : '';
  const where = frame.symbol ? `${frame.symbol}${offset}` : frame.address;
  const module = frame.module ? ` (${frame.module}${frame.symbol ? '' : offset})` : '';
  return `${where}${module}${frame.scanned ? ' [scanned]' : ''}`;
}

function describeCreator(thread: ThreadForReport): string {
  const origin = thread.origin;
  if (origin.kind === 'worker') return 'Worker';
  if (origin.startRoutine && origin.module) return `native, started by ${origin.startRoutine} in ${origin.module}`;
  if (origin.module) return `native, started from ${origin.module}`;
  if (origin.startRoutine) return `native, started by ${origin.startRoutine}`;
  return 'native, creator unknown';
}

const isDependencyFrame = (line: string): boolean => /[\\/]node_modules[\\/]/.test(line);

/**
 * The top frames of a Worker's creation stack. When all of them are inside
 * dependencies (a pool such as piscina creates its Workers several calls deep),
 * the first frame of the caller's own code follows, so the report says where
 * the pool was started.
 */
function creationFrames(creationStack: string): string[] {
  const all = creationStack.split('\n').filter(Boolean);
  const top = all.slice(0, CREATION_FRAMES);
  if (!top.every(isDependencyFrame)) return top;
  const own = all.findIndex((line) => !isDependencyFrame(line));
  if (own < 0) return top;
  return own === CREATION_FRAMES ? [...top, all[own]!] : [...top, '...', all[own]!];
}

// No line of a report may look like a JavaScript stack frame ("at " first, a
// ":line:col" or a "::" after it): test runners take the first such line of
// an error's message for the start of its stack, cut the message there and
// rewrite what follows (Jest 30 cut at a C++ name with "::" and made the
// paths of the JavaScript frames after it relative). So native frames are
// numbered as gdb and eu-stack print them (`#0 symbol+0x1a (module)`), and
// the JavaScript frames of a creation stack lose V8's "at ".
function withoutAt(jsFrame: string): string {
  return jsFrame.replace(/^\s*at\s+/, '');
}

// The note that a leak report's stack was read without a signal: said once
// under the report (see SCANNED_NOTE), not under every thread.
function isUninterruptedNote(stack: NonNullable<ThreadForReport['stack']>): boolean {
  return stack.error === formatUninterruptedStack(stack.threadId);
}

/** Once under a report that shows scanned frames: what `[scanned]` means. */
const SCANNED_NOTE =
  '[scanned]: read without interrupting the thread, from its PC and a scan of its stack (may include stale return addresses)';

/** What a thread's stack error says in a report: the reason alone; what was recovered shows in its frames. */
function stackErrorLine(error: string): string {
  return error.endsWith(RECOVERED_FRAMES) ? error.slice(0, -RECOVERED_FRAMES.length) : error;
}

function formatThreadEntry(thread: ThreadForReport, now: number): string {
  const age = thread.startTime === undefined ? '' : `, age ${formatDuration(Math.max(0, now - thread.startTime))}`;
  const lines = [
    `  - thread ${thread.id} ${JSON.stringify(thread.name)} (${thread.state}${age}; ${describeCreator(thread)})`,
  ];
  if (thread.origin.kind === 'worker') {
    const stack = creationFrames(thread.origin.creationStack);
    lines.push(stack.length ? '      created at:' : '      created at: (no JavaScript stack)');
    for (const line of stack) lines.push(`        ${withoutAt(line)}`);
  }
  const stack = thread.stack;
  if (stack) {
    stack.frames.slice(0, TOP_FRAMES).forEach((frame, i) => lines.push(`        #${i} ${formatFrame(frame)}`));
    if (stack.error && !isUninterruptedNote(stack)) lines.push(`        (stack: ${stackErrorLine(stack.error)})`);
  }
  return lines.join('\n');
}

/** Each thread's entry, then, where any frame shown was scanned, the note that says what that means. */
function formatThreadEntries(head: string, leaks: readonly ThreadForReport[], now: number): string {
  const sorted = [...leaks].sort((a, b) => a.id - b.id);
  const lines = [head, ...sorted.map((t) => formatThreadEntry(t, now))];
  if (sorted.some((t) => t.stack?.frames.slice(0, TOP_FRAMES).some((f) => f.scanned))) lines.push(`  ${SCANNED_NOTE}`);
  return lines.join('\n');
}

/** The message of every thread-leak warning, log line and ThreadLeakError: sorted by id. */
export function formatThreadLeaks(leaks: readonly ThreadForReport[], gracePeriodMs: number, now = wallClockNow()): string {
  const when = gracePeriodMs > 0 ? `${formatDuration(gracePeriodMs)} after it ended` : 'when it ended';
  const head = `${plural(leaks.length, 'thread')} leaked: started in the scope and still alive ${when}`;
  return formatThreadEntries(head, leaks, now);
}

/** Logged by action 'cancel' for the threads it cannot stop. */
export function formatCannotStopThreads(leaks: readonly ThreadForReport[], now = wallClockNow()): string {
  const them = leaks.length === 1 ? 'it' : 'them';
  const head =
    `Cannot force-stop ${plural(leaks.length, 'leaked thread')}: ` +
    `native threads cannot be stopped safely from outside; stop ${them} in the code that started ${them}`;
  return formatThreadEntries(head, leaks, now);
}

// ------------------------------------------------- test runners and the exit

/** Once per process where test files share it (Workers of one process). */
export function formatSharedProcessWarning(runner: string): string {
  return (
    `${runner}: test files share this process (they run in its Worker threads: vitest pool 'threads' or ` +
    `'vmThreads', Jest workerThreads), and OS threads belong to the whole process. Threads that run Node's ` +
    `own code and are not Workers of this file (other files' Workers) are left out, but a native thread ` +
    `started by another file running at the same time can be reported against this one. For exact ` +
    `results run each file in its own process (vitest pool 'forks', Jest's default).`
  );
}

/** Once per process where a test runs concurrently with others. */
export function formatConcurrentTestsNotice(runner: string): string {
  return (
    `${runner}: concurrent tests are not checked one by one (they overlap, so the threads one starts cannot be ` +
    `told from another's); use configure({ scope: 'file' }) to check their file as a whole`
  );
}

/** Under a Jest runner without jest-circus's test events: hooks instead, said once. */
export function formatJestWithoutEvents(runner: string): string {
  return (
    `${runner}: this Jest runner has no test events (jest-circus, Jest's default, has them), so plain ` +
    `beforeEach/afterEach hooks check each test, and a test file's own root afterEach hooks run after the ` +
    `check: a thread such a hook stops is reported`
  );
}

/** A test-runner integration on an OS with no backend yet: said once, and no test is checked. */
export function formatIntegrationUnsupported(runner: string, reason: string): string {
  return `${runner}: no test is checked for thread leaks: ${reason}`;
}

/** The exit report of threadleak/register. */
export function formatExitLeaks(leaks: readonly ThreadForReport[], now = wallClockNow()): string {
  const head = `threadleak: ${plural(leaks.length, 'thread')} leaked: started after threadleak/register loaded and still alive at exit`;
  return formatThreadEntries(head, leaks, now);
}

/** The first line of the hang-at-exit dump (its threads are written natively, see native/exit_watchdog.cc). */
export function formatExitHangHeading(timeoutMs: number, pid: number): string {
  return (
    `threadleak: process ${pid} is still alive ${formatDuration(timeoutMs)} after its 'exit' event: ` +
    `something hangs at exit (a native cleanup hook or destructor that joins or waits). Every thread's native stack:`
  );
}

/** A THREADLEAK_* environment variable with a value threadleak does not know: one line. */
export function formatEnvValueWarning(name: string, value: string, expected: string, used: string): string {
  return `threadleak: ${name}=${JSON.stringify(value)} is not ${expected}; using ${used}`;
}

/** threadleak/register could not do its work: one line, the process goes on. */
export function formatRegisterFailed(what: string, error: unknown): string {
  return `threadleak/register: ${what}: ${describeError(error)}`;
}

// ---------------------------------------------------------- monitorThreads()

/** What a monitor alert's message is made from. */
export interface MonitorAlertData {
  pid: number;
  count: number;
  maxThreads?: number;
  growthSamples: number;
  headroom?: ThreadHeadroom;
  threadpoolDelayMs?: number;
  threadpoolAlertMs?: number;
}

const HEADROOM_SOURCES: Readonly<Record<ThreadHeadroom['source'], string>> = {
  'pids.max': "its cgroup's pids.max",
  RLIMIT_NPROC: "its user's RLIMIT_NPROC",
  'threads-max': "the system's threads-max",
};

/** The line that describes a headroom: `412 of 512 threads left (its cgroup's pids.max)`. */
export function formatHeadroom(headroom: ThreadHeadroom): string {
  return `${headroom.remaining} of ${headroom.limit} threads left (${HEADROOM_SOURCES[headroom.source]})`;
}

/** One alert of monitorThreads(): said once, when its episode starts. */
export function formatMonitorAlert(kind: ThreadAlertKind, data: MonitorAlertData): string {
  const head = `threadleak: process ${data.pid}`;
  switch (kind) {
    case 'max-threads':
      return `${head} has ${plural(data.count, 'thread')}, the maximum set is ${data.maxThreads}`;
    case 'growth':
      return `${head}: the thread count grew in each of the last ${data.growthSamples} samples, to ${data.count}: a pool that only grows, or threads that never end`;
    case 'headroom':
      return `${head} is running out of threads: ${formatHeadroom(data.headroom!)}`;
    case 'threadpool':
      return (
        `${head}: a libuv work item waited ${formatDuration(data.threadpoolDelayMs!)} for a pool thread ` +
        `(alert level ${formatDuration(data.threadpoolAlertMs!)}): the threadpool is saturated; fs, dns.lookup, crypto and zlib calls queue behind it (UV_THREADPOOL_SIZE sets its size)`
      );
  }
}

/** A monitor callback threw: the monitor goes on. */
export function formatMonitorCallbackThrew(callback: string, error: unknown): string {
  return `threadleak: monitorThreads() ${callback} threw; the monitor goes on: ${describeError(error)}`;
}

/** A monitor stopped because a sample could not be taken. */
export function formatMonitorStopped(pid: number, error: Error): string {
  return `threadleak: monitorThreads() stopped: process ${pid} could not be read: ${error.message}`;
}

// ---------------------------------------------------------- tracked resources

/** What a resource-leak message is made from. */
type ResourceForReport = Pick<LeakInfo, 'name' | 'kind' | 'ageMs' | 'collected' | 'stack'>;

/** The part of a LeakReport that its text is made from. */
type ResourceReportData = Pick<LeakReport, 'total' | 'collected' | 'byKind' | 'oldestAgeMs'> & {
  leaks: readonly ResourceForReport[];
};

function formatResourceEntry(leak: ResourceForReport): string {
  const state = leak.collected ? '; collected without release' : '';
  const head = `  - ${JSON.stringify(leak.name)} (${leak.kind}, held ${formatDuration(leak.ageMs)}${state})`;
  if (leak.stack === undefined) return head;
  const frames = leak.stack.split('\n').map(withoutAt).map((line) => line.trim()).filter(Boolean).slice(0, CREATION_FRAMES);
  if (frames.length === 0) return `${head}\n      tracked at: (no JavaScript stack)`;
  return [head, '      tracked at:', ...frames.map((frame) => `        ${frame}`)].join('\n');
}

/**
 * The text of LeakTracker#report() and of the exit-time report: a summary
 * line, the count by kind, then every entry oldest first. `when` ends the
 * summary line ("at process exit").
 */
export function formatResourceReport(report: ResourceReportData, when?: string): string {
  const at = when ? ` ${when}` : '';
  if (report.total === 0) return `Every tracked resource was released${at}`;
  const collected = report.collected > 0 ? ` (${report.collected} collected without release)` : '';
  const kinds = Object.entries(report.byKind).map(([kind, count]) => `${kind} ${count}`);
  return [
    `${plural(report.total, 'resource')} not released${at}${collected}; oldest held ${formatDuration(report.oldestAgeMs)}`,
    `  by kind: ${kinds.join(', ')}`,
    ...report.leaks.map(formatResourceEntry),
  ].join('\n');
}

/** The message of every resource-leak warning, log line and ResourceLeakError: oldest first. */
export function formatResourceLeaks(leaks: readonly ResourceForReport[], gracePeriodMs: number): string {
  const when = gracePeriodMs > 0 ? `${formatDuration(gracePeriodMs)} after it ended` : 'when it ended';
  const head = `${plural(leaks.length, 'resource')} leaked: tracked in the scope and not released ${when}`;
  return [head, ...leaks.map(formatResourceEntry)].join('\n');
}

// ---------------------------------------------------------------- native stacks

/** What the addon said about a stack it could not (fully) capture. */
interface StackErrorData {
  /** A stable code from native/stack.h: 'signal-blocked', 'timeout', ... */
  code: string;
  detail?: string;
  signal?: number;
  timeoutMs: number;
  /** How many frames were still recovered from the kernel's view. */
  recoveredFrames: number;
  platform: string;
}

const RECOVERED_FRAMES = '; frames recovered from what the kernel shows: its PC and a scan of its stack (scanned: true)';

/** The `error` of a NativeStack: why its frames are missing or partial, and what was still recovered. */
export function formatStackError(threadId: number, data: StackErrorData): string {
  const gone = threadGoneText(threadId, data);
  if (gone !== undefined) return gone;
  if (data.platform === 'win32' || data.platform === 'darwin') return formatSuspensionStackError(threadId, data);
  const { code, detail, signal, timeoutMs } = data;
  const probe = signal ? `the stack probe (signal ${signal})` : 'the stack probe';
  let text: string;
  let detailUsed = false;
  switch (code) {
    case 'signal-blocked':
      text = `thread ${threadId} blocks ${probe}, as libraries often do in their worker threads`;
      break;
    case 'stopped':
      text = `thread ${threadId} is stopped and cannot answer ${probe}`;
      break;
    case 'uninterruptible':
      text = `thread ${threadId} is in uninterruptible sleep (state D) and cannot answer ${probe} now`;
      break;
    case 'stack-low':
      text = `thread ${threadId} is too close to the end of its stack for ${probe} to run safely on it`;
      break;
    case 'timeout':
      text = `thread ${threadId} did not answer ${probe} within ${timeoutMs} ms`;
      break;
    case 'not-sent':
      text =
        `thread ${threadId} was not probed: within ${timeoutMs} ms it was never seen asleep in a system call or ` +
        `on a CPU with ${probe} unblocked, and a thread just out of sigwaitinfo() would take the probe as its own`;
      break;
    case 'busy':
      text = `another stack capture held the probe for the whole ${timeoutMs} ms`;
      break;
    case 'no-signal':
      text = `no stack probe: ${detail ?? 'no free real-time signal'}`;
      detailUsed = true;
      break;
    case 'not-probed':
      text = `thread ${threadId} was not probed (timeoutMs is 0)`;
      break;
    case 'os-error':
      text = `the stack probe of thread ${threadId} failed: ${detail ?? 'unknown error'}`;
      detailUsed = true;
      break;
    case 'unsupported':
      text = `native stacks are not yet supported on ${data.platform}`;
      break;
    default:
      text = `the stack of thread ${threadId} could not be captured (${code})`;
  }
  if (detail && !detailUsed) text += `: ${detail}`;
  if (code === 'unsupported') return text;
  return data.recoveredFrames > 0 ? `${text}${RECOVERED_FRAMES}` : `${text}; no frames recovered: the kernel shows no stack pointer while a thread runs`;
}

/** The id names no thread to read (on every platform): nothing else to say. */
function threadGoneText(threadId: number, { code, detail }: StackErrorData): string | undefined {
  let text: string;
  if (code === 'not-found') text = `thread ${threadId} is not a thread of this process`;
  else if (code === 'exited') text = `thread ${threadId} exited before its stack could be read`;
  else return undefined;
  return detail ? `${text}: ${detail}` : text;
}

// Windows reads a stack by suspending the thread (native/win32/stack_win32.cc):
// no signal, no kernel view, no scan. The codes it gives: not-found, exited,
// busy, os-error, unsupported; with an error, the frames are at most the PC.
// Windows and macOS read a stack by suspending the thread for a moment: no probe, no signal.
function formatSuspensionStackError(threadId: number, data: StackErrorData): string {
  const { code, detail } = data;
  let text: string;
  let detailUsed = false;
  switch (code) {
    case 'busy':
      text = `other stack captures kept threads of this process suspended for the whole ${Math.max(data.timeoutMs, 500)} ms (captures suspend one thread at a time)`;
      break;
    case 'os-error':
      text = `reading the stack of thread ${threadId} failed: ${detail ?? 'unknown error'}`;
      detailUsed = true;
      break;
    case 'unsupported':
      text = `native stacks are not yet supported on ${data.platform}`;
      break;
    default:
      text = `the stack of thread ${threadId} could not be captured (${code})`;
  }
  if (detail && !detailUsed) text += `: ${detail}`;
  if (code === 'unsupported') return text;
  return data.recoveredFrames > 0 ? `${text}; only its program counter was recovered` : `${text}; no frames recovered`;
}

/** The `error` of a leak report's stack read without interrupting the thread. */
export function formatUninterruptedStack(threadId: number): string {
  return (
    `thread ${threadId} is blocked in a system call, so it was read without a signal (which could make ` +
    `that call fail with EINTR): frames from its PC and a scan of its stack (scanned: true)`
  );
}

// ------------------------------------------------------ user callbacks that failed

function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return describeValue(error);
}

/** A name or kind filter predicate threw: that is the predicate's error, not a leak. */
export function formatFilterThrew(where: string, option: string, error: unknown): string {
  return `${where}: the ${option} predicate threw, so the scope could not tell what leaked (not a leak report): ${describeError(error)}`;
}

/** The logger given to reportAtExit threw: the report goes to stderr instead. */
export function formatExitLoggerThrew(error: unknown, report: string): string {
  return `threadleak: the reportAtExit logger threw (${describeError(error)}); its report follows:\n${report}\n`;
}

// ------------------------------------------- the threadleak command: ps, top (src/cli.ts, cli-ps.ts, cli-top.ts)
// One line each, no stack: what `threadleak` prints on stderr before it exits with code 2 (or, for
// the end of `top`, 0 or 1).

/** Escapes control characters (a thread name may hold any byte) so a message stays one line and no escape sequence. */
export function escapeControlCharacters(text: string): string {
  return text.replace(/\p{Cc}/gu, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

const quoteArgument = (value: string): string => `'${escapeControlCharacters(value)}'`;

export const twoDigits = (n: number): string => String(n).padStart(2, '0');

/** The local time of day, HH:MM:SS. */
export const clockTime = (d: Date): string => `${twoDigits(d.getHours())}:${twoDigits(d.getMinutes())}:${twoDigits(d.getSeconds())}`;

/** An OS error's message as one line of a command's message. */
const firstLine = (message: string): string => escapeControlCharacters(message.split('\n')[0]!);

/** `threadleak <word>` with a word that is no command. */
export function formatCliUnknownCommand(word: string, commands: readonly string[]): string {
  return `threadleak: unknown command ${quoteArgument(word)}; the commands are ${commands.join(', ')} (threadleak --help)`;
}

/** An option the command does not have. */
export function formatCliUnknownOption(command: string, option: string): string {
  return `${command}: unknown option ${quoteArgument(option)} (${command} --help)`;
}

/** An option that takes a value given none, or a flag given one. */
export function formatCliOptionValueMissing(command: string, option: string): string {
  return `${command}: option ${option} needs a value (${command} --help)`;
}

export function formatCliFlagWithValue(command: string, option: string): string {
  return `${command}: option ${option} takes no value (${command} --help)`;
}

/** An option whose value is not what it must be. */
export function formatCliBadOptionValue(command: string, option: string, value: string, expected: string): string {
  return `${command}: ${option} must be ${expected}, got ${quoteArgument(value)}`;
}

/** The pid argument is not a positive whole number. */
export function formatCliBadPid(command: string, value: string): string {
  return `${command}: the pid must be a positive whole number, got ${quoteArgument(value)}`;
}

/** More arguments than the command takes. */
export function formatCliExtraArgument(command: string, value: string): string {
  return `${command}: unexpected argument ${quoteArgument(value)} (${command} --help)`;
}

/**
 * The threads of the process could not be read (from the OS error's code):
 * no such process, no permission, or anything else the OS said.
 */
export function formatCliCannotRead(command: string, pid: number, error: { code?: unknown; message: string }): string {
  if (error.code === 'ESRCH' || error.code === 'ENOENT') return `${command}: no process with pid ${pid}`;
  if (error.code === 'EPERM' || error.code === 'EACCES') {
    return `${command}: permission denied: cannot read the threads of pid ${pid} (run as its user, or with the privilege to read other users' processes)`;
  }
  return `${command}: cannot read the threads of pid ${pid}: ${firstLine(error.message)}`;
}

/** `top`: the watched process ended, so top did too (exit code 0). */
export function formatTopProcessEnded(pid: number): string {
  return `threadleak top: process ${pid} ended`;
}

/** `top`: a sample could not be taken for another reason (exit code 1). */
export function formatTopStopped(pid: number, error: { code?: unknown; message: string }): string {
  return `threadleak top: stopped: ${formatCliCannotRead('threadleak top', pid, error).replace(/^threadleak top: /, '')}`;
}

// ------------------------------------------------------------- the threadleak command: run (src/cli-run.ts)
// Options are checked with the formatCli* functions above; these are run's own lines.

/** `threadleak run` with no command after the options. */
export function formatRunMissingCommand(): string {
  return 'threadleak run: no command to run: give it after the options, as in `threadleak run -- node app.js` (threadleak run --help)';
}

/** The command could not be started: not found (ENOENT, exit code 127), not executable (126), or another OS error. */
export function formatRunCannotStart(command: string, error: { code?: unknown; message: string }): string {
  const what = `threadleak run: cannot start ${quoteArgument(command)}`;
  if (error.code === 'ENOENT') return `${what}: command not found`;
  if (error.code === 'EACCES') return `${what}: permission denied (not an executable file?)`;
  return `${what}: ${firstLine(error.message)}`;
}

/** run's status file could not be made (exit code 1, nothing started). */
export function formatRunNoStatusFile(error: { message: string }): string {
  return `threadleak run: cannot create its status file in the temporary folder, nothing was started: ${firstLine(error.message)}`;
}

/** A process announced its exit and was still alive long after: run kills it (and the command) and exits 1. */
export function formatRunHungAtExit(pid: number, hungMs: number, command: { pid: number; isTheProcess: boolean } | undefined): string {
  const killing =
    command === undefined ? 'killing it' : command.isTheProcess ? 'killing it (the command)' : `killing it and the command (pid ${command.pid})`;
  return (
    `threadleak run: process ${pid} hung at exit: still alive ${formatDuration(hungMs)} after its 'exit' event ` +
    `(its threads' native stacks are printed above, where the hang-at-exit watchdog could write them); ${killing}`
  );
}

// ------------------------------------------------------------ event-loop blocks

/** Why a look read no JavaScript stack: the stack function could not be found from the main context. */
export const EVENT_LOOP_STACK_UNREACHABLE =
  "threadleak's stack function is not reachable from the main context: threadleak runs in a vm context of its own " +
  '(a test runner sandbox), and node:worker_threads could not be reached from the main context to find it';

/** Why a scope in a Worker reads no JavaScript stack. */
export const EVENT_LOOP_STACK_NOT_MAIN_THREAD =
  'JavaScript stacks are read on the main thread only, and this scope runs in a Worker: its durations and native stacks are reported';

export function formatWatchdogStartFailed(timeoutMs: number): string {
  return `noEventLoopBlocking(): the watchdog thread did not start within ${formatDuration(timeoutMs)}; nothing is watched`;
}

/** A local time of day with ms: blocks are short, their day is today. */
function timeOfDay(ms: number): string {
  const d = new Date(ms);
  return `${clockTime(d)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

// Frames shown per stack, and native frames per sample.
const MAX_JS_FRAMES = 12;
const MAX_NATIVE_FRAMES = 8;
const MAX_GROUPS = 3;

/** The app's frames (without V8's "at ", see withoutAt); Node's own modules and threadleak's files are counted, not shown. */
function jsStackLines(stack: string, ownDir: string, indent: string): string[] {
  const frames = stack.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  // Node's own modules: `node:internal/...`, `node:buffer:295:28`.
  const own = (line: string): boolean => /\bnode:[\w/]+:\d+/.test(line) || line.includes(ownDir);
  const app = frames.filter((l) => !own(l));
  const rest = frames.length - app.length;
  const lines = app.slice(0, MAX_JS_FRAMES).map((l) => `${indent}${withoutAt(l)}`);
  if (app.length > MAX_JS_FRAMES) lines.push(`${indent}... ${plural(app.length - MAX_JS_FRAMES, 'more frame')}`);
  if (rest > 0) lines.push(`${indent}(${plural(rest, 'frame')} in Node's own modules and threadleak not shown: see .stack)`);
  return lines;
}

/**
 * A C++ symbol as a reader names the function: no return type, parameters,
 * qualifiers or clone suffix, and template arguments elided
 * (`void v8::internal::String::WriteToFlat<unsigned char>(…) const` →
 * `v8::internal::String::WriteToFlat<…>`). A C symbol comes back as it is.
 */
export function functionName(symbol: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < symbol.length; i++) {
    const c = symbol[i]!;
    if (out.endsWith('operator') && depth === 0) {
      // operator<<, operator(), operator new: up to the parameter list.
      const end = symbol.indexOf('(', c === '(' ? i + 2 : i);
      return `${out}${symbol.slice(i, end === -1 ? undefined : end)}`;
    }
    if (c === '<') {
      if (depth++ === 0) out += '<…>';
    } else if (c === '>') {
      depth = Math.max(0, depth - 1);
    } else if (depth > 0) {
      continue;
    } else if (c === '(') {
      const anonymous = '(anonymous namespace)';
      if (!symbol.startsWith(anonymous, i)) break;
      out += anonymous;
      i += anonymous.length - 1;
    } else if (c === ' ') {
      // A return type ends here.
      out = '';
    } else {
      out += c;
    }
  }
  return out === '' ? symbol : out;
}

function sampleLines(sample: EventLoopBlockSample, ownDir: string, indent: string): string[] {
  const lines: string[] = [];
  const frames = nativeStackTells(sample) ? (sample.nativeStack?.frames ?? []) : [];
  const named = frames.flatMap((frame, i) => (frame.symbol === undefined ? [] : [{ frame, i }])).slice(0, MAX_NATIVE_FRAMES);
  if (named.length > 0) {
    lines.push(`${indent}in native code:`);
    for (const { frame, i } of named) lines.push(`${indent}  #${i} ${formatFrame({ ...frame, symbol: functionName(frame.symbol!), offset: undefined })}`);
  }
  if (sample.stack === '') {
    lines.push(`${indent}JavaScript stack not seen${sample.stackError ? `: ${sample.stackError}` : ''}`);
    return lines;
  }
  if (sample.stackDelayMs !== undefined) {
    lines.push(
      `${indent}JavaScript read ${formatDuration(sample.stackDelayMs)} late, when the thread next ran it (after the native call returned; ` +
        'the first frame is where it went on, the others its callers then):',
    );
  }
  lines.push(...jsStackLines(sample.stack, ownDir, indent));
  return lines;
}

/**
 * The message of an event-loop blocking scope: each block's duration and
 * start, then what was seen running during it, the most seen first (the
 * app's frames first in each stack).
 */
export function formatEventLoopBlocks(
  blocks: readonly EventLoopBlock[],
  thresholdMs: number,
  ownDir: string,
  jsStacksUnavailable: string | undefined,
): string {
  const head = `the event loop was blocked ${blocks.length === 1 ? 'once' : `${blocks.length} times`} for longer than ${formatDuration(thresholdMs)}`;
  const out = [`${head}:`];
  for (const block of blocks) {
    const total = block.samples.reduce((n, s) => n + s.count, 0);
    const looked = total > 1 ? `; ${total} looks at it during the block` : '';
    out.push(`  - blocked ${formatDuration(block.durationMs)}, from ${timeOfDay(block.startedAt)}${looked}:`);
    if (total === 0) {
      out.push(`      no stack was seen during it${jsStacksUnavailable ? ` (${jsStacksUnavailable})` : ': it ended before the watchdog looked'}`);
      continue;
    }
    // Looks that saw nothing readable are counted, not listed.
    const groups = groupSamples(block.samples);
    const shown = groups.filter(({ first }) => first.stack !== '' || first.nativeStack?.frames.some((f) => f.symbol !== undefined));
    for (const { first, looks } of shown.slice(0, MAX_GROUPS)) {
      const into = formatDuration(Math.max(0, first.at - block.startedAt));
      if (total > 1) out.push(`      ${looks === total ? 'every look' : `${looks} of ${total} looks`}, from ${into} into the block:`);
      out.push(...sampleLines(first, ownDir, '        '));
    }
    if (shown.length > MAX_GROUPS) {
      const rest = shown.slice(MAX_GROUPS).reduce((n, g) => n + g.looks, 0);
      out.push(`      ... ${plural(shown.length - MAX_GROUPS, 'more distinct stack')} (${plural(rest, 'look')}) in .blocks[].samples`);
    }
    const blind = total - shown.reduce((n, g) => n + g.looks, 0);
    if (blind > 0) {
      const why = block.samples.find((s) => s.stack === '')?.stackError ?? block.samples[0]?.nativeStack?.error ?? jsStacksUnavailable;
      out.push(`      ${shown.length === 0 ? 'no stack could be read during it' : `${plural(blind, 'look')} read no stack`}${why ? `: ${why}` : ''}`);
    }
  }
  return out.join('\n');
}
