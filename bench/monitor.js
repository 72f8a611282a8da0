// bench/monitor.js — what monitorThreads() costs, against a plain threads()
// call, in one run, at 10, 100 and 1000 parked native threads (the test
// fixture, test/fixtures/spawner) on top of Node's own.
//
//   threads()   a loop of calls: CPU time per call (process.cpuUsage, user +
//               system, over the loop; the loop is all the process does).
//   sample      monitorThreads({ intervalMs: 10 }) for a fixed window: the
//               process's CPU time in the window, minus what the same process
//               spends in a window of the same length without a monitor (its
//               idle cost, measured in the same round), divided by the samples
//               taken. A sample is a snapshot, the comparison with the previous
//               one by key, each thread's CPU %, the headroom (Linux) and the
//               threadpool probe.
//   at 1 s      then, at 100 fixture threads, what a monitor left running with
//               the default intervalMs: 1000 costs, in % of one core (target
//               below 0.1 %, measured, never asserted), against threads()
//               called once a second: one window of SHARE_WINDOW_MS each, and
//               one idle window, whose CPU is subtracted from both. A sample
//               taken once a second costs more than one in a tight series: the
//               caches are cold again by then, the kernel's too.
//
// Rounds alternate the contenders so drift hits both; medians over rounds.
// Knobs (environment): BENCH_COUNTS=10,100,1000  BENCH_ROUNDS=5  BENCH_WINDOW_MS=1000
// BENCH_SHARE_WINDOW_MS=10000
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { printColumns, summary } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const COUNTS = (process.env.BENCH_COUNTS ?? '10,100,1000').split(',').map(Number);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 1000);
const SHARE_WINDOW_MS = Number(process.env.BENCH_SHARE_WINDOW_MS ?? 10_000);
const SAMPLE_INTERVAL_MS = 10;

function fail(message) {
  console.error(`bench/monitor: ${message}`);
  process.exit(1);
}

const entry = join(root, 'dist', 'index.js');
if (!existsSync(entry)) fail('dist/index.js is missing: run `npm run compile` first');
const { monitorThreads, threads } = await import(pathToFileURL(entry).href);
const spawnerPath = [
  join(root, 'test', 'fixtures', 'spawner', 'build', 'Release', 'spawner.node'),
  join(root, 'test', 'fixtures', 'spawner', 'prebuilds', `${process.platform}-${process.arch}`, 'spawner.node'),
].find(existsSync);
if (!spawnerPath) fail('the spawner fixture is not built: run `npm run build:fixture` first');
const spawner = createRequire(import.meta.url)(spawnerPath);

const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU ms per threads() call, over a loop of about WINDOW_MS / 4. */
function threadsCall() {
  const start = performance.now();
  const cpu0 = cpuMs();
  let calls = 0;
  while (performance.now() - start < WINDOW_MS / 4) {
    threads();
    calls++;
  }
  return (cpuMs() - cpu0) / calls;
}

/** CPU ms the process spends in a window with nothing to do. */
async function idleWindow(windowMs = WINDOW_MS) {
  const cpu0 = cpuMs();
  await sleep(windowMs);
  return cpuMs() - cpu0;
}

/** CPU ms and samples of a window with a monitor sampling every `intervalMs`. */
async function monitorWindow(intervalMs = SAMPLE_INTERVAL_MS, windowMs = WINDOW_MS) {
  let samples = 0;
  const monitor = monitorThreads({ intervalMs, onSample: () => samples++ });
  const cpu0 = cpuMs();
  const taken0 = samples;
  await sleep(windowMs);
  const cpu = cpuMs() - cpu0;
  monitor.stop();
  return { cpu, samples: samples - taken0 };
}

console.log(
  `bench/monitor: Node ${process.version}, ${process.platform}-${process.arch}, load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}, ${ROUNDS} rounds of ${WINDOW_MS} ms windows`,
);
const results = [];
for (const count of COUNTS) {
  const { handle } = spawner.start({ count, name: 'bench-parked' });
  try {
    threadsCall(); // warm-up: the addon, the fd cache, the JIT
    await monitorWindow(); // warm-up of the monitor
    const callMs = [];
    const sampleMs = [];
    for (let round = 0; round < ROUNDS; round++) {
      const idle = await idleWindow();
      const watched = await monitorWindow();
      callMs.push(threadsCall());
      if (watched.samples > 0) sampleMs.push(Math.max(0, watched.cpu - idle) / watched.samples);
    }
    const call = summary(callMs).median;
    const sample = summary(sampleMs).median;
    results.push({ threads: threads().length, call, sample });
  } finally {
    spawner.stop(handle);
  }
}

printColumns(
  [
    ['threads', (r) => String(r.threads)],
    ['threads() ms', (r) => r.call.toFixed(3)],
    ['one sample ms', (r) => r.sample.toFixed(3)],
    ['sample / threads()', (r) => `${(r.sample / r.call).toFixed(2)}x`],
  ],
  results,
);

// ------------------------------------------- a monitor left running, once a second

/** CPU ms of a window in which threads() is called once a second. */
async function threadsEverySecondWindow(windowMs) {
  const timer = setInterval(() => threads(), 1000);
  const cpu0 = cpuMs();
  await sleep(windowMs);
  const cpu = cpuMs() - cpu0;
  clearInterval(timer);
  return cpu;
}

const { handle } = spawner.start({ count: 100, name: 'bench-parked' });
try {
  const idle = await idleWindow(SHARE_WINDOW_MS);
  const watched = await monitorWindow(1000, SHARE_WINDOW_MS);
  const polled = await threadsEverySecondWindow(SHARE_WINDOW_MS);
  const share = (cpu) => `${((Math.max(0, cpu - idle) / SHARE_WINDOW_MS) * 100).toFixed(4)} % of a core`;
  console.log(`\nat 1 s, ${threads().length} threads, ${SHARE_WINDOW_MS / 1000} s windows (idle process: ${share(2 * idle)}):`);
  printColumns(
    [
      ['contender', (r) => r.name],
      ['CPU', (r) => r.share],
      ['per call or sample ms', (r) => r.each],
    ],
    [
      { name: 'monitorThreads({ intervalMs: 1000 })', share: share(watched.cpu), each: (Math.max(0, watched.cpu - idle) / watched.samples).toFixed(3) },
      { name: 'threads() once a second', share: share(polled), each: (Math.max(0, polled - idle) / (SHARE_WINDOW_MS / 1000)).toFixed(3) },
    ],
  );
} finally {
  spawner.stop(handle);
}
