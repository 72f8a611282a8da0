// bench/scope.js — what a leak scope costs, against pyleak's fixed sleep.
//
// 1. A clean scope (enter + exit, nothing started): median per scope, async
//    (`await scope.close()`) and sync (`scope[Symbol.dispose]()`).
// 2. Verdict latency: a fixture thread started in the scope ends while the
//    scope waits (grace period 1 s); the time from its join to close()
//    resolving. pyleak always sleeps its grace period (100 ms by default) once
//    any thread is new; the ratio column is that fixed 100 ms over ours.
// Run: npm run compile && npm run build:fixture && node bench/scope.js
import { createRequire } from 'node:module';
import { noThreadLeaks, threads } from '../dist/index.js';
import { summary } from './lib/stats.js';

const require = createRequire(import.meta.url);
const spawner = require('../test/fixtures/spawner/build/Release/spawner.node');

const PYLEAK_SLEEP_MS = 100;


async function cleanScopes(count, sync) {
  const samples = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    const scope = noThreadLeaks({ action: 'raise' });
    if (sync) scope[Symbol.dispose]();
    else await scope.close();
    samples.push(performance.now() - start);
  }
  return summary(samples);
}

async function verdictLatency(rounds) {
  const samples = [];
  for (let i = 0; i < rounds; i++) {
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 1000 });
    const { handle } = spawner.start({ count: 1, name: 'bench-late' });
    let joinedAt = 0;
    setTimeout(() => {
      spawner.stop(handle); // returns once the thread has exited
      joinedAt = performance.now();
    }, 5 + (i % 7));
    await scope.close();
    samples.push(performance.now() - joinedAt);
  }
  return summary(samples);
}

// 3. What stack capture adds to a report: close() of a scope in which `leaked`
//    fixture threads are still alive (grace 0, action 'log' to a no-op logger),
//    with captureStacks on and off.
async function reportCost(leaked, captureStacks, rounds) {
  const samples = [];
  const logger = { warn() {} };
  for (let i = 0; i < rounds; i++) {
    const scope = noThreadLeaks({ action: 'log', logger, gracePeriodMs: 0, captureStacks });
    const { handle } = spawner.start({ count: leaked, name: 'bench-leak' });
    const start = performance.now();
    await scope.close();
    samples.push(performance.now() - start);
    spawner.stop(handle);
  }
  return summary(samples);
}

const fmt = (ms) => `${ms.toFixed(3)} ms`;

await cleanScopes(200, false); // warm up: pre-warm, JIT
await cleanScopes(200, true);
const live = threads().length;
const asyncClean = await cleanScopes(2000, false);
const syncClean = await cleanScopes(2000, true);
const latency = await verdictLatency(60);
await reportCost(10, true, 20); // warm up the unwinder and the symbol cache
const reports = [];
for (const leaked of [1, 10]) {
  reports.push([leaked, await reportCost(leaked, true, 100), await reportCost(leaked, false, 100)]);
}

console.log(`bench/scope — ${process.version}, ${live} threads alive`);
console.log('');
console.log('| measure                              | median     | p90        | vs pyleak (100 ms sleep) |');
console.log('|--------------------------------------|------------|------------|--------------------------|');
const row = (name, s, ratio) =>
  console.log(`| ${name.padEnd(36)} | ${fmt(s.median).padStart(10)} | ${fmt(s.p90).padStart(10)} | ${ratio.padStart(24)} |`);
row('clean scope, await close()', asyncClean, `${(PYLEAK_SLEEP_MS / asyncClean.median).toFixed(0)}x less`);
row('clean scope, using (sync)', syncClean, `${(PYLEAK_SLEEP_MS / syncClean.median).toFixed(0)}x less`);
row('verdict after the last thread ends', latency, `${(PYLEAK_SLEEP_MS / latency.median).toFixed(0)}x sooner`);
console.log('');
console.log('| leaked threads | report with stacks | report without | stacks cost        |');
console.log('|----------------|--------------------|----------------|--------------------|');
for (const [leaked, withStacks, without] of reports) {
  const extra = (withStacks.median - without.median) / leaked;
  console.log(
    `| ${String(leaked).padStart(14)} | ${fmt(withStacks.median).padStart(18)} | ${fmt(without.median).padStart(14)} | ${`${(withStacks.median / without.median).toFixed(1)}x, ${(extra * 1000).toFixed(0)} µs/thread`.padStart(18)} |`,
  );
}
console.log('');
console.log('targets: clean scope <= 0.5 ms median at ~12 threads; verdict <= 5 ms after the thread ends');
