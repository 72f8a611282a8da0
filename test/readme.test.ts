// The README's quick start must run as written: its first code block is
// executed in a fresh process against the built package.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

function quickStart(): string {
  const readme = readFileSync(`${root}README.md`, 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('README.md has no js block under "## Quick start"');
  return block[1]!;
}

it('runs the README quick start as written', () => {
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', quickStart()], {
    cwd: root, // 'threadleak' resolves to this package by its own name
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toContain('ERR_THREAD_LEAK');
  expect(result.stdout).toMatch(/1 thread leaked: .*\n.*Worker\)/);
  expect(result.stdout).toContain('│ id'); // console.table of threads()
});
