// `threadleak top [pid] [--interval ms]`: a process's threads watched live
// with monitorThreads(). On a terminal: a full-screen view (alternate screen,
// cursor hidden, redrawn in place at each sample and on resize) sorted by CPU,
// the threads started since the previous sample highlighted and the exited
// ones shown once, a sparkline of the thread count and the headroom line; `q`
// or Ctrl-C (or SIGINT/SIGTERM/SIGHUP) restores the terminal and exits 0.
// TERM=dumb: no escape sequences, each screen printed after the previous one.
// Not a terminal: one ThreadSample as JSON per line, nothing else on stdout.
// When the watched process ends: one line on stderr and exit code 0 (1 when a
// sample failed for another reason, such as a permission lost).
import {
  COLUMN_GAP,
  columnWidths,
  displayName,
  displayWidth,
  formatCpuTime,
  layoutTable,
  THREAD_COLUMNS,
  truncateToWidth,
} from './cli-ps.js';
import { monitorThreads } from './monitor.js';
import { formatHeadroom, formatTopProcessEnded, formatTopStopped } from './report.js';
import type { ThreadInfo, ThreadMonitor, ThreadSample } from './types.js';

export const TOP_USAGE = `threadleak top [pid] [--interval ms]
  Live per-thread CPU of process <pid> (default: this command's own), sorted by %CPU,
  threads started since the last sample highlighted (+), exited ones shown once (-),
  a sparkline of the thread count and the thread headroom. q or Ctrl-C quits.
  --interval ms  time between samples (default 1000, from 10 to 3600000)
  Not a terminal: one JSON sample per line. Exit code 0 when the process ends.
  NO_COLOR, FORCE_COLOR and TERM=dumb are respected.`;

// ------------------------------------------------------------- the screen

/** What one screen is drawn from. */
export interface TopState {
  pid: number;
  intervalMs: number;
  /** The newest sample; undefined until the first one arrives. */
  sample?: ThreadSample;
  /** The thread count of each sample so far, oldest first. */
  history: number[];
}

export interface TopScreenOptions {
  columns: number;
  rows: number;
  /** SGR colors and styles; off: a +/- marker column instead. */
  color: boolean;
}

/** How many counts a TopState keeps: more than any terminal is wide. */
export const HISTORY_KEPT = 1000;

const SPARKS = '▁▂▃▄▅▆▇█';
const SGR = { bold: '\x1b[1m', started: '\x1b[1;32m', exited: '\x1b[2;9m', reset: '\x1b[0m' };

/** The last counts of `history` that fit in `width` columns, as bars scaled from their min to their max. */
export function sparkline(history: readonly number[], width: number): string {
  if (width <= 0) return '';
  const shown = history.slice(-width);
  const min = Math.min(...shown);
  const max = Math.max(...shown);
  const top = SPARKS.length - 1;
  return shown.map((count) => SPARKS[max === min ? 0 : Math.round(((count - min) / (max - min)) * top)]).join('');
}

type RowKind = 'started' | 'exited' | 'alive' | 'more';
interface TableRow {
  kind: RowKind;
  /** TID, NAME, STATE, %CPU, TIME; for 'more', the one line that says how many rows are not shown. */
  cells: string[];
}

const NAME_COLUMN = 1;
const STATE_COLUMN = 2;
const TIME_COLUMN = 4;
const MIN_NAME_WIDTH = 6;

function headerLines(state: TopState, columns: number): string[] {
  const { sample } = state;
  const title = `threadleak top · pid ${state.pid} · every ${state.intervalMs} ms · q quits`;
  if (sample === undefined) return [title, 'waiting for the first sample…', ''];
  const counts = `threads: ${sample.count} (+${sample.started.length} -${sample.exited.length}) `;
  const headroom = sample.headroom === undefined ? 'headroom: n/a' : `headroom: ${formatHeadroom(sample.headroom)}`;
  const delay = sample.threadpoolDelayMs === undefined ? '' : ` · threadpool delay: ${sample.threadpoolDelayMs} ms`;
  return [title, counts + sparkline(state.history, columns - displayWidth(counts)), headroom + delay, ''];
}

/** The rows of the table: alive threads by %CPU (then id), then the exited ones. */
function tableRows(sample: ThreadSample): TableRow[] {
  const started = new Set(sample.started.map((t) => t.key));
  const alive = [...sample.threads].sort((a, b) => b.cpuPercent - a.cpuPercent || a.id - b.id);
  const row = (kind: RowKind, t: ThreadInfo, state: string, cpu: string): TableRow => ({
    kind,
    cells: [String(t.id), displayName(t.name), state, cpu, formatCpuTime(t.userCpuMs + t.systemCpuMs)],
  });
  return [
    ...alive.map((t) => row(started.has(t.key) ? 'started' : 'alive', t, t.state, t.cpuPercent.toFixed(1))),
    ...[...sample.exited].sort((a, b) => a.id - b.id).map((t) => row('exited', t, 'exited', '-')),
  ];
}

/**
 * The table fitted to `height` lines (header included) and `columns`: the
 * name column takes what the others leave (TIME, then STATE are dropped on a
 * narrow terminal); when rows must be cut, up to half the room goes to the
 * exited threads, and a last line says how many are not shown.
 */
function tableLines(sample: ThreadSample, columns: number, height: number, color: boolean): string[] {
  if (height < 2) return [];
  let rows = tableRows(sample);
  const room = height - 1;
  if (rows.length > room) {
    const exited = rows.filter((r) => r.kind === 'exited');
    const alive = rows.filter((r) => r.kind !== 'exited');
    const exitedShown = Math.min(exited.length, Math.floor((room - 1) / 2));
    const aliveShown = Math.min(alive.length, room - 1 - exitedShown);
    const hidden = rows.length - aliveShown - exitedShown;
    rows = [...alive.slice(0, aliveShown), ...exited.slice(0, exitedShown)];
    rows.push({ kind: 'more', cells: [`… ${hidden} more`] });
  }
  const cells = rows.filter((r) => r.kind !== 'more').map((r) => r.cells);
  const marker = color ? 0 : 2; // '+ ' / '- ' / '  '
  // The room the name column gets when these columns are kept.
  const nameRoom = (kept: readonly number[]) => {
    const widths = columnWidths(kept.map((i) => THREAD_COLUMNS[i]!), cells.map((row) => kept.map((i) => row[i]!)));
    const others = widths.reduce((sum, width, j) => (kept[j] === NAME_COLUMN ? sum : sum + width), 0);
    return columns - marker - others - COLUMN_GAP.length * (kept.length - 1);
  };
  let kept = THREAD_COLUMNS.map((_, i) => i);
  for (const drop of [TIME_COLUMN, STATE_COLUMN]) {
    if (nameRoom(kept) >= MIN_NAME_WIDTH) break;
    kept = kept.filter((i) => i !== drop);
  }
  const nameWidth = Math.max(4, nameRoom(kept));
  const laid = layoutTable(
    kept.map((i) => THREAD_COLUMNS[i]!),
    rows.map((r) => (r.kind === 'more' ? [] : kept.map((i) => (i === NAME_COLUMN ? truncateToWidth(r.cells[i]!, nameWidth) : r.cells[i]!)))),
  );
  const MARKERS: Record<RowKind, string> = { started: '+', exited: '-', alive: ' ', more: ' ' };
  return laid.map((line, j) => {
    const kind = j === 0 ? 'header' : rows[j - 1]!.kind;
    const text = kind === 'more' ? rows[j - 1]!.cells[0]! : line;
    const fitted = truncateToWidth(color ? text : `${kind === 'header' ? ' ' : MARKERS[kind]} ${text}`, columns);
    if (!color) return fitted.trimEnd();
    if (kind === 'header') return `${SGR.bold}${fitted}${SGR.reset}`;
    if (kind === 'started' || kind === 'exited') return `${SGR[kind]}${fitted}${SGR.reset}`;
    return fitted;
  });
}

/**
 * One screen of `top` as text lines joined by '\n': at most `rows` lines of
 * at most `columns` columns each, with SGR styles only when `color` is on.
 */
export function renderTopScreen(state: TopState, options: TopScreenOptions): string {
  const columns = Math.max(1, options.columns);
  const rows = Math.max(1, options.rows);
  const header = headerLines(state, columns).map((line) => truncateToWidth(line, columns));
  const styled = header.map((line, i) => (options.color && i === 0 ? `${SGR.bold}${line}${SGR.reset}` : line));
  const lines = [...styled, ...(state.sample === undefined ? [] : tableLines(state.sample, columns, rows - header.length, options.color))];
  return lines.slice(0, rows).join('\n');
}

/**
 * Whether to color: never on a dumb terminal unless FORCE_COLOR asks for it
 * (Emacs' shell sets TERM=dumb and shows colors); NO_COLOR (non-empty) turns
 * colors off, and wins over FORCE_COLOR; FORCE_COLOR turns them on unless it is
 * '0' or 'false'; otherwise on (top draws on a terminal).
 */
export function colorsEnabled(env: NodeJS.ProcessEnv): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  const force = env.FORCE_COLOR;
  if (force !== undefined) return force !== '0' && force.toLowerCase() !== 'false';
  return env.TERM !== 'dumb';
}

// --------------------------------------------------------------- running it

export interface TopOptions {
  pid?: number;
  intervalMs: number;
}

const ALT_SCREEN_ON = '\x1b[?1049h';
const ALT_SCREEN_OFF = '\x1b[?1049l';
const CURSOR_HIDE = '\x1b[?25l';
const CURSOR_SHOW = '\x1b[?25h';
const QUIT_KEYS = new Set(['q', 'Q', '\x03' /* Ctrl-C */, '\x04' /* Ctrl-D */]);
const LEAVE_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function isProcessGone(error: Error): boolean {
  const code = (error as Error & { code?: unknown }).code;
  return code === 'ESRCH' || code === 'ENOENT';
}

/** The end of a watch whose sample failed: one line on stderr, and the exit code. */
function endedBy(pid: number, error: Error): number {
  const gone = isProcessGone(error);
  process.stderr.write(`${gone ? formatTopProcessEnded(pid) : formatTopStopped(pid, error)}\n`);
  return gone ? 0 : 1;
}

/**
 * Runs `top` until the user quits or the process ends; resolves to the exit
 * code. A pid that cannot be read throws the OS error before the terminal is
 * touched (cli.ts says it in one line).
 */
export function topCommand(options: TopOptions): Promise<number> {
  return process.stdout.isTTY ? watchOnScreen(options) : watchAsJsonLines(options);
}

/** Not a terminal: one ThreadSample as JSON per line. */
function watchAsJsonLines({ pid, intervalMs }: TopOptions): Promise<number> {
  return new Promise((resolve) => {
    let finish: (code: number) => void = () => {};
    const monitor = monitorThreads({
      intervalMs,
      ...(pid === undefined ? {} : { pid }),
      onSample: (sample) => process.stdout.write(`${JSON.stringify(sample)}\n`),
      onError: (error) => finish(endedBy(pid ?? process.pid, error)),
    });
    const keepAlive = setInterval(() => {}, 1 << 30); // the monitor's timer is unref'd
    const onStdoutError = (error: Error & { code?: string }) => finish(error.code === 'EPIPE' ? 0 : 1);
    finish = (code) => {
      monitor.stop();
      clearInterval(keepAlive);
      process.stdout.off('error', onStdoutError);
      resolve(code);
    };
    process.stdout.on('error', onStdoutError);
  });
}

/** A terminal: the full-screen view (or, with TERM=dumb, screens one after another). */
function watchOnScreen({ pid, intervalMs }: TopOptions): Promise<number> {
  const { stdout, stdin } = process;
  const dumb = process.env.TERM === 'dumb';
  const color = colorsEnabled(process.env);
  const state: TopState = { pid: pid ?? process.pid, intervalMs, history: [] };
  return new Promise((resolve) => {
    let monitor: ThreadMonitor | undefined;
    let active = true;
    const draw = () => {
      if (!active) return;
      const screen = renderTopScreen(state, { columns: stdout.columns || 80, rows: stdout.rows || 24, color });
      if (dumb) {
        stdout.write(`${screen}\n\n`);
        return;
      }
      const lines = screen.split('\n');
      // Each line cleared whole before it is written (EL after a full-width line would erase its last column).
      let out = `\x1b[H${lines.map((line) => `\x1b[2K${line}`).join('\r\n')}`;
      if (lines.length < (stdout.rows || 24)) out += '\r\n\x1b[J';
      stdout.write(out);
    };
    const restore = () => {
      if (!dumb) stdout.write(`${CURSOR_SHOW}${ALT_SCREEN_OFF}`);
      if (stdin.isTTY) stdin.setRawMode(false);
    };
    const onExit = () => {
      if (active) restore();
    };
    const onKey = (data: Buffer | string) => {
      for (const char of data.toString()) if (QUIT_KEYS.has(char)) return leave(0);
    };
    const onSignal = () => leave(0);
    const keepAlive = setInterval(() => {}, 1 << 30); // the monitor's timer is unref'd
    // `code` may be a function: called once the terminal is restored, so what it prints stays on the main screen.
    const leave = (code: number | (() => number)) => {
      if (!active) return;
      monitor?.stop();
      clearInterval(keepAlive);
      restore();
      active = false;
      stdin.off('data', onKey);
      stdin.pause();
      stdout.off('resize', draw);
      process.off('exit', onExit);
      for (const signal of LEAVE_SIGNALS) process.off(signal, onSignal);
      resolve(typeof code === 'function' ? code() : code);
    };
    try {
      monitor = monitorThreads({
        intervalMs,
        ...(pid === undefined ? {} : { pid }),
        onSample: (sample) => {
          state.sample = sample;
          state.history.push(sample.count);
          if (state.history.length > HISTORY_KEPT) state.history.shift();
          draw();
        },
        onError: (error) => leave(() => endedBy(state.pid, error)),
      });
    } catch (error) {
      clearInterval(keepAlive);
      throw error; // before anything was written: cli.ts says it in one line
    }
    process.on('exit', onExit); // the terminal is restored even if something throws
    for (const signal of LEAVE_SIGNALS) process.on(signal, onSignal);
    if (!dumb) stdout.write(`${ALT_SCREEN_ON}${CURSOR_HIDE}`);
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.resume();
    if (!dumb) stdout.on('resize', draw);
    draw();
  });
}
