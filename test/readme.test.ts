// The README's quick start must run as written: its first code block is
// executed in a fresh process against the built package.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

const readme = readFileSync(`${root}README.md`, 'utf8');

/** The text of the `## ` section whose heading starts with `heading`. */
function section(heading: string): string {
  const start = readme.indexOf(`\n## ${heading}`);
  if (start < 0) throw new Error(`README.md has no section "## ${heading}"`);
  const end = readme.indexOf('\n## ', start + 4);
  return readme.slice(start, end < 0 ? undefined : end);
}

// Examples run as files inside the package, so that 'threadleak' resolves to
// it by its own name and import.meta.filename is a real file.
const exampleDir = `${root}test/fixtures/readme/build`;
let examples = 0;

function runModule(code: string, flags: string[] = []) {
  mkdirSync(exampleDir, { recursive: true });
  const file = `${exampleDir}/example-${process.pid}-${examples++}.mjs`;
  writeFileSync(file, code);
  return spawnSync(process.execPath, [...flags, file], {
    cwd: root, // 'threadleak' resolves to this package by its own name
    encoding: 'utf8',
    timeout: 30_000,
  });
}

function quickStart(): string {
  const block = /```js\n([\s\S]*?)```/.exec(section('Quick start'));
  if (!block) throw new Error('README.md has no js block under "## Quick start"');
  return block[1]!;
}

it('runs the README quick start as written', () => {
  const result = runModule(quickStart());
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toContain('ERR_THREAD_LEAK');
  expect(result.stdout).toMatch(/1 thread leaked: .*\n.*Worker\)/);
  expect(result.stdout).toContain('│ id'); // console.table of threads()
});

it('runs every LeakTracker example of the README as written', () => {
  const blocks = [...section('LeakTracker').matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
  expect(blocks.length).toBeGreaterThanOrEqual(6);
  for (const code of blocks) {
    const result = runModule(code, ['--expose-gc']);
    expect({ code: code.slice(0, 80), status: result.status, stderr: result.stderr }).toMatchObject({
      status: 0,
      stderr: expect.not.stringMatching(/Error|at .*node:internal/),
    });
    expect(result.stdout.length + result.stderr.length).toBeGreaterThan(0);
  }
});
