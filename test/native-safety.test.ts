// Process-level hazards of the native addon: what a crash, a hang or a stolen
// resource would look like from the host's side. Each scenario that could
// kill or hang a process runs in a child process of its own, with a timeout.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { spawnerPath } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs `script` (CommonJS) in a fresh Node process; `ADDON` and `SPAWNER` are defined in it. */
function runChild(script: string, timeoutMs = 60_000, env: Record<string, string> = {}) {
  const prelude = `
    const { createRequire } = require('node:module');
    const ROOT = ${JSON.stringify(ROOT)};
    const ADDON = createRequire(ROOT + '/package.json')('node-gyp-build')(ROOT);
    const SPAWNER = require(${JSON.stringify(spawnerPath)});
  `;
  const child = spawnSync(process.execPath, ['-e', prelude + script], {
    encoding: 'utf8',
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
          for (let i = 0; i < 25; i++) {
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
    });
  }

  it('process.exit() while Workers capture stacks and list threads never crashes the process', () => {
    for (let run = 0; run < 8; run++) {
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
  });
});
