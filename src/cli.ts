#!/usr/bin/env node
// The `threadleak` command (package.json "bin"): `ps`, `top` and `run`. Only
// node:util parseArgs reads the arguments. Every error a user can cause (a bad
// or unknown pid, an unknown option or command) is one line on stderr and exit
// code 2, never a stack trace; the messages come from report.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { psCommand, PS_USAGE } from './cli-ps.js';
import { runCommand, RUN_USAGE } from './cli-run.js';
import { topCommand, TOP_USAGE } from './cli-top.js';
import { UsageError, USAGE_EXIT_CODE } from './cli-usage.js';
import { DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS, MIN_INTERVAL_MS } from './monitor.js';
import {
  formatCliBadOptionValue,
  formatCliBadPid,
  formatCliCannotRead,
  formatCliExtraArgument,
  formatCliFlagWithValue,
  formatCliOptionValueMissing,
  formatCliUnknownCommand,
  formatCliUnknownOption,
  escapeControlCharacters,
} from './report.js';

const COMMANDS = ['ps', 'top', 'run'] as const;

const HELP = `threadleak: the OS threads of a process (native addons, libuv and the runtime included)

Usage:
${[PS_USAGE, TOP_USAGE, RUN_USAGE].map((text) => text.replace(/^/gm, '  ')).join('\n\n')}

  threadleak --help | --version
  threadleak <command> --help`;

function version(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * The options and positionals of a command, with threadleak's own one-line
 * messages for whatever parseArgs' strict mode would throw. A negative number
 * (`-5`) is a positional, so it is said to be a bad pid, not an unknown option.
 */
function parseCommandLine(command: string, argv: string[], options: Options) {
  const { tokens } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === 'positional') positionals.push(token.value);
    if (token.kind !== 'option') continue;
    const raw = argv[token.index]!;
    if (/^-\d/.test(raw)) {
      if (!positionals.includes(raw)) positionals.push(raw); // a short-option group such as -55 gives one token per digit
      continue;
    }
    const spec = token.name === 'help' ? { type: 'boolean' } : options[token.name];
    if (spec === undefined) throw new UsageError(formatCliUnknownOption(command, token.rawName));
    if (spec.type === 'boolean' && token.inlineValue) throw new UsageError(formatCliFlagWithValue(command, token.rawName));
    if (spec.type === 'string' && token.value === undefined) throw new UsageError(formatCliOptionValueMissing(command, token.rawName));
    values[token.name] = token.value ?? true;
  }
  return { values, positionals };
}

/** The optional pid argument: a positive whole number, or undefined for this process. */
function pidArgument(command: string, positionals: string[]): number | undefined {
  if (positionals.length > 1) throw new UsageError(formatCliExtraArgument(command, positionals[1]!));
  const text = positionals[0];
  if (text === undefined) return undefined;
  const pid = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(formatCliBadPid(command, text));
  return pid;
}

function intervalOption(command: string, value: string | boolean | undefined): number {
  if (value === undefined) return DEFAULT_INTERVAL_MS;
  const ms = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) {
    throw new UsageError(formatCliBadOptionValue(command, '--interval', String(value), `a whole number of ms from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}`));
  }
  return ms;
}

/** Runs ps or top, saying in one line why the process could not be read. */
async function watchCommand(word: 'ps' | 'top', argv: string[]): Promise<number> {
  const command = `threadleak ${word}`;
  const options: Options = word === 'ps' ? { json: { type: 'boolean' } } : { interval: { type: 'string', short: 'i' } };
  const { values, positionals } = parseCommandLine(command, argv, options);
  if (values.help) {
    process.stdout.write(`${word === 'ps' ? PS_USAGE : TOP_USAGE}\n`);
    return 0;
  }
  const pid = pidArgument(command, positionals);
  const intervalMs = word === 'top' ? intervalOption(command, values.interval) : 0;
  try {
    return word === 'ps' ? psCommand({ pid, json: values.json === true }) : await topCommand({ pid, intervalMs });
  } catch (error) {
    // The OS errors of threads() carry a code; anything else is a bug, and keeps its stack.
    if (!(error instanceof Error) || typeof (error as { code?: unknown }).code !== 'string') throw error;
    throw new UsageError(formatCliCannotRead(command, pid ?? process.pid, error));
  }
}

async function main(argv: string[]): Promise<number> {
  const [word, ...rest] = argv;
  if (word === undefined) {
    process.stderr.write(`${HELP}\n`);
    return USAGE_EXIT_CODE;
  }
  if (word === '--help' || word === '-h' || word === 'help') {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (word === '--version' || word === '-v' || word === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (word === 'ps' || word === 'top') return watchCommand(word, rest);
  if (word === 'run') return runCommand(rest);
  if (word.startsWith('-')) throw new UsageError(formatCliUnknownOption('threadleak', word));
  throw new UsageError(formatCliUnknownCommand(word, COMMANDS));
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${escapeControlCharacters(error.message)}\n`);
    process.exitCode = USAGE_EXIT_CODE;
  },
);
