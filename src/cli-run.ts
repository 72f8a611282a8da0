// `threadleak run [--action warn|raise] [--exit-timeout ms] -- <command...>`:
// runs a command with threadleak/register preloaded through NODE_OPTIONS (so
// every Node process below it reports the native threads it leaks at exit),
// forwards signals to it, and ends with its exit code, or 1 when it succeeded
// but leaked and the action is 'raise'. A process below it that hangs at exit
// is killed once the register's watchdog has printed its stacks: a CI job
// must never hang.
//
// How run knows that a process reached its exit: THREADLEAK_RUN_STATUS names a
// file in a temporary folder of run's own, to which the register appends
// `exit <pid> <leaked threads>` in its 'exit' handler (src/integrations/register.ts).
// run reads the new bytes of that file every POLL_MS; a pid still alive
// --exit-timeout + DUMP_GRACE_MS after its line was read has hung.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { delimiter, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  formatCliBadOptionValue,
  formatCliFlagWithValue,
  formatCliOptionValueMissing,
  formatCliUnknownOption,
  formatRunCannotStart,
  formatRunHungAtExit,
  formatRunMissingCommand,
  formatRunNoStatusFile,
  escapeControlCharacters,
} from './report.js';
import { UsageError, USAGE_EXIT_CODE } from './cli-usage.js';
import {
  ACTION_ENV,
  DEFAULT_EXIT_TIMEOUT_MS,
  EXIT_ACTIONS,
  EXIT_TIMEOUT_ENV,
  MAX_EXIT_TIMEOUT_MS,
  RUN_STATUS_ENV,
  type ExitAction,
} from './integrations/register-settings.js';

export const RUN_USAGE = `threadleak run [--action warn|raise] [--exit-timeout ms] -- <command...>
  Runs a Node command with threadleak/register preloaded (added to NODE_OPTIONS): every Node process
  below it reports the native threads it leaks at exit. Signals are forwarded; the exit code is the
  command's own, or 1 when it exited 0 but leaked and the action is raise, or when a process hung at exit.
  --action warn|raise  default warn
  --exit-timeout ms    after a process's 'exit' event, print its threads' stacks after this long and
                       kill it about 2 s later (default 5000; 0: never)`;

const COMMAND = 'threadleak run';
/** How long after the watchdog's deadline a hung process is left to finish writing its stacks. */
const DUMP_GRACE_MS = 2000;
const POLL_MS = 100;
/** After a SIGKILL, how long the command is waited for before run ends anyway. */
const KILLED_WAIT_MS = 5000;
// The package is CommonJS in dist/: this file is dist/cli-run.js, the register dist/integrations/register.js.
const REGISTER_PATH = join(__dirname, 'integrations', 'register.js');

interface RunOptions {
  action: ExitAction;
  exitTimeoutMs: number;
  command: string[];
}

/**
 * The options before the command, and the command: everything from the first
 * argument that is not an option (or after `--`), so the command's own options
 * (`node --inspect app.js`) are left alone. The options are read from
 * parseArgs' tokens and checked here, with the same messages as ps and top.
 */
function parseRunArguments(argv: string[]): RunOptions | 'help' {
  const options = {
    action: { type: 'string' },
    'exit-timeout': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  } as const;
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  let action: ExitAction = 'warn';
  let exitTimeoutMs = DEFAULT_EXIT_TIMEOUT_MS;
  for (const token of tokens) {
    if (token.kind === 'option-terminator' || token.kind === 'positional') {
      const command = argv.slice(token.kind === 'positional' ? token.index : token.index + 1);
      if (command.length === 0) throw new UsageError(formatRunMissingCommand());
      return { action, exitTimeoutMs, command };
    }
    if (!Object.hasOwn(options, token.name)) throw new UsageError(formatCliUnknownOption(COMMAND, token.rawName));
    if (token.name === 'help') {
      if (token.inlineValue) throw new UsageError(formatCliFlagWithValue(COMMAND, token.rawName));
      return 'help';
    }
    if (token.value === undefined) throw new UsageError(formatCliOptionValueMissing(COMMAND, token.rawName));
    if (token.name === 'action') {
      if (!(EXIT_ACTIONS as readonly string[]).includes(token.value)) {
        throw new UsageError(formatCliBadOptionValue(COMMAND, '--action', token.value, "'warn' or 'raise'"));
      }
      action = token.value as ExitAction;
    } else {
      exitTimeoutMs = Number(token.value);
      if (!/^\d+$/.test(token.value) || exitTimeoutMs > MAX_EXIT_TIMEOUT_MS) {
        const expected = `a whole number of ms from 0 (never kill) to ${MAX_EXIT_TIMEOUT_MS}`;
        throw new UsageError(formatCliBadOptionValue(COMMAND, '--exit-timeout', token.value, expected));
      }
    }
  }
  throw new UsageError(formatRunMissingCommand());
}

/**
 * A value for NODE_OPTIONS: in double quotes, `\` and `"` escaped with a
 * backslash, as Node's NODE_OPTIONS parser reads them (a path with spaces, or
 * Windows backslashes, stays one argument).
 */
function quoteForNodeOptions(value: string): string {
  return `"${value.replace(/[\\"]/g, '\\$&')}"`;
}

/** Sets `name` in an environment copy; on Windows, where names are case-insensitive, drops other spellings first. */
function setEnv(env: NodeJS.ProcessEnv, name: string, value: string): void {
  if (process.platform === 'win32') {
    for (const key of Object.keys(env)) if (key.toUpperCase() === name && key !== name) delete env[key];
  }
  env[name] = value;
}

function commandEnv(options: RunOptions, statusPath: string): NodeJS.ProcessEnv {
  const env = { ...process.env };
  const existing = (process.env.NODE_OPTIONS ?? '').trim();
  setEnv(env, 'NODE_OPTIONS', `${existing ? `${existing} ` : ''}--require ${quoteForNodeOptions(REGISTER_PATH)}`);
  setEnv(env, ACTION_ENV, options.action);
  setEnv(env, EXIT_TIMEOUT_ENV, String(options.exitTimeoutMs));
  setEnv(env, RUN_STATUS_ENV, statusPath);
  return env;
}

// ------------------------------------------------------------ Windows batch files
// Node refuses to spawn a .cmd or .bat without a shell (EINVAL, since the fix of
// CVE-2024-27980), and libuv looks for .com and .exe only, so `npm` (npm.cmd) is
// not found. So on Windows the command is looked up on PATH with PATHEXT as cmd.exe
// does; when that finds a batch file, it runs through `cmd.exe /d /s /c "<line>"`
// (as Node's `shell: true` does): the batch file's path in quotes, then every
// argument quoted for the C runtime's parser and every cmd.exe metacharacter in it
// escaped with ^ (the method of https://qntm.org/cmd, as cross-spawn does; twice for
// npm's node_modules\.bin shims, which pass %* through cmd.exe once more). An
// argument that holds a `"` may still be split by a batch file that passes it on
// with %* (a limit of cmd.exe). Anything else is spawned directly, as on other OSes.

/** The file that cmd.exe would run for `name`: cwd, then PATH, each with the PATHEXT extensions. */
function findOnWindowsPath(name: string): string | undefined {
  const extensions = (process.env.PATHEXT || '.COM;.EXE;.BAT;.CMD').split(';').filter(Boolean);
  const suffixes = extname(name) ? ['', ...extensions] : extensions;
  const folders = /[\\/]/.test(name) ? [''] : [process.cwd(), ...(process.env.PATH ?? '').split(delimiter).filter(Boolean)];
  for (const folder of folders) {
    for (const suffix of suffixes) {
      const candidate = resolve(folder, `${name}${suffix}`);
      try {
        if (statSync(candidate).isFile()) return candidate;
      } catch {
        // not there
      }
    }
  }
  return undefined;
}

const CMD_METACHARACTERS = /([()\][%!^"`<>&|;, *?])/g;

/** One argument as the C runtime's command-line parser reads it back (CommandLineToArgvW's rules). */
function quoteForCrt(arg: string): string {
  let quoted = '"';
  let backslashes = 0;
  for (const char of arg) {
    if (char === '\\') {
      backslashes++;
      continue;
    }
    quoted += '\\'.repeat(char === '"' ? backslashes * 2 + 1 : backslashes) + char;
    backslashes = 0;
  }
  return `${quoted}${'\\'.repeat(backslashes * 2)}"`;
}

function escapeForCmd(text: string, times: number): string {
  for (let i = 0; i < times; i++) text = text.replace(CMD_METACHARACTERS, '^$1');
  return text;
}

/** The file and arguments to spawn `command` with (through cmd.exe only for a Windows batch file). */
function spawnTarget(command: string[]): { file: string; args: string[]; options: SpawnOptions } {
  const [name, ...args] = command as [string, ...string[]];
  const found = process.platform === 'win32' ? findOnWindowsPath(name) : undefined;
  if (found === undefined || !/\.(cmd|bat)$/i.test(found)) return { file: name, args, options: {} };
  const times = /node_modules[\\/]\.bin[\\/][^\\/]+\.cmd$/i.test(found) ? 2 : 1;
  // The file in plain quotes (a path holds no `"`; metacharacters and spaces in it are quoted), so that
  // the quotes after it are balanced; the arguments escaped.
  const line = [`"${found}"`, ...args.map((arg) => escapeForCmd(quoteForCrt(arg), times))].join(' ');
  return {
    file: process.env.ComSpec || 'cmd.exe',
    args: ['/d', '/s', '/c', `"${line}"`],
    options: { windowsVerbatimArguments: true },
  };
}

// ------------------------------------------------------------ watching the command

/** The `exit <pid> <leaked>` lines appended to the status file since the last read. */
class StatusFile {
  private offset = 0;
  private partial = '';

  constructor(private readonly fd: number) {}

  readNew(): { pid: number; leaked: number }[] {
    const size = fstatSync(this.fd).size;
    if (size <= this.offset) return [];
    const buffer = Buffer.alloc(size - this.offset);
    const read = readSync(this.fd, buffer, 0, buffer.length, this.offset);
    this.offset += read;
    const lines = (this.partial + buffer.toString('latin1', 0, read)).split('\n');
    this.partial = lines.pop()!;
    const announced: { pid: number; leaked: number }[] = [];
    for (const line of lines) {
      const match = /^exit (\d+) (\d+)\r?$/.exec(line);
      if (match) announced.push({ pid: Number(match[1]), leaked: Number(match[2]) });
    }
    return announced;
  }
}

/** Whether `pid` is a live process (on Linux, not a zombie waiting for its parent). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as { code?: unknown }).code === 'EPERM';
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** The exit code a shell would give: the code, or 128 + the signal's number. */
function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal === null ? undefined : (osConstants.signals as Record<string, number | undefined>)[signal];
  return number === undefined ? 1 : 128 + number;
}

// On POSIX, these are sent on to the command; run itself does not die from them
// while the command runs. On Windows, Node's only signals are a console's
// Ctrl-C/Ctrl-Break/close, which the console gives to the command as well (and
// ChildProcess#kill would terminate it outright): run only keeps from dying of them.
const FORWARDED_SIGNALS: readonly NodeJS.Signals[] =
  process.platform === 'win32' ? ['SIGINT', 'SIGBREAK', 'SIGHUP'] : ['SIGINT', 'SIGTERM', 'SIGHUP'];

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Runs the command to its end (or until a process below it hangs at exit); resolves with run's exit code. */
function supervise(options: RunOptions, statusPath: string, status: StatusFile): Promise<number> {
  return new Promise((resolvePromise) => {
    let child: ChildProcess;
    const target = spawnTarget(options.command);
    try {
      child = spawn(target.file, target.args, { ...target.options, stdio: 'inherit', env: commandEnv(options, statusPath) });
    } catch (error) {
      // Errors other than ENOENT, EACCES, EAGAIN, EMFILE and ENFILE are thrown (EINVAL for a .bat given as a path).
      resolvePromise(cannotStart(options.command[0]!, error));
      return;
    }
    let leaked = 0;
    let ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let hung = false;
    let finished = false;
    const pending = new Map<number, number>(); // pid -> when its exit was read
    const forward = (signal: NodeJS.Signals) => {
      // Once the command has ended, a signal ends run's wait for the processes below it (and run cleans up).
      if (ended !== undefined) return finish(exitCodeOf(null, signal));
      if (process.platform === 'win32') return;
      try {
        child.kill(signal);
      } catch {
        // it is ending
      }
    };
    for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
    const timer = setInterval(check, POLL_MS).unref();

    function finish(code: number): void {
      if (finished) return;
      finished = true;
      clearInterval(timer);
      for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
      resolvePromise(code);
    }

    function check(): void {
      const now = Date.now();
      try {
        for (const { pid, leaked: count } of status.readNew()) {
          leaked += count;
          if (options.exitTimeoutMs > 0 && !pending.has(pid)) pending.set(pid, now);
        }
      } catch {
        // the status file cannot be read (it never goes away while run runs): leaks and hangs go unseen
      }
      for (const [pid, since] of pending) {
        if ((pid === child.pid && ended !== undefined) || !isAlive(pid)) {
          pending.delete(pid);
        } else if (!hung && now - since >= options.exitTimeoutMs + DUMP_GRACE_MS) {
          hung = true;
          const command = child.pid === undefined || ended !== undefined ? undefined : { pid: child.pid, isTheProcess: pid === child.pid };
          process.stderr.write(`${formatRunHungAtExit(pid, now - since, command)}\n`);
          kill(pid);
          if (command === undefined) return finish(1);
          kill(command.pid);
          // The command's 'close' ends run; should even SIGKILL not end it (a process stuck in the kernel), run ends anyway.
          setTimeout(() => {
            child.unref();
            finish(1);
          }, KILLED_WAIT_MS).unref();
          return;
        }
      }
      // Once the command has ended, run waits only for processes below it that announced their exit
      // and are still alive: each is seen to end or is killed at its deadline.
      if (ended !== undefined && !hung && pending.size === 0) {
        const code = exitCodeOf(ended.code, ended.signal);
        finish(options.action === 'raise' && code === 0 && leaked > 0 ? 1 : code);
      }
    }

    child.on('error', (error) => {
      if (child.pid === undefined) finish(cannotStart(options.command[0]!, error));
    });
    child.on('close', (code, signal) => {
      if (child.pid === undefined) return; // could not start: said by 'error'
      ended = { code, signal };
      if (hung) return finish(1);
      timer.ref(); // the command no longer keeps this process alive while run waits
      check();
    });
  });
}

function cannotStart(command: string, error: unknown): number {
  const detail = error instanceof Error ? (error as Error & { code?: unknown }) : { message: String(error) };
  process.stderr.write(`${formatRunCannotStart(command, detail)}\n`);
  const code = (detail as { code?: unknown }).code;
  return code === 'ENOENT' ? 127 : code === 'EACCES' ? 126 : 1;
}

/** `threadleak run ...` (`argv`: the words after `run`); resolves with the exit code to end with. */
export async function runCommand(argv: string[]): Promise<number> {
  let options: RunOptions | 'help';
  try {
    options = parseRunArguments(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${escapeControlCharacters(error.message)}\n`);
    return USAGE_EXIT_CODE;
  }
  if (options === 'help') {
    process.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  let folder: string;
  let fd: number;
  try {
    folder = mkdtempSync(join(tmpdir(), 'threadleak-run-'));
  } catch (error) {
    process.stderr.write(`${formatRunNoStatusFile(error as Error)}\n`);
    return 1;
  }
  // A process that outlives run and exits later finds no folder: its line is not written (nothing is left behind).
  const statusPath = join(folder, 'status');
  try {
    writeFileSync(statusPath, '', { mode: 0o600 });
    fd = openSync(statusPath, 'r');
  } catch (error) {
    process.stderr.write(`${formatRunNoStatusFile(error as Error)}\n`);
    rmSync(folder, { recursive: true, force: true });
    return 1;
  }
  try {
    return await supervise(options, statusPath, new StatusFile(fd));
  } finally {
    closeSync(fd);
    try {
      // Windows may still hold the file open in a process that is ending: retry a little.
      rmSync(folder, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    } catch {
      // left in the temporary folder
    }
  }
}
