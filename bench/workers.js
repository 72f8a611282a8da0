// bench/workers.js — what threadleak adds to `new Worker()` in a process with
// many native threads alive (issue 8, item 5: importing the package used to
// walk /proc once per Worker).
//
// Each variant runs in its own process, with THREADS fixture threads started
// first; a round starts WORKERS Workers, waits until every one is online and
// terminates them all. Reported: the median round, and its ratio to plain
// Node (no threadleak at all) measured in the same run.
//   plain     no threadleak
//   imported  threadleak imported (a user of LeakTracker, or of the types)
//   scope     each round inside noThreadLeaks() ... close(): the Workers are
//             matched to OS threads at close(), while still alive (leaks
//             reported to a no-op logger), which is the cost a scope pays
// THREADLEAK_BENCH_BEFORE=<dir>: also the imported and scope variants with
// another build of dist/ (an older commit), in the same run: before/after.
// The variants' processes are interleaved, PASSES times in rotating order, so
// that a change in the machine's load is spread over all of them.
// Run: npm run compile && npm run build:fixture && node bench/workers.js
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { printColumns, summary } from './lib/stats.js';

const THREADS = 2000;
const WORKERS = 20;
const ROUNDS = 4;
const PASSES = 5;
const BEFORE = process.env.THREADLEAK_BENCH_BEFORE;
const VARIANTS = ['plain', 'imported', 'scope', ...(BEFORE ? ['imported (before)', 'scope (before)'] : [])];

async function child(variant, dist) {
  const require = createRequire(import.meta.url);
  const spawner = require('../test/fixtures/spawner/build/Release/spawner.node');
  const { Worker } = await import('node:worker_threads');
  const { handle } = spawner.start({ count: THREADS, name: 'bench-native' });
  const threadleak = variant === 'plain' ? undefined : await import(pathToFileURL(resolve(dist, 'index.js')).href);
  const logger = { warn() {} };
  const samples = [];
  for (let round = 0; round < ROUNDS + 1; round++) {
    const start = performance.now();
    const scope = variant.startsWith('scope') ? threadleak.noThreadLeaks({ action: 'log', logger, gracePeriodMs: 0 }) : undefined;
    const workers = Array.from({ length: WORKERS }, () => new Worker('setInterval(() => {}, 1000)', { eval: true }));
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
    await scope?.close();
    await Promise.all(workers.map((w) => w.terminate()));
    if (round > 0) samples.push(performance.now() - start); // round 0 warms up
  }
  spawner.stop(handle);
  process.stdout.write(JSON.stringify(samples));
}

if (process.argv[2]) {
  await child(process.argv[2], process.argv[3]);
} else {
  const samples = new Map(VARIANTS.map((v) => [v, []]));
  const current = fileURLToPath(new URL('../dist', import.meta.url));
  for (let pass = 0; pass < PASSES; pass++) {
    // Each pass starts with another variant: none is always first after a pause.
    for (const variant of [...VARIANTS.slice(pass % VARIANTS.length), ...VARIANTS.slice(0, pass % VARIANTS.length)]) {
      const dist = variant.endsWith('(before)') ? BEFORE : current;
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), variant, dist], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (r.status !== 0) throw new Error(`bench/workers: variant ${variant} failed (${r.status ?? r.signal})`);
      samples.get(variant).push(...JSON.parse(r.stdout));
    }
  }
  const results = VARIANTS.map((variant) => ({ variant, ...summary(samples.get(variant)) }));
  const plain = results[0].median;
  console.log(`bench/workers — ${process.version}, ${WORKERS} Workers started, online and terminated per round, ${THREADS} native threads alive, ${PASSES} x ${ROUNDS} rounds`);
  if (BEFORE) console.log(`before: ${BEFORE}`);
  console.log('');
  printColumns(
    [
      ['variant', (r) => r.variant],
      ['median', (r) => `${r.median.toFixed(0)} ms`],
      ['p90', (r) => `${r.p90.toFixed(0)} ms`],
      ['vs plain Node', (r) => `${(r.median / plain).toFixed(2)}x`],
    ],
    results,
  );
}
