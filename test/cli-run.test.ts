// `threadleak run`, as a user runs it: a real `run` process (src/cli-run.ts, compiled, from the
// package installed in a small project whose path has a space) runs a Node app that uses the
// native spawner fixture. Exit codes, the register's report, NODE_OPTIONS kept, a hang at exit
// killed after the watchdog's dump, signals forwarded, and one-line usage errors. The tests start
// `run` through a tiny runner (`node -e "require(cli-run.js).runCommand(...)"`), not the bin.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isWine, makeProjectWithPackage, spawnerPath, THREAD_KIND } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
// The space makes the register's path in NODE_OPTIONS one that must be quoted.
const dir = `${root}test/fixtures/runners/build/cli run ${process.pid}`;
const tmp = `${dir}/tmp`; // run's temporary folder (TMPDIR, TEMP, TMP): it must be empty after each run
const pidsFile = `${dir}/pids.txt`; // every app appends its pid, so leftovers can be killed
const CHILD_TIMEOUT_MS = isWine ? 120_000 : 60_000;
const REPORT_HEAD = /^threadleak: 1 thread leaked: started after threadleak\/register loaded and still alive at exit$/m;
const RUNNER = `require(${JSON.stringify(`${dir}/node_modules/threadleak/dist/cli-run.js`)}).runCommand(process.argv.slice(1)).then((code) => { process.exitCode = code; });`;

const PRELUDE = `require('node:fs').appendFileSync(${JSON.stringify(pidsFile)}, process.pid + '\\n');\n`;
const APPS: Record<string, string> = {
  // One native thread left running at exit; argv[2]: an exit code, or 'reset' for an exit handler
  // that runs after the register's and sets the code back to 0.
  'leak.cjs': `const spawner = require(${JSON.stringify(spawnerPath)});
spawner.start({ count: 1, kind: ${JSON.stringify(THREAD_KIND)}, name: 'leaky' });
console.log('marker: ' + (globalThis.threadleakTestMarker ?? 'none'));
if (process.argv[2] === 'reset') process.on('exit', () => { process.exitCode = 0; });
else if (process.argv[2]) process.exitCode = Number(process.argv[2]);`,
  'clean.cjs': `const spawner = require(${JSON.stringify(spawnerPath)});
spawner.stop(spawner.start({ count: 1, kind: ${JSON.stringify(THREAD_KIND)} }).handle);
console.log('clean');
if (process.argv[2]) process.exitCode = Number(process.argv[2]);`,
  // An addon whose cleanup hook joins a thread that never ends: the process hangs after 'exit'.
  'hang.cjs': `require(${JSON.stringify(spawnerPath)}).hangAtExit();`,
  'long.cjs': `process.on('SIGTERM', () => { console.log('app got SIGTERM'); process.exit(0); });
setInterval(() => {}, 1000);
console.log('ready');`,
  'killed.cjs': `process.kill(process.pid, 'SIGKILL');`,
};

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const runners = new Set<ChildProcess>();

/** Kills what a test left: its `run` processes and the apps they started. */
function killLeftovers(): void {
  for (const runner of runners) runner.kill('SIGKILL');
  if (!existsSync(pidsFile)) return;
  for (const pid of readFileSync(pidsFile, 'utf8').split('\n').filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // ended
    }
  }
  rmSync(pidsFile, { force: true });
}

/** `threadleak run <args>` in the project folder, to its end (killed after CHILD_TIMEOUT_MS). */
function threadleakRun(
  args: string[],
  options: { env?: Record<string, string>; onStdout?: (stdout: string, runner: ChildProcess) => void } = {},
): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp, TEMP: tmp, TMP: tmp, ...options.env };
  if (options.env?.NODE_OPTIONS === undefined) delete env.NODE_OPTIONS;
  return new Promise((resolve, reject) => {
    const runner = spawn(process.execPath, ['-e', RUNNER, '--', ...args], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    runners.add(runner);
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(killLeftovers, CHILD_TIMEOUT_MS);
    runner.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      options.onStdout?.(stdout, runner);
    });
    runner.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    runner.on('error', reject);
    runner.on('close', (code, signal) => {
      clearTimeout(timer);
      runners.delete(runner);
      resolve({ code, signal, stdout: stdout.replace(/\r\n/g, '\n'), stderr: stderr.replace(/\r\n/g, '\n') });
    });
  });
}

/** `threadleak run [options] -- node <app> [appArgs]`, checking that run left nothing in its temporary folder. */
async function runApp(options: string[], app: string, appArgs: string[] = [], env?: Record<string, string>): Promise<RunResult> {
  const result = await threadleakRun([...options, '--', process.execPath, app, ...appArgs], { env });
  expect(readdirSync(tmp)).toEqual([]);
  return result;
}

/** A usage error or a command that cannot start: one line on stderr, no stack trace, nothing on stdout. */
function expectOneLine(result: RunResult, code: number, line: string): void {
  expect(result).toEqual({ code, signal: null, stdout: '', stderr: `${line}\n` });
}

beforeAll(() => {
  makeProjectWithPackage(dir);
  mkdirSync(tmp);
  mkdirSync(`${dir}/marker dir`);
  writeFileSync(`${dir}/marker dir/marker.cjs`, `globalThis.threadleakTestMarker = 'loaded';`);
  for (const [name, text] of Object.entries(APPS)) writeFileSync(`${dir}/${name}`, PRELUDE + text);
  mkdirSync(`${dir}/bin dir`);
  writeFileSync(`${dir}/bin dir/echo-args.cmd`, `@"${process.execPath}" "%~dp0echo-args.js" %*\r\n`);
  writeFileSync(`${dir}/bin dir/echo-args.js`, 'console.log(JSON.stringify(process.argv.slice(2))); process.exitCode = 5;');
});
afterEach(killLeftovers);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('threadleak run: the report and the exit code', () => {
  it("prints the register's report of a leaked native thread and keeps the app's exit code 0", async () => {
    const { code, stdout, stderr } = await runApp([], 'leak.cjs');
    expect(code).toBe(0);
    expect(stdout).toBe('marker: none\n');
    expect(stderr).toMatch(REPORT_HEAD);
    expect(stderr).toMatch(/^ {2}- thread \d+ "leaky" /m);
  }, CHILD_TIMEOUT_MS + 10_000);

  it('--action raise: a leak makes a clean exit 1', async () => {
    const { code, stderr } = await runApp(['--action', 'raise'], 'leak.cjs');
    expect(code).toBe(1);
    expect(stderr).toMatch(REPORT_HEAD);
  }, CHILD_TIMEOUT_MS + 10_000);

  it("--action raise: 1 even when an exit handler after the register's sets the app's code back to 0", async () => {
    const { code, stderr } = await runApp(['--action=raise'], 'leak.cjs', ['reset']);
    expect(code).toBe(1);
    expect(stderr).toMatch(REPORT_HEAD);
  }, CHILD_TIMEOUT_MS + 10_000);

  it("keeps the app's own non-zero exit code, with or without a leak and raise", async () => {
    expect(await runApp([], 'clean.cjs', ['3'])).toEqual({ code: 3, signal: null, stdout: 'clean\n', stderr: '' });
    const leaked = await runApp(['--action', 'raise'], 'leak.cjs', ['3']);
    expect(leaked.code).toBe(3);
    expect(leaked.stderr).toMatch(REPORT_HEAD);
  }, 2 * CHILD_TIMEOUT_MS + 10_000);

  it('--action raise with a clean app: 0 and nothing on stderr', async () => {
    expect(await runApp(['--action', 'raise'], 'clean.cjs')).toEqual({ code: 0, signal: null, stdout: 'clean\n', stderr: '' });
  }, CHILD_TIMEOUT_MS + 10_000);

  it('keeps the NODE_OPTIONS it was given (a --require of a path with a space) and adds the register', async () => {
    const { code, stdout, stderr } = await runApp([], 'leak.cjs', [], { NODE_OPTIONS: '--require "./marker dir/marker.cjs"' });
    expect(code).toBe(0);
    expect(stdout).toBe('marker: loaded\n');
    expect(stderr).toMatch(REPORT_HEAD);
  }, CHILD_TIMEOUT_MS + 10_000);
});

describe('threadleak run: a hang at exit', () => {
  it("kills an app still alive --exit-timeout + 2 s after its 'exit' event, after the watchdog's dump, and exits 1", async () => {
    const { code, stderr } = await runApp(['--exit-timeout', '300'], 'hang.cjs');
    expect(code).toBe(1);
    const pid = Number(readFileSync(pidsFile, 'utf8').trim());
    // The register's report (the never-ending thread), the watchdog's dump, then run's line, last.
    expect(stderr).toMatch(/^threadleak: 1 thread leaked/m);
    const dump = stderr.slice(stderr.indexOf(`threadleak: process ${pid} is still alive 300 ms after its 'exit' event`));
    expect(dump).toContain('the thread that is exiting');
    expect(dump).toMatch(/- thread \d+ "tl-forever" /);
    const lines = stderr.trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(
      new RegExp(`^threadleak run: process ${pid} hung at exit: still alive \\d+(\\.\\d)? m?s after its 'exit' event \\(its threads' native stacks are printed above.*\\); killing it \\(the command\\)$`),
    );
    expect(() => process.kill(pid, 0)).toThrow(); // killed (and reaped by run)
  }, CHILD_TIMEOUT_MS + 10_000);
});

// POSIX signals: on Windows, Node has no SIGTERM to receive, and a process killed by a "signal" there
// ends with an exit code, not a signal.
describe.skipIf(process.platform === 'win32')('threadleak run: signals', () => {
  it('forwards SIGTERM to the app and ends with its code, without dying of it', async () => {
    const result = await threadleakRun(['--', process.execPath, 'long.cjs'], {
      onStdout: (stdout, runner) => {
        if (stdout === 'ready\n') runner.kill('SIGTERM');
      },
    });
    expect(result).toEqual({ code: 0, signal: null, stdout: 'ready\napp got SIGTERM\n', stderr: '' });
  }, CHILD_TIMEOUT_MS + 10_000);

  it('ends with 128 + the number of the signal that killed the app', async () => {
    expect(await runApp([], 'killed.cjs')).toEqual({ code: 128 + constants.signals.SIGKILL, signal: null, stdout: '', stderr: '' });
  }, CHILD_TIMEOUT_MS + 10_000);
});

describe('threadleak run: errors', () => {
  it('says what is wrong with its options in one line and exits 2; --help prints the usage', async () => {
    const cases: [string[], string][] = [
      [['--x', 'node'], `threadleak run: unknown option '--x' (threadleak run --help)`],
      [['--action', 'rase', '--', 'node'], `threadleak run: --action must be 'warn' or 'raise', got 'rase'`],
      [['--exit-timeout', '5s', 'node'], `threadleak run: --exit-timeout must be a whole number of ms from 0 (never kill) to 86400000, got '5s'`],
      [['--action'], 'threadleak run: option --action needs a value (threadleak run --help)'],
      [['--action', 'raise', '--'], 'threadleak run: no command to run: give it after the options, as in `threadleak run -- node app.js` (threadleak run --help)'],
    ];
    for (const [args, line] of cases) expectOneLine(await threadleakRun(args), 2, line);
    const help = await threadleakRun(['--help']);
    expect(help).toMatchObject({ code: 0, stderr: '' });
    expect(help.stdout).toMatch(/^threadleak run \[--action warn\|raise\] \[--exit-timeout ms\] -- <command\.\.\.>\n/);
    expect(readdirSync(tmp)).toEqual([]);
  }, 6 * CHILD_TIMEOUT_MS);

  it('says that a command is not found in one line and exits 127, as a shell does', async () => {
    expectOneLine(await threadleakRun(['--', 'threadleak-no-such-command']), 127, "threadleak run: cannot start 'threadleak-no-such-command': command not found");
    expect(readdirSync(tmp)).toEqual([]);
  }, CHILD_TIMEOUT_MS + 10_000);
});

// Windows only: Node starts a .cmd or .bat only through a shell, and finds neither by its bare name
// (npm is npm.cmd); run looks the name up on PATH with PATHEXT, as cmd.exe does, and quotes for cmd.exe.
describe.skipIf(process.platform !== 'win32')('threadleak run: a Windows batch file', () => {
  it('runs a .cmd found on PATH by its bare name, with its arguments intact and its exit code', async () => {
    // A '%' is escaped as a cmd.exe command line (not a batch file) needs it; wine's cmd.exe drops a
    // lone '%' there, as in a batch file, so that argument is checked on real Windows only.
    const args = ['a b', 'x&y|z', '(paren)', 'back\\slash\\', '^caret', ...(isWine ? [] : ['100%', '%PATH%'])];
    const pathKey = Object.keys(process.env).find((key) => key.toUpperCase() === 'PATH') ?? 'PATH';
    const env = { [pathKey]: `${dir}\\bin dir;${process.env[pathKey] ?? ''}` };
    const result = await threadleakRun(['--', 'echo-args', ...args], { env });
    expect(result).toEqual({ code: 5, signal: null, stdout: `${JSON.stringify(args)}\n`, stderr: '' });
  }, CHILD_TIMEOUT_MS + 10_000);
});
