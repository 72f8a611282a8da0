// Keys are `${tid}@${start ticks}`, and a tick is 10 ms: a thread that gets
// the tid of one that ended within the same tick must still get a key no
// earlier thread had, and keep it. The reuse is forced in a private pid
// namespace, where writing tid-1 to /proc/sys/kernel/ns_last_pid makes the
// kernel hand out tid next.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { threads } from '../src/index.js';
import { threadKey } from '../src/binding.js';
import { fixtureThreads, KEY_FORM, isKeyOfId, mainThreadId, runInPidNamespace, unshareRefused, waitUntil } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));


interface ReuseResult {
  tries: number;
  hit: null | { firstKey: string; secondKey: string; again: string; threadKey: string; reported: boolean };
}

/**
 * In a private pid namespace: thread a starts, a scope takes its baseline, a
 * ends, thread b is made to get a's tid, and the scope closes. Repeated until
 * b got a's tid within a's start tick. `listBetween`: a listing after a ended
 * and before b started (a is then gone from a listing; otherwise only a's
 * cached descriptor can tell them apart).
 */
function reuseInNamespace(listBetween: boolean): ReuseResult {
  const script = `
    const fs = require('node:fs');
    const { noThreadLeaks, threads } = require(${JSON.stringify(`${ROOT}dist/index.js`)});
    const options = { action: 'raise', gracePeriodMs: 0, captureStacks: false };
    noThreadLeaks(options)[Symbol.dispose](); // pre-warms the pool
    // A tick is 10 ms of the boot-time clock, which runs with the monotonic
    // one (hrtime) unless the machine was suspended: each try starts just
    // after a tick begins, so that it has the whole tick (useful, not needed).
    const TICK = 10_000_000n;
    const nextTick = () => {
      const t = process.hrtime.bigint() / TICK;
      while (process.hrtime.bigint() / TICK === t);
    };
    const result = { tries: 0, hit: null };
    const deadline = Date.now() + 60000;
    while (!result.hit && result.tries < 5000 && Date.now() < deadline) {
      result.tries++;
      nextTick();
      const a = spawner.start({ count: 1 });
      const tid = a.tids[0];
      const scope = noThreadLeaks(options);
      const first = threads().find((t) => t.id === tid);
      spawner.stop(a.handle);
      // Joined is not yet released: the kernel frees the tid a moment later.
      for (let i = 0; i < 10000 && fs.existsSync('/proc/self/task/' + tid); i++);
      if (${listBetween}) threads();
      fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(tid - 1));
      const b = spawner.start({ count: 1 });
      const second = threads().find((t) => t.id === b.tids[0]);
      let reported = false;
      try { scope[Symbol.dispose](); } catch (e) { reported = (e.leaks ?? []).some((t) => t.id === tid); }
      if (b.tids[0] === tid && second.startTime === first.startTime) {
        result.hit = {
          firstKey: first.key,
          secondKey: second.key,
          again: threads().find((t) => t.id === tid).key,
          threadKey: addon.threadKey ? addon.threadKey(tid) : 'no threadKey',
          reported,
        };
      }
      spawner.stop(b.handle);
    }
    console.log(JSON.stringify(result));
  `;
  return runInPidNamespace<ReuseResult>(script);
}

// Keys in clock ticks, and tid reuse forced in a pid namespace: Linux's.
describe.runIf(process.platform === 'linux')('a tid reused within one clock tick', () => {
  for (const [what, listBetween] of [
    ['told apart by the ended thread\'s cached descriptor', false],
    ['after a listing that no longer had the ended thread', true],
  ] as const) {
    it.skipIf(unshareRefused !== '')(
      `gets a new key, ${what}, and a scope reports it${unshareRefused ? ` (skipped: ${unshareRefused})` : ''}`,
      () => {
        const { tries, hit } = reuseInNamespace(listBetween);
        expect(hit, `no reuse within one tick in ${tries} tries`).not.toBeNull();
        expect(hit!.secondKey).not.toBe(hit!.firstKey);
        expect(hit!.secondKey).toMatch(/^\d+@\d+#\d+$/);
        expect(hit!.again).toBe(hit!.secondKey); // stable across snapshots
        expect(hit!.threadKey).toBe(hit!.secondKey);
        expect(hit!.reported).toBe(true);
      },
      120_000,
    );
  }
});

describe('threadKey(tid)', () => {
  const { start, stop } = fixtureThreads();

  it('is the key threads() gives, in the usual form (`${id}@${start}`; macOS: `${id}`), and "" for no thread of this process', async () => {
    const { handle, tids } = start({ count: 3, name: 'key-check' });
    const listed = threads();
    const mainId = mainThreadId();
    expect(listed.filter((t) => tids.includes(t.id) || t.id === mainId)).toHaveLength(4);
    for (const t of listed.filter((t) => tids.includes(t.id) || t.id === mainId)) {
      expect(t.key).toMatch(KEY_FORM);
      expect(isKeyOfId(t.key, t.id)).toBe(true);
      expect(threadKey(t.id)).toBe(t.key);
    }
    stop(handle);
    expect(await waitUntil(() => tids.every((tid) => threadKey(tid) === ''))).toBe(true);
    expect(threads().filter((t) => tids.includes(t.id))).toEqual([]);
    for (const notOurs of [0, -1, 1.5, Number.NaN, 2 ** 60]) expect(threadKey(notOurs)).toBe('');
  });
});
