// bench/snapshot-win32.js — what threads() costs on Windows, against a
// Toolhelp32 + OpenThread + GetThreadTimes reader, in one run, at 10, 100 and
// 1000 parked native threads (bench/parked_win32.c) on top of Node's own.
//
//   nt        the addon's normal reader: one NtQuerySystemInformation call,
//             then OpenThread + GetThreadDescription per thread for names.
//   toolhelp  the addon's fallback reader (THREADLEAK_WIN32_TOOLHELP=1):
//             CreateToolhelp32Snapshot, then OpenThread + GetThreadTimes +
//             GetThreadDescription per thread. The baseline.
//
// The switch is read once per process, so both readers run in child
// processes that list this (parent) process, which waits in spawnSync with
// its threads parked: the same threads for both, and the same work (another
// process's threads) for both. Rounds alternate which reader goes first. The
// parent also times threads() on itself (the public API, NT reader) for the
// absolute cost. Ratios are paired: the median over rounds of nt/toolhelp.
// Measured, never asserted.
//
// Run on Windows: `node bench/snapshot-win32.js` (after the addon and
// bench/build/win32-x64/parked.node are built). On Linux the same command
// cross-builds parked.node with mingw-w64 and runs itself under wine with
// BENCH_NODE_EXE (default: the Node 22 node.exe and the wine prefix that
// scripts/test-wine.sh caches in .cache/wine/; run `npm run test:wine -- 22` once first), output in
// bench/build/snapshot-win32.txt.
// Knobs: BENCH_COUNTS=10,100,1000  BENCH_ROUNDS=5  BENCH_BUDGET_MS=300.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { printColumns, summary } from './lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const require = createRequire(import.meta.url);
const parkedPath = join(here, 'build', 'win32-x64', 'parked.node');
const COUNTS = (process.env.BENCH_COUNTS ?? '10,100,1000').split(',').map(Number);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BUDGET_MS = Number(process.env.BENCH_BUDGET_MS ?? 300);

function fail(message) {
  console.error(`bench/snapshot-win32: ${message}`);
  process.exit(1);
}

// ------------------------------------------------------------- on Linux

function buildAndRunUnderWine() {
  const addon = join(root, 'prebuilds', 'win32-x64', 'threadleak.node');
  const importLibrary = join(root, '.cache', 'win32-x64', 'libnode_api.mingw.a');
  if (!existsSync(addon) || !existsSync(importLibrary)) {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'prebuild.js'), '--only', 'win32-x64'], { stdio: 'inherit' });
    if (r.status !== 0) fail('could not cross-build the addon: node scripts/prebuild.js --only win32-x64');
  }
  mkdirSync(dirname(parkedPath), { recursive: true });
  const headers = join(dirname(require.resolve('node-api-headers/package.json')), 'include');
  const cc = spawnSync('x86_64-w64-mingw32-gcc-posix', [
    '-O2', '-Wall', '-Wextra', '-Werror', '-DNAPI_VERSION=8', '-shared', '-static', '-s',
    `-I${headers}`, '-o', parkedPath, join(here, 'parked_win32.c'), importLibrary,
  ], { stdio: 'inherit' });
  if (cc.status !== 0) fail('could not build bench/parked_win32.c with x86_64-w64-mingw32-gcc-posix');
  const nodeExe = process.env.BENCH_NODE_EXE ?? join(root, '.cache', 'wine', 'node', '22', 'node.exe');
  if (!existsSync(nodeExe)) fail(`no Windows node.exe at ${nodeExe} (run \`npm run test:wine -- 22\` once, or set BENCH_NODE_EXE)`);
  const out = join(here, 'build', 'snapshot-win32.txt');
  // node.exe under wine dies on a pipe for stdout: write to a file.
  const r = spawnSync('sh', ['-c', `"$WINE" "$NODE_EXE" "$SCRIPT" > "$OUT" 2>&1`], {
    stdio: 'inherit',
    env: {
      ...process.env,
      WINE: process.env.WINE ?? '/usr/lib/wine/wine64',
      WINEDEBUG: '-all',
      WINEPREFIX: process.env.WINEPREFIX ?? join(root, '.cache', 'wine', 'prefix'),
      WINEDLLOVERRIDES: 'bcryptprimitives=n,b',
      PREBUILDS_ONLY: '1', // build/Release holds the Linux addon: node-gyp-build must not pick it
      NODE_EXE: nodeExe,
      SCRIPT: fileURLToPath(import.meta.url),
      OUT: out,
    },
  });
  process.stdout.write(readFileSync(out, 'utf8'));
  process.exit(r.status ?? 1);
}

// ------------------------------------------------------------- on Windows

// A child that times listThreads(pid) for `budgetMs` and writes the samples.
const CHILD = `
  const addon = require('node-gyp-build')(process.env.BENCH_ROOT);
  const pid = Number(process.env.BENCH_PID);
  const decode = (r) => {
    const s = r.text.split('\\0');
    const out = [];
    for (let i = 0; i < r.numbers.length / 4; i++) out.push({ id: r.numbers[i * 4], name: s[i * 3], key: s[i * 3 + 2] });
    return out;
  };
  for (let i = 0; i < 3; i++) decode(addon.listThreads(pid)); // warm-up
  const ms = [];
  let seen = 0;
  const end = performance.now() + Number(process.env.BENCH_BUDGET_MS);
  while (performance.now() < end || ms.length < 3) {
    const t0 = performance.now();
    const r = addon.listThreads(pid);
    if (r.error) throw new Error(r.error.message);
    seen = decode(r).length;
    ms.push(performance.now() - t0);
  }
  require('node:fs').writeFileSync(process.env.BENCH_OUT, JSON.stringify({ seen, ms }));
`;

function childRun(reader, dir) {
  const out = join(dir, `${reader}.json`);
  const env = { ...process.env, BENCH_ROOT: root, BENCH_PID: String(process.pid), BENCH_BUDGET_MS: String(BUDGET_MS), BENCH_OUT: out };
  if (reader === 'toolhelp') env.THREADLEAK_WIN32_TOOLHELP = '1';
  else delete env.THREADLEAK_WIN32_TOOLHELP;
  const r = spawnSync(process.execPath, ['-e', CHILD], { env, stdio: 'ignore', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`the ${reader} child failed (${r.status ?? r.error})`);
  return JSON.parse(readFileSync(out, 'utf8'));
}

function timeSelf(threads) {
  const ms = [];
  const end = performance.now() + BUDGET_MS;
  while (performance.now() < end || ms.length < 3) {
    const t0 = performance.now();
    threads();
    ms.push(performance.now() - t0);
  }
  return ms;
}

async function runOnWindows() {
  if (!existsSync(parkedPath)) fail(`${parkedPath} is missing: build it (see the top of this file)`);
  const parked = require(parkedPath);
  const { threads } = require(join(root, 'dist', 'index.js'));
  const dir = mkdtempSync(join(tmpdir(), 'threadleak-bench-'));
  const results = [];
  try {
    for (const count of COUNTS) {
      const handle = parked.start(count);
      try {
        for (let i = 0; i < 3; i++) threads(); // warm-up
        const samples = { self: [], nt: [], toolhelp: [] };
        const ratios = [];
        let seen = { self: 0, nt: 0, toolhelp: 0 };
        for (let round = 0; round < ROUNDS; round++) {
          const order = round % 2 === 0 ? ['nt', 'toolhelp'] : ['toolhelp', 'nt'];
          const medians = {};
          for (const reader of order) {
            const { seen: n, ms } = childRun(reader, dir);
            samples[reader].push(...ms);
            seen[reader] = n;
            medians[reader] = summary(ms).median;
          }
          ratios.push(medians.nt / medians.toolhelp);
          samples.self.push(...timeSelf(threads));
          seen.self = threads().length;
        }
        results.push({ count, seen, ratio: summary(ratios).median, stats: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summary(v)])) });
      } finally {
        if (!parked.stop(handle)) console.error(`bench/snapshot-win32: the ${count} parked threads did not all end`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const f = (x) => x.toFixed(3);
  console.log(`bench/snapshot-win32: Node ${process.version}, ${ROUNDS} rounds, ${BUDGET_MS} ms per reader per round; ms per call`);
  printColumns([
    ['parked', (r) => String(r.count)],
    ['threads seen', (r) => `${r.seen.nt}/${r.seen.toolhelp}/${r.seen.self}`],
    ['nt median', (r) => f(r.stats.nt.median)],
    ['nt p90', (r) => f(r.stats.nt.p90)],
    ['toolhelp median', (r) => f(r.stats.toolhelp.median)],
    ['toolhelp p90', (r) => f(r.stats.toolhelp.p90)],
    ['nt/toolhelp', (r) => r.ratio.toFixed(2)],
    ['threads() self median', (r) => f(r.stats.self.median)],
  ], results);
  console.log('threads seen: nt child / toolhelp child / threads() in this process');
}

if (process.platform === 'linux') buildAndRunUnderWine();
else if (process.platform === 'win32') await runOnWindows();
else console.log(`bench/snapshot-win32: skipped, Windows only (this is ${process.platform})`);
