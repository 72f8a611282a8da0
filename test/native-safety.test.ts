// Process-level hazards of the native addon: what a crash, a hang or a stolen
// resource would look like from the host's side. Each scenario that could
// kill or hang a process runs in a child process of its own, with a timeout.
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { threads } from '../src/index.js';
import { isWine, runNode, spawner, spawnerPath } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// Worker start-up and termination are slow on some majors (Node 22 took 11-18 s
// for these scenarios on a loaded 2-core machine): each child gets its own bound.
const CHILD_TEST_TIMEOUT_MS = 120_000;

/** Runs `script` (CommonJS) in a fresh Node process; `ADDON` and `SPAWNER` are defined in it. */
function runChild(script: string, timeoutMs = 60_000, env: Record<string, string> = {}) {
  const prelude = `
    const { createRequire } = require('node:module');
    const ROOT = ${JSON.stringify(ROOT)};
    const ADDON = createRequire(ROOT + '/package.json')('node-gyp-build')(ROOT);
    const SPAWNER = require(${JSON.stringify(spawnerPath)});
  `;
  const child = runNode(['-e', prelude + script], {
    timeout: timeoutMs,
    env: { ...process.env, ...env },
  });
  return { status: child.status, signal: child.signal, stdout: child.stdout, stderr: child.stderr };
}

describe('Workers that are inside the addon when they are stopped', () => {
  // A Worker terminated (or a process exiting) while the Worker runs addon
  // code: every Node-API call then fails, and node-addon-api must not turn
  // that into an exception it cannot throw (std::terminate, abort).
  const loop = (call: string) => `
    const { Worker } = require('node:worker_threads');
    const body = \`
      const { workerData, parentPort } = require('node:worker_threads');
      const addon = require('node:module').createRequire(workerData.root + '/package.json')('node-gyp-build')(workerData.root);
      const self = addon.currentThreadId();
      parentPort.postMessage('go');
      for (;;) { ${call} }\`;
  `;

  for (const [what, call] of [
    ['threads()', 'addon.listThreads(0);'],
    ['threadStack() of itself', 'addon.captureStack(self, 100);'],
    ['threadStack() of another thread', 'addon.captureStack(workerData.tid, 100);'],
  ] as const) {
    it(`worker.terminate() during ${what} never aborts the process`, () => {
      const child = runChild(`${loop(call)}
        const { tids } = SPAWNER.start({ count: 1 });
        (async () => {
          for (let i = 0; i < 12; i++) {
            const w = new Worker(body, { eval: true, workerData: { root: ROOT, tid: tids[0] } });
            await new Promise((resolve) => w.once('message', resolve));
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 10));
            await w.terminate();
          }
          console.log('survived');
          process.exit(0);
        })();
      `);
      expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
      expect(child.stdout.trim()).toBe('survived');
    }, CHILD_TEST_TIMEOUT_MS);
  }

  // Not under wine: there, process.exit() with Workers looping in the addon's
  // listing or capture does not end (seen with winedbg: the main thread waits
  // in the Worker join while the Workers go on calling the addon; Workers
  // looping in plain JavaScript or in threadKey() exit in 3 s, and
  // worker.terminate() of the same Workers takes 0.4 s). An open finding, in
  // the README's Windows section; real Windows is not checked yet. The three
  // worker.terminate() tests above run under wine.
  it.skipIf(isWine)('process.exit() while Workers capture stacks and list threads never crashes the process', () => {
    for (let run = 0; run < 5; run++) {
      const child = runChild(`${loop('addon.listThreads(0); addon.captureStack(self, 100); addon.captureStack(workerData.tid, 100);')}
        const { tids } = SPAWNER.start({ count: 1 });
        let ready = 0;
        for (let w = 0; w < 3; w++) {
          new Worker(body, { eval: true, workerData: { root: ROOT, tid: tids[0] } }).once('message', () => {
            if (++ready === 3) setTimeout(() => process.exit(0), ${run * 3});
          });
        }
      `);
      expect({ run, stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ run, stderr: '', status: 0, signal: null });
    }
  }, 5 * CHILD_TEST_TIMEOUT_MS);
});

// Node unloads an addon when the last Worker that loaded it ends (a test
// runner's Worker per test file does that): a probe signal handler it left
// installed would then point into unmapped code, and a second load would
// forget what the first did. The addon keeps itself loaded.
describe('the addon outlives the Workers that loaded it', () => {
  it('stays loaded, keeps its process-wide state, and still probes stacks after its last Worker ended', () => {
    const child = runChild(`
      const { Worker } = require('node:worker_threads');
      const { tids } = SPAWNER.start({ count: 1 });
      const body = \`
        const { workerData, parentPort } = require('node:worker_threads');
        const addon = require('node:module').createRequire(workerData.root + '/package.json')('node-gyp-build')(workerData.root);
        const stack = addon.captureStack(workerData.tid, 1000);
        parentPort.postMessage({ first: addon.processOnce('outlives'), error: stack.error ?? null, frames: stack.frames.length > 0 });
      \`;
      const inWorker = () => new Promise((resolve, reject) => {
        const worker = new Worker(body, { eval: true, workerData: { root: ROOT, tid: tids[0] } });
        let said;
        worker.once('message', (m) => { said = m; });
        worker.once('error', reject);
        worker.once('exit', () => resolve(said));
      });
      (async () => {
        const one = await inWorker();
        const two = await inWorker(); // the first Worker has ended: nothing held the addon but itself
        const stack = ADDON.captureStack(tids[0], 1000);
        console.log(JSON.stringify({ one, two, main: { first: ADDON.processOnce('outlives'), error: stack.error ?? null, frames: stack.frames.length > 0 } }));
        process.exit(0);
      })();
    `);
    expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
    const seen = JSON.parse(child.stdout.trim().split('\n').pop()!) as Record<string, { first: boolean; error: string | null; frames: boolean }>;
    // A parked thread's stack: by the signal probe on Linux, by suspension on Windows; no error either way.
    expect(seen).toEqual({
      one: { first: true, error: null, frames: true },
      two: { first: false, error: null, frames: true },
      main: { first: false, error: null, frames: true },
    });
  }, CHILD_TEST_TIMEOUT_MS);
});

// The cache of procfs descriptors: Linux's.
describe.runIf(process.platform === 'linux')("threads()' cache of descriptors", () => {
  // threads() keeps an fd open on each live thread's stat between calls. The
  // fd numbers are the process's: a library with a double close() can close
  // one of them, and the number is then reused for the library's next file.
  const cachedFd = (tid: number): number | undefined => {
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`).endsWith(`/task/${tid}/stat`)) return Number(fd);
      } catch {
        // the fd of readdirSync itself, closed by now
      }
    }
    return undefined;
  };
  /** Opens `path` until the number `fd` comes back (the lowest free one); closes the others. */
  const openAs = (fd: number, path: string): boolean => {
    const others: number[] = [];
    try {
      for (let i = 0; i < 64; i++) {
        const got = openSync(path, 'r');
        if (got === fd) return true;
        others.push(got);
      }
      return false;
    } finally {
      for (const other of others) closeSync(other);
    }
  };

  for (const [what, content] of [
    ['an empty file', ''],
    ['a file with other content', '12345 (not a stat line) S 1 2 3\n'],
  ] as const) {
    it(`never closes, nor reads as a thread, a descriptor that was closed by someone else and reused for ${what}`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'threadleak-fd-'));
      const { handle, tids } = spawner.start({ count: 1 });
      try {
        const path = join(dir, 'file');
        writeFileSync(path, content);
        expect(threads().map((t) => t.id)).toContain(tids[0]);
        const fd = cachedFd(tids[0]!);
        expect(fd).toBeDefined();
        closeSync(fd!); // someone else's stray close
        expect(openAs(fd!, path)).toBe(true); // and their next file gets the number
        try {
          for (let i = 0; i < 3; i++) expect(threads().map((t) => t.id)).toContain(tids[0]);
          expect(fstatSync(fd!).isFile()).toBe(true); // still open, still theirs
          expect(readFileSync(fd!, 'utf8')).toBe(content);
        } finally {
          closeSync(fd!);
        }
      } finally {
        spawner.stop(handle);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('keeps no descriptors while the process uses more than half of its limit', () => {
    const child = spawnSync(
      'bash',
      ['-c', `ulimit -n 512 && exec "$0" -e "$1"`, process.execPath, `
        const { createRequire } = require('node:module');
        const ROOT = ${JSON.stringify(ROOT)};
        const ADDON = createRequire(ROOT + '/package.json')('node-gyp-build')(ROOT);
        const SPAWNER = require(${JSON.stringify(spawnerPath)});
        const fs = require('node:fs');
        const statFds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
          try { return /\\/task\\/\\d+\\/stat$/.test(fs.readlinkSync('/proc/self/fd/' + fd)); } catch { return false; }
        }).length;
        const { handle } = SPAWNER.start({ count: 40 });
        ADDON.listThreads(0);
        const light = statFds();
        const held = [];
        for (let i = 0; i < 300; i++) held.push(fs.openSync('/dev/null', 'r'));
        ADDON.listThreads(0);
        const heavy = statFds();
        for (const fd of held) fs.closeSync(fd);
        SPAWNER.stop(handle);
        console.log(JSON.stringify({ light, heavy }));
      `],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect({ stderr: child.stderr, status: child.status }).toEqual({ stderr: '', status: 0 });
    const { light, heavy } = JSON.parse(child.stdout) as { light: number; heavy: number };
    expect(light).toBeGreaterThanOrEqual(40); // a process with fds to spare caches them
    expect(heavy).toBe(0);
  });
});
