// `threadleak ps [pid] [--json]`: the threads of a process as a table like
// `ps -T` (TID, NAME, STATE, %CPU, TIME, START), or the threads() array as
// JSON. Also the text helpers `top` shares: display width, truncation,
// table layout, CPU time and start time.
import { clockTime, escapeControlCharacters, twoDigits as two } from './report.js';
import { threads } from './snapshot.js';
import type { ThreadInfo } from './types.js';

export const PS_USAGE = `threadleak ps [pid] [--json]
  The threads of process <pid> (default: this command's own) as a table:
  TID, NAME, STATE, %CPU (CPU time over the thread's lifetime, as ps shows it),
  TIME (CPU time, [DD-]HH:MM:SS) and START (HH:MM:SS today, else the date).
  --json  print the threads({ pid }) array as JSON instead`;

// ------------------------------------------------------------- text helpers

/** Columns a code point takes in a terminal: 0 (combining, zero-width), 2 (East Asian wide), else 1. */
function codePointWidth(text: string): number {
  const cp = text.codePointAt(0)!;
  if (/\p{Mn}|\p{Me}|\u200b|\u200c|\u200d|\ufeff/u.test(text)) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}

/** How many terminal columns `text` takes (no escape sequences in it). */
export function displayWidth(text: string): number {
  let width = 0;
  for (const char of text) width += codePointWidth(char);
  return width;
}

/** `text` cut to at most `width` columns, ending in '…' when it was cut. */
export function truncateToWidth(text: string, width: number): string {
  if (displayWidth(text) <= width) return text;
  if (width <= 0) return '';
  let out = '';
  let used = 0;
  for (const char of text) {
    const w = codePointWidth(char);
    if (used + w > width - 1) break;
    out += char;
    used += w;
  }
  return `${out}…`;
}

function pad(text: string, width: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, width - displayWidth(text)));
  return align === 'left' ? text + fill : fill + text;
}

export interface TableColumn {
  title: string;
  align: 'left' | 'right';
}

export const COLUMN_GAP = '  ';

/** Each column's width: its widest cell or title. */
export function columnWidths(columns: readonly TableColumn[], rows: readonly (readonly string[])[]): number[] {
  return columns.map((column, i) => Math.max(displayWidth(column.title), ...rows.map((row) => displayWidth(row[i] ?? ''))));
}

/** The header line and one line per row, columns fitted to their content, no trailing spaces. */
export function layoutTable(columns: readonly TableColumn[], rows: readonly (readonly string[])[]): string[] {
  const widths = columnWidths(columns, rows);
  const line = (cells: readonly string[]) =>
    columns
      .map((column, i) => pad(cells[i] ?? '', widths[i]!, column.align))
      .join(COLUMN_GAP)
      .trimEnd();
  return [line(columns.map((c) => c.title)), ...rows.map(line)];
}

/** A thread's name as a table shows it: '-' for none, control characters escaped. */
export function displayName(name: string): string {
  return name === '' ? '-' : escapeControlCharacters(name);
}

/** Cumulative CPU time as ps prints it: [DD-]HH:MM:SS. */
export function formatCpuTime(cpuMs: number): string {
  const total = Math.floor(Math.max(0, cpuMs) / 1000);
  const days = Math.floor(total / 86_400);
  const clock = `${two(Math.floor((total % 86_400) / 3600))}:${two(Math.floor((total % 3600) / 60))}:${two(total % 60)}`;
  return days > 0 ? `${two(days)}-${clock}` : clock;
}

/** A start time: HH:MM:SS when it is today (local time), else YYYY-MM-DD; '-' when the OS does not tell. */
export function formatStartTime(startTime: number | undefined, now: number): string {
  if (startTime === undefined) return '-';
  const start = new Date(startTime);
  const today = new Date(now);
  if (start.toDateString() === today.toDateString()) {
    return clockTime(start);
  }
  return `${start.getFullYear()}-${two(start.getMonth() + 1)}-${two(start.getDate())}`;
}

/** %CPU as ps computes it: the thread's CPU time over its lifetime; '-' without a start time. */
export function formatLifetimeCpu(thread: ThreadInfo, now: number): string {
  if (thread.startTime === undefined) return '-';
  const lifetime = now - thread.startTime;
  const cpu = thread.userCpuMs + thread.systemCpuMs;
  return (lifetime > 0 ? (cpu / lifetime) * 100 : 0).toFixed(1);
}

// ------------------------------------------------------------------- ps

/** The columns ps and top share: TID, NAME, STATE, %CPU, TIME. */
export const THREAD_COLUMNS: readonly TableColumn[] = [
  { title: 'TID', align: 'right' },
  { title: 'NAME', align: 'left' },
  { title: 'STATE', align: 'left' },
  { title: '%CPU', align: 'right' },
  { title: 'TIME', align: 'right' },
];

const PS_COLUMNS: readonly TableColumn[] = [...THREAD_COLUMNS, { title: 'START', align: 'right' }];

/** The ps table of `list`, one row per thread in id order, as lines. */
export function renderPsTable(list: readonly ThreadInfo[], now = Date.now()): string[] {
  const rows = [...list]
    .sort((a, b) => a.id - b.id)
    .map((t) => [
      String(t.id),
      displayName(t.name),
      t.state,
      formatLifetimeCpu(t, now),
      formatCpuTime(t.userCpuMs + t.systemCpuMs),
      formatStartTime(t.startTime, now),
    ]);
  return layoutTable(PS_COLUMNS, rows);
}

/**
 * Runs `ps`: prints the table (or JSON) on stdout and returns the exit code.
 * A pid that cannot be read throws the OS error (cli.ts says it in one line).
 */
export function psCommand(options: { pid?: number; json: boolean }): number {
  const list = options.pid === undefined ? threads() : threads({ pid: options.pid });
  const text = options.json ? JSON.stringify(list, null, 2) : renderPsTable(list).join('\n');
  process.stdout.write(`${text}\n`);
  return 0;
}
