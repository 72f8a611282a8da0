// bench/integrations.js — what the test-runner integration and the register cost.
//
// 1. A vitest suite of 500 trivial tests (pool 'forks'), run without and with
//    `setupFiles: ['threadleak/vitest']`, alternately, in the same run. vitest's
//    JSON report gives each test's duration (its hooks included): the added
//    time per test is the difference of the medians (target: at most 0.5 ms),
//    and the whole run's wall time is compared too.
// 2. Startup: `node --import threadleak/register -e 0` (and `-r`) against
//    `node -e 0`, alternately; the difference of the median wall times (target:
//    at most 15 ms).
//    `node --import <an empty module> -e 0` runs beside them: what any --import
//    preload costs (Node's ES module loader), of which threadleak does none.
// The package is installed by copy in bench/build/integrations (as npm would).
// Run: npm run compile && node bench/integrations.js
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { printColumns, summary } from './lib/stats.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'bench', 'build', 'integrations');
const TESTS = 500;
const SUITE_ROUNDS = 4;
const STARTUP_ROUNDS = 30;
const TARGET_PER_TEST_MS = 0.5;
const TARGET_STARTUP_MS = 15;

function makeProject() {
  rmSync(dir, { recursive: true, force: true });
  const installed = join(dir, 'node_modules', 'threadleak');
  mkdirSync(installed, { recursive: true });
  for (const entry of ['package.json', 'dist', 'src', 'prebuilds', 'build/Release/threadleak.node']) {
    if (existsSync(join(root, entry))) cpSync(join(root, entry), join(installed, entry), { recursive: true });
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ private: true, type: 'commonjs' }));
  writeFileSync(join(dir, 'empty.mjs'), '');
  writeFileSync(
    join(dir, 'trivial.test.mjs'),
    `import { test, expect } from 'vitest';\nfor (let i = 0; i < ${TESTS}; i++) test('trivial ' + i, () => { expect(i).toBe(i); });\n`,
  );
  for (const [name, setup] of [['plain', ''], ['threadleak', "setupFiles: ['threadleak/vitest'], "]]) {
    writeFileSync(join(dir, `${name}.config.mjs`), `export default { test: { include: ['trivial.test.mjs'], pool: 'forks', ${setup}} };\n`);
  }
}

/** One vitest run: its wall time and every test's duration. */
function runSuite(name) {
  const report = join(dir, `${name}.json`);
  const start = performance.now();
  const r = spawnSync(process.execPath, [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--config', `${name}.config.mjs`,
    '--reporter=json', `--outputFile=${report}`], { cwd: dir, encoding: 'utf8' });
  const wallMs = performance.now() - start;
  if (r.status !== 0) throw new Error(`vitest (${name}) failed with ${r.status}:\n${r.stdout}\n${r.stderr}`);
  const tests = JSON.parse(readFileSync(report, 'utf8')).testResults.flatMap((f) => f.assertionResults);
  if (tests.length !== TESTS || tests.some((t) => t.status !== 'passed')) throw new Error(`vitest (${name}): not ${TESTS} passed tests`);
  return { wallMs, durations: tests.map((t) => t.duration) };
}

function startupMs(args) {
  const start = performance.now();
  const r = spawnSync(process.execPath, [...args, '-e', '0'], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0 || r.stderr !== '') throw new Error(`node ${args.join(' ')} -e 0: ${r.status} ${r.stderr}`);
  return performance.now() - start;
}

makeProject();
runSuite('plain'); // warm the file system cache and vite's
const suites = { plain: { wall: [], durations: [] }, threadleak: { wall: [], durations: [] } };
for (let round = 0; round < SUITE_ROUNDS; round++) {
  for (const name of round % 2 ? ['threadleak', 'plain'] : ['plain', 'threadleak']) {
    const { wallMs, durations } = runSuite(name);
    suites[name].wall.push(wallMs);
    suites[name].durations.push(...durations);
  }
}
const perTest = Object.fromEntries(Object.entries(suites).map(([name, s]) => [name, summary(s.durations)]));
const wall = Object.fromEntries(Object.entries(suites).map(([name, s]) => [name, summary(s.wall)]));
console.log(`vitest, ${TESTS} trivial tests, ${SUITE_ROUNDS} runs each, alternating (durations include hooks):`);
printColumns(
  [
    ['setup', (r) => r.name],
    ['per test median ms', (r) => perTest[r.name].median.toFixed(3)],
    ['per test p90 ms', (r) => perTest[r.name].p90.toFixed(3)],
    ['run median ms', (r) => wall[r.name].median.toFixed(0)],
  ],
  [{ name: 'plain' }, { name: 'threadleak' }],
);
const added = perTest.threadleak.median - perTest.plain.median;
const addedWall = (wall.threadleak.median - wall.plain.median) / TESTS;
console.log(`added per test: ${added.toFixed(3)} ms median (target <= ${TARGET_PER_TEST_MS} ms: ${added <= TARGET_PER_TEST_MS ? 'met' : 'NOT met'}); ` +
  `by the whole run's wall time: ${addedWall.toFixed(3)} ms per test`);

const plainStart = [];
const emptyStart = [];
const registerStart = [];
const requireStart = [];
for (let round = 0; round < STARTUP_ROUNDS; round++) {
  plainStart.push(startupMs([]));
  emptyStart.push(startupMs(['--import', './empty.mjs']));
  registerStart.push(startupMs(['--import', 'threadleak/register']));
  requireStart.push(startupMs(['-r', 'threadleak/register']));
}
const p = summary(plainStart);
const e = summary(emptyStart);
const g = summary(registerStart);
console.log(`\nstartup, ${STARTUP_ROUNDS} runs each, alternating:`);
printColumns(
  [
    ['command', (r) => r.name],
    ['median ms', (r) => r.s.median.toFixed(1)],
    ['p90 ms', (r) => r.s.p90.toFixed(1)],
  ],
  [
    { name: 'node -e 0', s: p },
    { name: 'node --import ./empty.mjs -e 0', s: e },
    { name: 'node --import threadleak/register -e 0', s: g },
    { name: 'node -r threadleak/register -e 0', s: summary(requireStart) },
  ],
);
const cost = g.median - p.median;
console.log(`register adds ${cost.toFixed(1)} ms (x${(g.median / p.median).toFixed(2)}; target <= ${TARGET_STARTUP_MS} ms: ${cost <= TARGET_STARTUP_MS ? 'met' : 'NOT met'}); ` +
  `an empty --import preload adds ${(e.median - p.median).toFixed(1)} ms of it`);
