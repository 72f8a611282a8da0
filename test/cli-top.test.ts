// `threadleak top`: its screen as a pure function (renderTopScreen: sorting,
// started threads highlighted, exited ones shown once, the +/- markers without
// colors, fitting to the terminal, the sparkline, the color switches), and the
// real thing in a pseudo-terminal: tmux (a private server per test) runs
// `node dist/cli.js top <pid>` (after `npm run compile`), the screen must
// show the child's threads on the alternate screen with the cursor hidden, and
// `q` or Ctrl-C must give the shell its screen and cursor back.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { colorsEnabled, renderTopScreen, sparkline, type TopState } from '../src/cli-top.js';
import type { SampledThread, ThreadInfo, ThreadSample } from '../src/index.js';
import { spawnerPath, THREAD_KIND } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const ESC = '\x1b';
const stripStyles = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, '');

function thread(id: number, name: string, cpuPercent = 0, cpuMs = 0): SampledThread {
  return { id, key: `${id}@1`, name, state: 'sleeping', rawState: 'S', startTime: 1_700_000_000_000, userCpuMs: cpuMs, systemCpuMs: 0, cpuPercent };
}

function sample(threads: SampledThread[], changes: { started?: ThreadInfo[]; exited?: ThreadInfo[] } = {}, extra: Partial<ThreadSample> = {}): ThreadSample {
  return { at: 0, intervalMs: 1000, count: threads.length, started: changes.started ?? [], exited: changes.exited ?? [], threads, ...extra };
}

function state(s: ThreadSample | undefined, history: number[] = s ? [s.count] : []): TopState {
  return { pid: 4242, intervalMs: 1000, sample: s, history };
}

/** The table rows of a screen (after the header and the blank line), styles kept. */
const tableOf = (screen: string) => screen.split('\n').slice(screen.split('\n').findIndex((l) => /TID/.test(l)));

describe('renderTopScreen', () => {
  const base = [thread(10, 'node', 0.5), thread(11, 'worker-a', 40), thread(12, 'worker-a', 40), thread(13, 'libuv', 0)];

  it('sorts the threads by %CPU, then id, under a header with the pid, the count and the headroom', () => {
    const screen = renderTopScreen(state(sample(base)), { columns: 100, rows: 30, color: false });
    const lines = screen.split('\n');
    expect(lines[0]).toContain('pid 4242');
    expect(lines[1]).toMatch(/^threads: 4 \(\+0 -0\) /);
    expect(lines[2]).toBe('headroom: n/a');
    const table = tableOf(screen);
    expect(table[0]).toMatch(/^\s+TID\s+NAME\s+STATE\s+%CPU\s+TIME$/);
    expect(table.slice(1).map((l) => Number(l.trim().split(/\s+/)[0]))).toEqual([11, 12, 10, 13]);
    expect(screen).not.toContain(ESC);
  });

  it('says the headroom and the threadpool delay when the sample has them', () => {
    const s = sample(base, {}, { headroom: { remaining: 400, limit: 512, source: 'pids.max' }, threadpoolDelayMs: 0.4 });
    const lines = renderTopScreen(state(s), { columns: 120, rows: 30, color: false }).split('\n');
    expect(lines[2]).toBe("headroom: 400 of 512 threads left (its cgroup's pids.max) · threadpool delay: 0.4 ms");
  });

  it('highlights the threads started since the previous sample, and shows exited ones once', () => {
    const started = thread(20, 'worker-b', 1);
    const gone = thread(11, 'worker-a');
    const withChanges = sample([...base.filter((t) => t.id !== 11), started], { started: [started], exited: [gone] });
    const plain = tableOf(renderTopScreen(state(withChanges), { columns: 80, rows: 30, color: false }));
    expect(plain.find((l) => /worker-b/.test(l))).toMatch(/^\+ +20 +worker-b +sleeping +1\.0 /);
    expect(plain.at(-1)).toMatch(/^- +11 +worker-a +exited +- +00:00:00$/);
    expect(plain.filter((l) => /^[+-] /.test(l))).toHaveLength(2);
    const colored = tableOf(renderTopScreen(state(withChanges), { columns: 80, rows: 30, color: true }));
    expect(colored.find((l) => l.includes('worker-b'))).toMatch(/^\x1b\[1;32m.*\x1b\[0m$/);
    expect(colored.find((l) => l.includes('exited'))).toMatch(/^\x1b\[2;9m.*\x1b\[0m$/);
    expect(colored.filter((l) => /^[+-] /.test(l))).toEqual([]); // colors on: no markers
    // The next sample: nothing started or exited, so nothing is marked and the exited thread is gone.
    const next = tableOf(renderTopScreen(state(sample(withChanges.threads)), { columns: 80, rows: 30, color: false }));
    expect(next.filter((l) => /^[+-] /.test(l))).toEqual([]);
    expect(next.join('\n')).not.toContain('exited');
  });

  it('fits every line in the columns and the screen in the rows, the name cut first', () => {
    const many = Array.from({ length: 60 }, (_, i) => thread(1000 + i, `a-very-long-thread-name-${i}`, i % 7, i * 1000));
    const gone = [thread(5, 'gone-1'), thread(6, 'gone-2')];
    for (const columns of [12, 24, 40, 80, 200]) {
      for (const rows of [3, 8, 24]) {
        const screen = renderTopScreen(state(sample(many, { exited: gone }), [50, 55, 60]), { columns, rows, color: true });
        const lines = screen.split('\n');
        expect(lines.length).toBeLessThanOrEqual(rows);
        for (const line of lines) expect({ columns, line, width: stripStyles(line).length <= columns }).toEqual({ columns, line, width: true });
      }
    }
    const narrow = tableOf(renderTopScreen(state(sample(many, { exited: gone })), { columns: 36, rows: 12, color: false }));
    expect(narrow[0]).not.toContain('TIME'); // dropped so the name keeps some room
    expect(narrow.some((l) => l.includes('…'))).toBe(true); // names cut
    expect(narrow.at(-1)).toMatch(/^ +… \d+ more$/);
    expect(narrow.filter((l) => l.startsWith('- '))).toHaveLength(2); // the exited threads keep their rows
  });

  it('draws the thread count as a sparkline fitted to the width', () => {
    expect(sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8)).toBe('▁▂▃▄▅▆▇█');
    expect(sparkline([8, 1, 2, 3, 4, 5, 6, 7, 8], 8)).toBe('▁▂▃▄▅▆▇█'); // the last 8 only
    expect(sparkline([5, 5, 5], 10)).toBe('▁▁▁');
    expect(sparkline([1, 2], 0)).toBe('');
    const history = Array.from({ length: 500 }, (_, i) => 10 + (i % 9));
    const line = renderTopScreen(state(sample(base), history), { columns: 80, rows: 30, color: false }).split('\n')[1]!;
    expect(line.length).toBe(80);
    expect(line).toMatch(/^threads: 4 \(\+0 -0\) [▁▂▃▄▅▆▇█]+$/);
  });

  it('escapes control characters in thread names, so a name cannot write to the terminal', () => {
    const screen = renderTopScreen(state(sample([thread(7, 'evil\x1b[2Jname')])), { columns: 80, rows: 10, color: false });
    expect(screen).not.toContain(ESC);
    expect(screen).toContain('evil\\x1b[2Jname');
  });

  it('shows a waiting line before the first sample', () => {
    expect(renderTopScreen(state(undefined), { columns: 80, rows: 10, color: false })).toContain('waiting for the first sample');
  });
});

describe('colorsEnabled', () => {
  it('follows NO_COLOR, FORCE_COLOR and TERM=dumb', () => {
    expect(colorsEnabled({ TERM: 'xterm-256color' })).toBe(true);
    expect(colorsEnabled({ TERM: 'xterm', NO_COLOR: '1' })).toBe(false);
    expect(colorsEnabled({ TERM: 'xterm', NO_COLOR: '' })).toBe(true); // set but empty: ignored (no-color.org)
    expect(colorsEnabled({ TERM: 'xterm', FORCE_COLOR: '0' })).toBe(false);
    expect(colorsEnabled({ TERM: 'xterm', FORCE_COLOR: 'false' })).toBe(false);
    expect(colorsEnabled({ TERM: 'dumb' })).toBe(false);
    expect(colorsEnabled({ TERM: 'dumb', FORCE_COLOR: '1' })).toBe(true); // Emacs' shell: TERM=dumb, colors shown
    expect(colorsEnabled({ TERM: 'xterm', FORCE_COLOR: '1', NO_COLOR: '1' })).toBe(false); // NO_COLOR wins
  });
});

// tmux does not exist on Windows (nor under wine, where these tests also run): Windows has no pty to drive this way.
describe.skipIf(process.platform === 'win32')('top in a terminal (tmux)', () => {
  const WAIT_MS = 30_000;
  // This test's own Node (the Node-version matrix runs several), quoted for the pane's shell.
  const TOP_COMMAND = `'${process.execPath}' '${root}dist/cli.js' top`;
  let socket: string | undefined;
  const children: ChildProcessWithoutNullStreams[] = [];

  let socketPath: string | undefined;

  afterEach(() => {
    if (socket !== undefined) spawnSync('tmux', ['-L', socket, 'kill-server'], { timeout: 10_000 });
    if (socketPath) rmSync(socketPath, { force: true }); // tmux leaves its socket file behind
    socket = socketPath = undefined;
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  function tmux(...args: string[]): string {
    const result = spawnSync('tmux', ['-L', socket!, ...args], { encoding: 'utf8', timeout: 10_000 });
    expect({ args, error: result.error?.message, status: result.status, stderr: result.stderr }).toEqual({ args, error: undefined, status: 0, stderr: '' });
    return result.stdout;
  }

  /** Polls `check` on the pane (bounded); fails with the last screen when it never holds. */
  async function waitForPane(what: string, check: (screen: string) => boolean): Promise<string> {
    const deadline = Date.now() + WAIT_MS;
    let screen = '';
    while (Date.now() < deadline) {
      screen = tmux('capture-pane', '-p', '-e');
      if (check(screen)) return screen;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`the pane never showed ${what}; its last screen:\n${screen}`);
  }

  const paneFlags = () => tmux('display', '-p', '#{alternate_on} #{cursor_flag} #{pane_current_command}').trim();

  /** A child with two fixture threads named worker-a, and a tmux server with a shell (sh) in a 120x40 pane. */
  async function setUp(env: Record<string, string>): Promise<number> {
    const version = spawnSync('tmux', ['-V'], { encoding: 'utf8', timeout: 10_000 });
    if (version.status !== 0) {
      throw new Error('tmux is needed to test `threadleak top` in a terminal: install it (Debian: apt-get install tmux; .ci/run does)');
    }
    const child = spawn(process.execPath, ['-e', `
      require(${JSON.stringify(spawnerPath)}).start({ count: 2, name: 'worker-a', kind: ${JSON.stringify(THREAD_KIND)} });
      console.log(process.pid);
      process.stdin.resume().on('end', () => process.exit(0));
    `]);
    children.push(child);
    const pid = Number((await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next()).value);
    socket = `threadleak-test-${process.pid}-${Date.now()}`;
    const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(NO_COLOR|FORCE_COLOR|TMUX.*)$/.test(name)));
    const started = spawnSync('tmux', ['-L', socket, '-f', '/dev/null', 'new-session', '-d', '-x', '120', '-y', '40', 'sh'], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...clean, ...env },
      cwd: root,
    });
    expect({ status: started.status, stderr: started.stderr }).toEqual({ status: 0, stderr: '' });
    socketPath = tmux('display', '-p', '#{socket_path}').trim();
    await waitForPane('the shell prompt', (screen) => screen.trim() !== '');
    tmux('send-keys', '-l', `${TOP_COMMAND} ${pid} --interval 200; echo "top exited $?"`);
    tmux('send-keys', 'Enter');
    const screen = await waitForPane("top's screen with the child's threads", (s) =>
      s.includes(`threadleak top · pid ${pid}`) && /TID\s+NAME\s+STATE/.test(s) && (s.match(/worker-a/g) ?? []).length === 2,
    );
    expect(screen).toContain('headroom: ');
    expect(paneFlags()).toBe('1 0 node'); // alternate screen on, cursor hidden
    return pid;
  }

  /** After leaving: the main screen (the command line, not top's table), the cursor, the shell, exit code 0. */
  async function expectRestored(): Promise<void> {
    const screen = await waitForPane('the shell after top', (s) => s.includes('top exited 0'));
    const joined = tmux('capture-pane', '-p', '-J', '-S', '-'); // history included, wrapped lines joined: the pane may have been made smaller
    expect(joined).toContain(`${TOP_COMMAND} `); // the command line, on the main screen
    expect(joined).not.toMatch(/TID\s+NAME/);
    expect(paneFlags()).toBe('0 1 sh');
  }

  it('draws the screen, with colors, and q restores the terminal', async () => {
    await setUp({ TERM: 'screen' });
    expect(tmux('capture-pane', '-p', '-e')).toContain(`${ESC}[1m`); // the bold header
    tmux('send-keys', 'q');
    await expectRestored();
  }, 120_000);

  it('fits a resized terminal; NO_COLOR: no styles; Ctrl-C restores the terminal', async () => {
    await setUp({ TERM: 'screen', NO_COLOR: '1' });
    expect(tmux('capture-pane', '-p', '-e')).not.toContain(`${ESC}[1m`);
    tmux('resize-window', '-x', '40', '-y', '12');
    await waitForPane('the table fitted to 40x12', (s) => {
      const lines = stripStyles(s).split('\n');
      // Which columns fit depends on the names' widths: every line fits, the header is there, rows were cut.
      return (
        lines.every((l) => [...l.trimEnd()].length <= 40) &&
        lines.some((l) => /^\s*TID\s+NAME\s+STATE\s+%CPU/.test(l)) &&
        lines.some((l) => /… \d+ more/.test(l))
      );
    });
    tmux('send-keys', 'C-c');
    await expectRestored();
  }, 120_000);
});
