// threadStack(id, { key }) and leak reports read the stack of the thread the
// key names, never of another thread that got its id: with a stale key the
// answer is 'exited', with no frames, and the thread that has the id now is
// neither read nor interrupted.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { threads, threadStack } from '../src/index.js';
import { leakReportStack } from '../src/snapshot.js';
import { fixtureThreads, runInPidNamespace, spawnerPath, unshareRefused } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SPAWNER = realpathSync(spawnerPath);


describe('threadStack(id, { key })', () => {
  const { start } = fixtureThreads();

  it('reads the thread the key names', () => {
    const { tids } = start({ count: 1, name: 'key-stack' });
    const thread = threads().find((t) => t.id === tids[0])!;
    const stack = threadStack(thread.id, { key: thread.key, timeoutMs: 2000 });
    expect(stack.error).toBeUndefined();
    expect(stack.frames.some((f) => f.module === SPAWNER)).toBe(true);
  });

  it("refuses a key that is not the thread's: 'exited', no frames", () => {
    const { tids } = start({ count: 1, name: 'key-stale' });
    const thread = threads().find((t) => t.id === tids[0])!;
    // Keys of another thread (or of this id's earlier holder) in this platform's form: macOS keys are
    // the thread_id alone (never reused), elsewhere `${id}@${start}`, `#n` added for a reuse in one tick.
    const staleKeys =
      process.platform === 'darwin'
        ? [`${thread.id + 1}`, `${thread.id}@1`, `${thread.key}#1`]
        : [`${thread.id}@1`, `${thread.id}@${thread.key.split('@')[1]}#1`, `${thread.id + 1}@0`];
    for (const stale of staleKeys) {
      const stack = threadStack(thread.id, { key: stale, timeoutMs: 2000 });
      expect(stack.frames).toEqual([]);
      expect(stack.error).toMatch(/exited/);
      // The kernel view (timeout 0) is refused too, and so is a leak report's capture.
      expect(threadStack(thread.id, { key: stale, timeoutMs: 0 }).frames).toEqual([]);
      const report = leakReportStack(thread.id, 100, stale);
      expect(report.frames).toEqual([]);
      expect(report.error).toMatch(/exited/);
    }
  });

  it('rejects a key that is not a string', () => {
    expect(() => threadStack(process.pid, { key: 42 as unknown as string })).toThrow(TypeError);
  });
});

// Forcing a tid's reuse needs a pid namespace and /proc/sys/kernel/ns_last_pid: Linux's.
describe.runIf(process.platform === 'linux')('a thread id reused by another thread', () => {
  it.skipIf(unshareRefused !== '')(
    `is never read under the old thread's key${unshareRefused ? ` (skipped: ${unshareRefused})` : ''}`,
    () => {
      // In a private pid namespace: thread a is listed, ends, and thread b is
      // made to get a's tid (ns_last_pid). a's key must not read b.
      const script = `
        const fs = require('node:fs');
        const { threads, threadStack } = require(${JSON.stringify(`${ROOT}dist/index.js`)});
        let result = null;
        for (let tries = 0; !result && tries < 200; tries++) {
          const a = spawner.start({ count: 1 });
          const tid = a.tids[0];
          const first = threads().find((t) => t.id === tid);
          spawner.stop(a.handle);
          for (let i = 0; i < 100000 && fs.existsSync('/proc/self/task/' + tid); i++);
          fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(tid - 1));
          const b = spawner.start({ count: 1 });
          if (b.tids[0] === tid) {
            const second = threads().find((t) => t.id === tid);
            const stale = threadStack(tid, { key: first.key, timeoutMs: 2000 });
            const fresh = threadStack(tid, { key: second.key, timeoutMs: 2000 });
            result = {
              keysDiffer: first.key !== second.key,
              stale: { frames: stale.frames.length, error: stale.error },
              fresh: { fixture: fresh.frames.some((f) => f.module === ${JSON.stringify(SPAWNER)}), error: fresh.error },
            };
          }
          spawner.stop(b.handle);
        }
        console.log(JSON.stringify(result));
      `;
      const result = runInPidNamespace<any>(script);
      expect(result).not.toBeNull();
      expect(result.keysDiffer).toBe(true);
      expect(result.stale.frames).toBe(0);
      expect(result.stale.error).toMatch(/exited/);
      expect(result.fresh).toEqual({ fixture: true });
    },
    120_000,
  );
});
