// bench/blocking.js — what noEventLoopBlocking() costs a busy event loop, and
// how soon after a block starts its stack is read, in one run.
//
//   setImmediate   a chain of setImmediate callbacks for a fixed window:
//                  callbacks per second with no scope, and with an open scope
//                  (threshold 200 ms, so nothing blocks): the ratio is the
//                  throughput kept (target >= 98 %, measured, never asserted).
//   http           an HTTP server on 127.0.0.1 and a client in the same
//                  process that keeps CONCURRENCY requests in flight for the
//                  window: requests per second, without and with a scope.
//   capture        a busy loop of BLOCK_MS in a scope with threshold T: the
//                  time from the block's start to the first look at it (the
//                  sample's `at` minus the block's start, both wall clock):
//                  median and p90 (target: median <= T + 20 ms).
//
// Rounds alternate "without" and "with" so drift hits both; medians over rounds.
// Knobs (environment): BENCH_ROUNDS=9  BENCH_WINDOW_MS=1000  BENCH_THRESHOLD_MS=100
import { existsSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { printColumns, summary } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const entry = join(here, '..', 'dist', 'index.js');
if (!existsSync(entry)) {
  console.error('bench/blocking: dist/index.js is missing: run `npm run compile` first');
  process.exit(1);
}
const { noEventLoopBlocking } = await import(pathToFileURL(entry).href);

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 1000);
const THRESHOLD_MS = Number(process.env.BENCH_THRESHOLD_MS ?? 100);
const BLOCK_MS = THRESHOLD_MS * 3;
const CONCURRENCY = 8;

/** setImmediate callbacks run in `ms`. */
function immediateChain(ms) {
  return new Promise((resolve) => {
    let count = 0;
    const end = performance.now() + ms;
    const step = () => {
      count++;
      if (performance.now() < end) setImmediate(step);
      else resolve(count / (ms / 1000));
    };
    setImmediate(step);
  });
}

/** Requests per second answered by `server` at `port` in `ms`, CONCURRENCY at a time. */
function httpLoad(port, ms) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const end = performance.now() + ms;
  let done = 0;
  const one = () =>
    new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      }).on('error', reject);
    });
  const worker = async () => {
    while (performance.now() < end) {
      await one();
      done++;
    }
  };
  return Promise.all(Array.from({ length: CONCURRENCY }, worker)).then(() => {
    agent.destroy();
    return done / (ms / 1000);
  });
}

async function withScope(run) {
  const scope = noEventLoopBlocking({ action: 'log', thresholdMs: 200, logger: { warn() {} } });
  try {
    return await run();
  } finally {
    await scope.close();
  }
}

function busy(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** ms from a block's start to the first look at it. */
async function captureDelay() {
  const scope = noEventLoopBlocking({ action: 'raise', thresholdMs: THRESHOLD_MS });
  await new Promise((resolve) => setTimeout(resolve, 20));
  const startedAt = performance.timeOrigin + performance.now();
  busy(BLOCK_MS);
  try {
    await scope.close();
  } catch (error) {
    const first = error.blocks?.[0]?.samples?.[0];
    if (first) return first.at - startedAt;
  }
  return Number.NaN;
}

const server = http.createServer((req, res) => res.end('ok'));
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();

const results = { immediate: { without: [], with: [] }, http: { without: [], with: [] }, capture: [] };
// A first scope starts the watchdog (its Worker and inspector session): not part of what is measured.
await withScope(() => immediateChain(50));
for (let round = 0; round < ROUNDS; round++) {
  results.immediate.without.push(await immediateChain(WINDOW_MS));
  results.immediate.with.push(await withScope(() => immediateChain(WINDOW_MS)));
  results.http.without.push(await httpLoad(port, WINDOW_MS));
  results.http.with.push(await withScope(() => httpLoad(port, WINDOW_MS)));
  results.capture.push(await captureDelay());
}
server.close();

const rows = ['immediate', 'http'].map((name) => {
  const without = summary(results[name].without).median;
  const withScopeMedian = summary(results[name].with).median;
  return { name, without, with: withScopeMedian, kept: withScopeMedian / without };
});
console.log(`bench/blocking: Node ${process.version}, ${ROUNDS} rounds of ${WINDOW_MS} ms, medians`);
printColumns(
  [
    ['loop', (r) => r.name],
    ['per s, no scope', (r) => r.without.toFixed(0)],
    ['per s, in a scope', (r) => r.with.toFixed(0)],
    ['kept', (r) => `${(r.kept * 100).toFixed(1)} %`],
  ],
  rows,
);
const capture = summary(results.capture.filter((d) => Number.isFinite(d)));
console.log(
  `\ncapture: a ${BLOCK_MS} ms busy loop at threshold ${THRESHOLD_MS} ms: first look ${capture.median.toFixed(1)} ms ` +
    `after the block began (median; p90 ${capture.p90.toFixed(1)} ms; ${capture.n} of ${results.capture.length} blocks looked at); ` +
    `target <= ${THRESHOLD_MS + 20} ms`,
);
