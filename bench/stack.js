// bench/stack.js — what threadStack() costs per capture, with 10 and 100
// parked fixture threads alive, against a threads() snapshot taken in the
// same run (the yardstick: a leak report pays for one snapshot per check and
// one capture per leaked thread).
//
//   probe      threadStack(tid) of a parked fixture thread: status read, the
//              real-time signal round trip, unwinding in the target, symbols
//              (cached after the first capture of the same addresses).
//   blocked    threadStack(tid) of a fixture thread that blocks every signal:
//              no signal; PC and SP from procfs, a 64 KiB stack scan, symbols.
//   self       threadStack(process.pid) from the main thread: unwound directly.
//   threads()  one snapshot of every thread of this process.
//
// Fairness: everything is warmed up at each thread count; then rounds run
// each contender for a fixed time budget in an order that rotates per round,
// with a full GC before each block. Medians and p90 are over every call.
// The first capture of the process (installing the probe, cold symbol cache)
// is timed once and shown apart.
//
// Knobs (environment): BENCH_COUNTS=10,100  BENCH_ROUNDS=10  BENCH_BUDGET_MS=100
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { printColumns, summary } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const COUNTS = (process.env.BENCH_COUNTS ?? '10,100').split(',').map(Number);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10);
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 100);

function fail(message) {
  console.error(`bench/stack: ${message}`);
  process.exit(1);
}

// Windows has native stacks too, but this bench parks its threads with the
// Linux spawner fixture (pthreads, a signal-blocking thread); a win32 run
// needs the Windows fixture (test/fixtures/spawner/spawner_win32.cc).
if (process.platform !== 'linux') {
  console.log(`bench/stack: skipped, it needs the Linux spawner fixture (this is ${process.platform})`);
  process.exit(0);
}

async function loadLibrary() {
  const entry = join(root, 'dist', 'index.js');
  if (!existsSync(entry)) fail('dist/index.js is missing: run `npm run compile` first');
  const mod = await import(pathToFileURL(entry).href);
  if (typeof mod.threadStack !== 'function') fail('dist/index.js has no threadStack(): run `npm run compile` again');
  try {
    mod.threads(); // loads the addon
  } catch (error) {
    fail(`the addon does not load (${error.message}): run \`npx node-gyp rebuild\` first`);
  }
  return mod;
}

function loadSpawner() {
  const path = join(root, 'test', 'fixtures', 'spawner', 'build', 'Release', 'spawner.node');
  if (!existsSync(path)) {
    console.log('bench/stack: building the spawner fixture: npm run build:fixture');
    const r = spawnSync('npm', ['run', 'build:fixture'], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) fail('could not build the spawner fixture: run `npm run build:fixture` and see its errors');
  }
  return { spawner: createRequire(import.meta.url)(path), path: realpathSync(path) };
}

const gc = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc');
})();


/** Calls fn until budgetMs has passed, pushing each call's µs into samples. */
function timeBlock(fn, budgetMs, samples) {
  const end = performance.now() + budgetMs;
  do {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e3);
  } while (performance.now() < end);
}

function benchAt(count, { lib, spawner, spawnerModule }) {
  const parked = spawner.start({ count, name: 'bench-stack' });
  const blocked = spawner.start({ count: 1, name: 'bench-blocked', blockSignals: true });
  try {
    // Sanity: the probe reaches every fixture thread and names its creator.
    for (const tid of parked.tids) {
      const s = lib.threadStack(tid);
      if (s.error || s.module !== spawnerModule || s.startRoutine !== 'spawner_thread_main') {
        fail(`thread ${tid}: unexpected stack ${JSON.stringify({ error: s.error, module: s.module, startRoutine: s.startRoutine })}`);
      }
    }
    const b = lib.threadStack(blocked.tids[0]);
    if (!b.error || b.module !== spawnerModule) fail(`the signal-blocking thread gave ${JSON.stringify({ error: b.error, module: b.module })}`);

    let next = 0;
    const contenders = {
      probe: () => lib.threadStack(parked.tids[next++ % parked.tids.length]),
      blocked: () => lib.threadStack(blocked.tids[0]),
      self: () => lib.threadStack(process.pid),
      threads: () => lib.threads(),
    };
    for (const fn of Object.values(contenders)) for (let i = 0; i < 50; i++) fn();

    const samples = Object.fromEntries(Object.keys(contenders).map((k) => [k, []]));
    const order = Object.keys(contenders);
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < order.length; k++) {
        const who = order[(round + k) % order.length];
        gc();
        timeBlock(contenders[who], BUDGET_MS, samples[who]);
      }
    }
    return { count, seen: lib.threads().length, stats: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summary(v)])) };
  } finally {
    spawner.stop(parked.handle);
    spawner.stop(blocked.handle);
  }
}

function printTable(results) {
  const us = (v) => (v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(1)} µs`);
  const both = (s) => `${us(s.median)} / ${us(s.p90)}`;
  const cols = [
    ['fixture', (r) => String(r.count)],
    ['threads', (r) => String(r.seen)],
    ['probe med / p90', (r) => both(r.stats.probe)],
    ['blocked med / p90', (r) => both(r.stats.blocked)],
    ['self med / p90', (r) => both(r.stats.self)],
    ['threads() med / p90', (r) => both(r.stats.threads)],
    ['probe/threads()', (r) => `${(r.stats.probe.median / r.stats.threads.median).toFixed(2)}x`],
    ['blocked/threads()', (r) => `${(r.stats.blocked.median / r.stats.threads.median).toFixed(2)}x`],
  ];
  printColumns(cols, results);
  console.log();
  for (const r of results) {
    const n = Object.entries(r.stats).map(([k, s]) => `${k} ${s.n}`).join(', ');
    console.log(`  calls at ${r.count}: ${n}`);
  }
}

const lib = await loadLibrary();
const { spawner, path: spawnerModule } = loadSpawner();
const started = Date.now();
console.log(`bench/stack: node ${process.version}, pid ${process.pid}, ${ROUNDS} rounds of ~${BUDGET_MS} ms per contender, fixture counts ${COUNTS.join(', ')}`);

// The first capture of the process: installs the probe and fills the symbol cache.
{
  const first = spawner.start({ count: 1, name: 'bench-first' });
  const t0 = process.hrtime.bigint();
  const s = lib.threadStack(first.tids[0]);
  const firstUs = Number(process.hrtime.bigint() - t0) / 1e3;
  spawner.stop(first.handle);
  if (s.error) fail(`the first capture failed: ${s.error}`);
  console.log(`  first capture of the process (install + cold symbols): ${(firstUs / 1000).toFixed(2)} ms`);
}

const results = [];
for (const count of COUNTS) {
  results.push(benchAt(count, { lib, spawner, spawnerModule }));
  console.log(`  ${count} fixture threads done (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
console.log();
printTable(results);
console.log(`\n(${((Date.now() - started) / 1000).toFixed(1)} s)`);
