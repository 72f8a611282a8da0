// bench/snapshot.js — what threads() costs, against three baselines, in one run:
//
//   floor      bench/floor.cc: the same procfs walk as native/linux/threads_linux.cc
//              (getdents64 + openat + one read + parse of stat fields 2, 3, 14,
//              15, 22) in a plain C++ program, over this very process's
//              /proc/<pid>/task, timed per iteration inside the program so its
//              start-up is excluded. The floor: threads() can only add to it.
//   node       a pure-Node reader: readdirSync('/proc/self/task') +
//              readFileSync of each stat, the same fields parsed into objects.
//   ps         spawnSync('ps', ['-T', '-p', pid]) and its output parsed.
//
// at 10, 100 and 1000 parked native threads started by the test fixture
// (test/fixtures/spawner), on top of the threads Node itself runs.
//
// Fairness: every contender is warmed up at every thread count; then rounds
// run each contender for a fixed time budget, in an order that rotates per
// round, so drift (CPU frequency, page cache, a neighbour's load) is spread
// over all of them; a full GC runs before each block so no contender pays
// for another's garbage. Medians and p90 are over every call of every round.
// Ratios are paired: the median over rounds of the ratio of the two
// contenders' medians within that round, so a burst of outside load that
// hits a few rounds moves them little. The load average is printed, and a
// busy machine is called out, since the numbers then mean less.
//
// Targets (measured, never asserted): at 1000 threads threads() within 1.3x
// of the floor and at least 2x faster than the Node reader.
//
// Knobs (environment): BENCH_COUNTS=10,100,1000  BENCH_ROUNDS=20
// BENCH_BUDGET_MS=100 (per contender per round; ps gets a third of it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { printColumns, summary } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const COUNTS = (process.env.BENCH_COUNTS ?? '10,100,1000').split(',').map(Number);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 20);
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 100);
const FIXTURE_NAME = 'bench-parked';

function fail(message) {
  console.error(`bench/snapshot: ${message}`);
  process.exit(1);
}

if (process.platform !== 'linux') {
  console.log(`bench/snapshot: skipped, the floor and the procfs readers are Linux-only (this is ${process.platform})`);
  process.exit(0);
}

// ---------------------------------------------------------------- set-up

function run(command, args, what) {
  console.log(`bench/snapshot: ${what}: ${command} ${args.join(' ')}`);
  const r = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  return r.status === 0;
}

async function loadThreads() {
  const entry = join(root, 'dist', 'index.js');
  if (!existsSync(entry)) fail('dist/index.js is missing: run `npm run compile` first');
  try {
    const mod = await import(pathToFileURL(entry).href);
    mod.threads(); // loads the addon
    return mod.threads;
  } catch (error) {
    fail(`threads() does not load (${error.message}): run \`npx node-gyp rebuild\` (or \`npm install\`) first`);
  }
}

function loadSpawner() {
  const path = join(root, 'test', 'fixtures', 'spawner', 'build', 'Release', 'spawner.node');
  if (!existsSync(path) && !run('npm', ['run', 'build:fixture'], 'building the spawner fixture')) {
    fail('could not build the spawner fixture: run `npm run build:fixture` and see its errors');
  }
  return createRequire(import.meta.url)(path);
}

function buildFloor() {
  const source = join(here, 'floor.cc');
  const out = join(here, 'build');
  const binary = join(out, 'floor');
  if (existsSync(binary) && statSync(binary).mtimeMs >= statSync(source).mtimeMs) return binary;
  mkdirSync(out, { recursive: true });
  if (!run('g++', ['-O2', '-std=c++17', '-o', binary, source], 'building the C++ floor')) {
    fail('could not compile bench/floor.cc: a C++17 compiler is needed as `g++`');
  }
  return binary;
}

const gc = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc');
})();

// ---------------------------------------------------------------- contenders

// (b) the pure-Node reader. Names are UTF-8 and may contain ')' and spaces.
const MS_PER_TICK = 1000 / 100; // CLK_TCK; only scales the numbers
function nodeReader() {
  const out = [];
  for (const tid of readdirSync('/proc/self/task')) {
    let line;
    try {
      line = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // exited mid-walk
    }
    const open = line.indexOf('(');
    const close = line.lastIndexOf(')');
    const fields = line.slice(close + 2).split(' '); // fields[0] is field 3
    out.push({
      id: Number(tid),
      name: line.slice(open + 1, close),
      rawState: fields[0],
      userCpuMs: Number(fields[11]) * MS_PER_TICK,
      systemCpuMs: Number(fields[12]) * MS_PER_TICK,
      startTicks: Number(fields[19]),
    });
  }
  return out;
}

// (c) ps. Default columns: PID SPID TTY TIME CMD.
function psReader() {
  const r = spawnSync('ps', ['-T', '-p', String(process.pid)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`ps failed: ${r.stderr || r.error}`);
  const lines = r.stdout.split('\n');
  const out = [];
  for (let i = 1; i < lines.length; i++) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s(.*)$/.exec(lines[i]);
    if (m) out.push({ pid: Number(m[1]), id: Number(m[2]), tty: m[3], time: m[4], name: m[5] });
  }
  return out;
}

// (a) the floor: one child process, `iterations` timed walks of our task dir.
function floorRun(binary, iterations, warmup = 3) {
  const r = spawnSync(binary, [String(process.pid), String(iterations), String(warmup)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`floor failed: ${r.stderr || r.error}`);
  const lines = r.stdout.trim().split('\n');
  const seen = Number(lines[0].split(' ')[1]);
  return { seen, ms: lines.slice(1).map((ns) => Number(ns) / 1e6) };
}

// ---------------------------------------------------------------- stats


function timeCalls(fn, calls, samples) {
  let last;
  for (let i = 0; i < calls; i++) {
    const t0 = process.hrtime.bigint();
    last = fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return last;
}

function estimateMs(fn, calls) {
  const samples = [];
  timeCalls(fn, calls, samples);
  return summary(samples).median;
}

function callsFor(msPerCall, budgetMs, min, max) {
  return Math.max(min, Math.min(max, Math.round(budgetMs / Math.max(msPerCall, 1e-3))));
}

// ---------------------------------------------------------------- one thread count

function benchAt(count, { threads, spawner, floor }) {
  const { handle, tids } = spawner.start({ count, name: FIXTURE_NAME });
  try {
    // Sanity: every contender sees the same process, fixture threads included.
    const mine = threads();
    const seen = {
      threads: mine.length,
      node: nodeReader().length,
      floor: floorRun(floor, 1, 0).seen,
      ps: psReader().length,
    };
    const named = mine.filter((t) => t.name === FIXTURE_NAME).length;
    if (named !== tids.length) throw new Error(`threads() saw ${named} of the ${tids.length} fixture threads`);
    for (const [who, n] of Object.entries(seen)) {
      if (Math.abs(n - seen.threads) > 2) throw new Error(`${who} saw ${n} threads, threads() saw ${seen.threads}`);
    }

    // Warm-up (JIT, caches, dentries), then size each contender's block.
    for (let i = 0; i < 20; i++) threads(), nodeReader();
    psReader();
    const est = {
      threads: estimateMs(threads, 15),
      node: estimateMs(nodeReader, 15),
      floor: summary(floorRun(floor, 15).ms).median,
      ps: estimateMs(psReader, 2),
    };
    const calls = {
      threads: callsFor(est.threads, BUDGET_MS, 5, 5000),
      node: callsFor(est.node, BUDGET_MS, 5, 5000),
      floor: callsFor(est.floor, BUDGET_MS, 5, 5000),
      ps: callsFor(est.ps, BUDGET_MS / 3, 1, 50),
    };

    // rounds[who][r]: the per-call times of `who` in round r.
    const rounds = { threads: [], floor: [], node: [], ps: [] };
    const blocks = {
      threads: (out) => timeCalls(threads, calls.threads, out),
      node: (out) => timeCalls(nodeReader, calls.node, out),
      floor: (out) => out.push(...floorRun(floor, calls.floor).ms),
      ps: (out) => timeCalls(psReader, calls.ps, out),
    };
    const order = Object.keys(blocks);
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < order.length; k++) {
        const who = order[(round + k) % order.length];
        const out = [];
        gc();
        blocks[who](out);
        rounds[who].push(out);
      }
    }
    const result = { count, seen: seen.threads, stats: {}, ratio: {} };
    for (const [who, r] of Object.entries(rounds)) result.stats[who] = summary(r.flat());
    // Paired ratio: median over rounds of (median of a in round r) / (median of b in round r).
    const pairedRatio = (a, b) =>
      summary(rounds[a].map((ra, r) => summary(ra).median / summary(rounds[b][r]).median)).median;
    result.ratio.threadsFloor = pairedRatio('threads', 'floor');
    result.ratio.nodeThreads = pairedRatio('node', 'threads');
    result.ratio.psThreads = pairedRatio('ps', 'threads');
    result.ratio.nodeFloor = pairedRatio('node', 'floor');
    return result;
  } finally {
    spawner.stop(handle);
  }
}

// ---------------------------------------------------------------- report

function fmtMs(ms) {
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  return `${(ms * 1000).toFixed(0)} µs`;
}

function printTable(results) {
  const cols = [
    ['fixture', (r) => String(r.count)],
    ['seen', (r) => String(r.seen)],
    ['threads() med / p90', (r) => `${fmtMs(r.stats.threads.median)} / ${fmtMs(r.stats.threads.p90)}`],
    ['floor (C++) med / p90', (r) => `${fmtMs(r.stats.floor.median)} / ${fmtMs(r.stats.floor.p90)}`],
    ['node reader med / p90', (r) => `${fmtMs(r.stats.node.median)} / ${fmtMs(r.stats.node.p90)}`],
    ['ps -T med / p90', (r) => `${fmtMs(r.stats.ps.median)} / ${fmtMs(r.stats.ps.p90)}`],
    ['threads()/floor', (r) => `${r.ratio.threadsFloor.toFixed(2)}x`],
    ['node/threads()', (r) => `${r.ratio.nodeThreads.toFixed(2)}x`],
    ['ps/threads()', (r) => `${r.ratio.psThreads.toFixed(1)}x`],
  ];
  printColumns(cols, results);
  console.log('(times per call over all rounds; ratios paired per round, see the top of bench/snapshot.js)');
  console.log();
  console.log('per thread (median / seen):');
  for (const r of results) {
    const per = (who) => `${((r.stats[who].median / r.seen) * 1000).toFixed(1)} µs`;
    console.log(`  ${String(r.count).padStart(5)}: threads() ${per('threads')}, floor ${per('floor')}, node ${per('node')}, ps ${per('ps')}`
      + `   [calls: threads() ${r.stats.threads.n}, floor ${r.stats.floor.n}, node ${r.stats.node.n}, ps ${r.stats.ps.n}]`);
  }
  const big = results.find((r) => r.count === 1000) ?? results.at(-1);
  const vsFloor = big.ratio.threadsFloor;
  const vsNode = big.ratio.nodeThreads;
  console.log();
  console.log(`targets at ${big.count} threads (measured, not asserted):`);
  console.log(`  threads() within 1.3x of the floor:        ${vsFloor.toFixed(2)}x  ${vsFloor <= 1.3 ? 'met' : 'MISSED'}`);
  console.log(`  threads() at least 2x faster than node:     ${vsNode.toFixed(2)}x  ${vsNode >= 2 ? 'met' : 'MISSED'}`);
  console.log(`  (node/floor is ${big.ratio.nodeFloor.toFixed(2)}x; the floor opens each stat afresh, threads() re-reads the fds it keeps: see native/linux/threads_linux.cc)`);
}

// ---------------------------------------------------------------- main

// Before the run the load is other work's; after it, it includes this bench (~1 core).
function loadNote(before) {
  const [one] = loadavg();
  const cores = cpus().length;
  const busy = before && one > cores / 2 ? ' (BUSY: other work competes for the CPUs, expect noise)' : '';
  return `load average ${one.toFixed(2)} on ${cores} cores${busy}`;
}

const threads = await loadThreads();
const spawner = loadSpawner();
const floor = buildFloor();
const started = Date.now();
console.log(`bench/snapshot: node ${process.version}, pid ${process.pid}, ${ROUNDS} rounds of ~${BUDGET_MS} ms per contender, fixture counts ${COUNTS.join(', ')}`);
console.log(`  before: ${loadNote(true)}`);
const results = [];
try {
  for (const count of COUNTS) {
    results.push(benchAt(count, { threads, spawner, floor })); // stops its fixture threads, even on error
    console.log(`  ${count} fixture threads done (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
} catch (error) {
  // Not process.exit() while fixture threads might still be parked: benchAt's
  // finally has already stopped them, and the error ends the run normally.
  fail(error.message);
}
console.log(`  after: ${loadNote(false)}`);
console.log();
printTable(results);
console.log(`\n(${((Date.now() - started) / 1000).toFixed(1)} s)`);
