// The README's examples must run as written and print what the README says
// they print: each is executed in a fresh process against the built package,
// and its output is checked against the README's own "prints" block or the
// values its comments give (durations, times and paths vary by run).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isWine, runNode } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));

const readme = readFileSync(`${root}README.md`, 'utf8');

/** The text from the heading line `marker` (e.g. '## Quick start') to the next heading of the same level or above. */
function section(marker: string): string {
  const start = readme.indexOf(`\n${marker}`);
  if (start < 0) throw new Error(`README.md has no heading "${marker}"`);
  const level = marker.indexOf(' ');
  const next = new RegExp(`\n#{1,${level}} `, 'g');
  next.lastIndex = start + marker.length + 1;
  const end = next.exec(readme)?.index;
  return readme.slice(start, end);
}

const jsBlocks = (text: string) => [...text.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);

/** The plain block after "prints" in a section: what its example writes. */
function printedBlock(text: string): string {
  const block = /\nprints[^\n]*\n\n```\n([\s\S]*?)```/.exec(text);
  if (!block) throw new Error(`no "prints" block in:\n${text.slice(0, 200)}`);
  return block[1]!;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A printed block as a pattern: durations match any duration, the README's
 * sample paths (/home/me/…) match `file`, and a frame inside Node itself
 * matches any frame (they differ between Node versions).
 */
function printedPattern(printed: string, file: string): RegExp {
  const slots: [RegExp, string][] = [
    [/file:\/\/\/home\/me\/[\w-]+\.mjs/g, escape(pathToFileURL(file).href)],
    // As it is, or inside a JSON string (where Windows' backslashes are doubled).
    [/\/home\/me\/[\w-]+\.mjs/g, `(?:${escape(file)}|${escape(JSON.stringify(file).slice(1, -1))})`],
    [/\d+(\.\d+)? ms/g, '[\\d.]+ ms'],
  ];
  const lines = printed.trimEnd().split('\n').map((line) => {
    // Node's own frames differ from version to version: any frame of Node's own.
    if (/node:internal\//.test(line)) return `${escape(/^\s*/.exec(line)![0])}\\S.*node:internal\\/.*`;
    // Mark what varies, escape the rest, then put the patterns in.
    let marked = line;
    slots.forEach(([pattern], i) => (marked = marked.replace(pattern, `\0${i}\0`)));
    return escape(marked).replace(/\0(\d)\0/g, (_, i: string) => slots[Number(i)]![1]);
  });
  return new RegExp(`^${lines.join('\n')}$`, 'm');
}

// Examples run as files inside the package, so that 'threadleak' resolves to
// it by its own name and import.meta.filename is a real file.
const exampleDir = join(root, 'test', 'fixtures', 'readme', 'build');
let examples = 0;

function runModule(code: string, flags: string[] = []) {
  mkdirSync(exampleDir, { recursive: true });
  const file = join(exampleDir, `example-${process.pid}-${examples++}.mjs`);
  writeFileSync(file, code);
  const result = runNode([...flags, file], {
    cwd: root, // 'threadleak' resolves to this package by its own name
    timeout: 30_000,
  });
  if (result.error !== undefined) throw new Error(`node ${file} could not be run: ${result.error.message}`);
  return { ...result, file };
}

it('runs the README quick start as written: the threads table, then the leaked Worker', () => {
  const [code] = jsBlocks(section('## Quick start'));
  const result = runModule(code!);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  // console.table of threads(): this process's main thread is a row (Linux: its id is the pid).
  expect(result.stdout).toMatch(/│ \(index\) │ id +│ name +│ state +│/);
  expect(result.stdout).toMatch(new RegExp(`│ ${process.platform === 'linux' ? result.pid : '\\d+'} +│`));
  // then the error's code and message, as the comments say.
  const states = isWine ? 'unknown' : 'running|sleeping'; // wine tells no thread state
  expect(result.stdout).toMatch(new RegExp(`\\nERR_THREAD_LEAK\\n1 thread leaked: started in the scope and still alive 100 ms after it ended\\n {2}- thread \\d+ "[^"]*" \\((${states}), age [\\d.]+ m?s; Worker\\)\\n {6}created at:\\n {8}file:\\/\\/.*example-[\\d-]+\\.mjs:9:16\\n$`));
});

describe('the LeakTracker examples, as written', () => {
  const tracker = section('## LeakTracker');
  const example = (heading: string) => {
    const text = section(`### ${heading}`);
    expect(tracker).toContain(text.trim());
    const [code] = jsBlocks(text);
    const result = runModule(code!, ['--expose-gc']);
    expect(result.stderr).not.toMatch(/Error|at .*node:internal/);
    expect(result.status).toBe(0);
    return { ...result, text };
  };

  it('tracking and untracking: the live entry, true, false, 0', () => {
    const { stdout } = example('Tracking and untracking');
    expect(stdout).toMatch(/^\[\n {2}\{\n {4}id: 1,\n {4}name: 'resource-1',\n {4}kind: 'custom',\n {4}createdAt: \d{13},\n {4}ageMs: [\d.]+,\n {4}collected: false\n {2}\}\n\]\ntrue\nfalse\n0\n$/);
  });

  it('a file wrapper that tracks itself: 0 open, then the leaked file by name', () => {
    const { stdout } = example('A file wrapper that tracks itself');
    expect(stdout).toBe(`0\n${inspect([`file:${join(tmpdir(), 'tracked-file-example.txt')}`])}\n`);
  });

  it('a connection pool: the two held connections, oldest first, as printed', () => {
    const { stdout, text, file } = example('A connection pool that forgets to release');
    expect(stdout).toMatch(printedPattern(printedBlock(text), file));
    expect(stdout.trimEnd().split('\n')).toHaveLength(4);
  });

  it('reports grouped by kind: the summary line, then the report as printed', () => {
    const { stdout, text, file } = example('Reports, grouped by kind');
    const [first, ...rest] = stdout.trimEnd().split('\n');
    expect(first).toMatch(/^5 \{ database_connection: 2, file_handle: 2, mutex_lock: 1 \} \d+$/);
    expect(rest.join('\n')).toMatch(printedPattern(printedBlock(text), file));
  });

  it('the report at process exit: on stderr, naming the file left open', () => {
    const text = section('### The report at process exit');
    const result = runModule(jsBlocks(text)[0]!);
    expect(result.status).toBe(0);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(printedPattern(printedBlock(text), result.file));
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(3);
  });

  it('weak references: the dropped socket is reported as collected without release', () => {
    const { stdout, text, file } = example('Weak references: collected without release');
    const [code] = jsBlocks(text);
    // The comments after the last console.log are what it prints.
    const commented = code!.slice(code!.lastIndexOf('console.log')).split('\n').slice(1)
      .map((line) => line.replace(/^\/\/ ?/, '')).join('\n');
    expect(stdout).toMatch(new RegExp(`^true\n${printedPattern(commented, file).source.slice(1)}`, 'm'));
  });

  it('where each resource was acquired: the first frame names the caller, the report shows where', () => {
    const { stdout, text, file } = example('Where each resource was acquired');
    const [first, ...rest] = stdout.trimEnd().split('\n');
    expect(first).toBe(`    at openSession (${pathToFileURL(file).href}:6:18)`);
    expect(rest.join('\n')).toMatch(printedPattern(printedBlock(text), file));
  });

  it('scopes: the ResourceLeakError, its leaks and message, then the released call', () => {
    const { stdout, file } = example('Scopes: `noResourceLeaks()`');
    expect(stdout).toMatch(printedPattern([
      'true ERR_RESOURCE_LEAK',
      "[ 'config-file' ]",
      '1 resource leaked: tracked in the scope and not released when it ended',
      '  - "config-file" (file, held 0.18 ms)',
      '{ id: 7 }',
    ].join('\n'), file));
  });
});

it('runs the noEventLoopBlocking example: the sort seen while it ran, the hash named as the native call it was in', () => {
  const text = section('## A blocked event loop: `noEventLoopBlocking()`');
  const [code] = jsBlocks(text);
  const result = runModule(code!);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  const printed = printedBlock(text);
  const href = pathToFileURL(result.file).href;
  // The lines the README shows that do not vary by run (what was sampled, how often and when does).
  const head = 'the event loop was blocked 2 times for longer than 100 ms:';
  expect(printed.split('\n')[0]).toBe(head);
  expect(result.stdout.split('\n')[0]).toBe(head);
  const blocks = result.stdout.split(/\n(?= {2}- blocked )/).slice(1);
  expect(blocks).toHaveLength(2);
  expect(blocks[0]).toMatch(/^ {2}- blocked \d+ ms, from \d\d:\d\d:\d\d\.\d{3}(; \d+ looks at it during the block)?:\n/);
  expect(blocks[0]).toContain(`        rankResults (${href}:7:18)\n`);
  expect(printed).toContain('        rankResults (file:///home/me/search.mjs:7:18)\n');
  expect(blocks[1]).toContain(`        hashPassword (${href}:11:10)\n`);
  expect(printed).toContain('        hashPassword (file:///home/me/search.mjs:11:10)\n');
  if (process.platform === 'linux') {
    // node's own symbols name the key derivation it was inside (their names vary with Node's version).
    expect(blocks[1]).toMatch(/ {8}in native code:\n( {10}#\d+ [^\n]*\n)*[^\n]*pbkdf2/i);
    expect(printed).toMatch(/ {8}in native code:\n( {10}#\d+ [^\n]*\n)*[^\n]*pbkdf2/i);
  }
});
