// The spawner fixture itself (spawner.cc on Linux and macOS, spawner_win32.cc
// on Windows): the same start/stop contract on all, and an option of another
// platform fails loudly with a TypeError naming it, never starts something else.
import { describe, expect, it } from 'vitest';
import { threads } from '../src/index.js';
import { isWine, spawner, THREAD_KIND, waitUntil, type SpawnOptions } from './helpers.js';

describe('the spawner fixture', () => {
  it('starts threads with distinct ids that threads() lists, and stop() joins them once', () => {
    const { handle, tids } = spawner.start({ count: 3, name: 'tl-fixture' });
    expect(tids).toHaveLength(3);
    expect(new Set(tids).size).toBe(3);
    for (const tid of tids) expect(Number.isSafeInteger(tid) && tid > 0).toBe(true);
    const listed = threads().filter((t) => tids.includes(t.id));
    expect(listed.map((t) => t.name)).toEqual(['tl-fixture', 'tl-fixture', 'tl-fixture']);
    expect(spawner.stop(handle)).toBe(true);
    expect(spawner.stop(handle)).toBe(false);
    expect(spawner.stats(handle)).toBeNull();
  });

  it(`starts '${THREAD_KIND}' threads when no kind is given, and 'std' threads`, () => {
    for (const kind of [THREAD_KIND, 'std'] as const) {
      const { handle, tids } = spawner.start({ count: 2, kind });
      expect(tids).toHaveLength(2);
      expect(spawner.stop(handle)).toBe(true);
    }
  });

  const windowsOnly: [string, SpawnOptions][] = [
    ['suspended', { suspended: true }],
    ['win32', { kind: 'win32' }],
    ['crt', { kind: 'crt' }],
  ];
  // What macOS has no counterpart for: sigtimedwait, SCHED_IDLE, a thread in state D (spawner.cc).
  const linuxOnly: [string, SpawnOptions][] = [
    ['sigwait', { sigwait: true }],
    ['sigwaitMs', { sigwaitMs: 1 }],
    ['idle', { idle: true }],
    ['vforkMs', { vforkMs: 1 }],
  ];
  const foreign: [string, SpawnOptions][] =
    process.platform === 'darwin'
      ? [...windowsOnly, ...linuxOnly]
      : process.platform === 'win32'
      ? [
          ['blockSignals', { blockSignals: true }],
          ['sigwait', { sigwait: true }],
          ['vforkMs', { vforkMs: 1 }],
          ['stackKb', { stackKb: 64 }],
          ['headroomKb', { headroomKb: 4 }],
          ['local', { kind: 'local' }],
          ['pthread', { kind: 'pthread' }],
        ]
      : windowsOnly;
  for (const [option, options] of foreign) {
    it(`refuses ${JSON.stringify(options)}, an option of another platform, with a TypeError naming ${option}`, () => {
      const before = threads().length;
      expect(() => spawner.start({ count: 1, ...options })).toThrow(
        expect.objectContaining({ name: 'TypeError', message: expect.stringContaining(option) }),
      );
      // Nothing was started (bounded: the runtime may start or end a thread meanwhile).
      expect(threads().length).toBeLessThanOrEqual(before + 1);
    });
  }

  // The seccomp filter is Linux's: on macOS it throws rather than doing nothing.
  it.runIf(process.platform === 'darwin')('refuses denyProcessVmReadv() on macOS', () => {
    expect(() => spawner.denyProcessVmReadv()).toThrow(/denyProcessVmReadv: Linux only/);
  });

  // wine_get_version is wine's own ntdll export.
  it.runIf(process.platform === 'win32')('tells wine from Windows: wineVersion() is a version string under wine, null on Windows', () => {
    const version = spawner.wineVersion!();
    expect(version === null || /^\d+\.\d+/.test(version)).toBe(true);
    expect(isWine).toBe(version !== null);
  });

  it.runIf(process.platform === 'win32')('suspends and resumes: a suspended group is joined by stop(), every kind', async () => {
    for (const kind of ['win32', 'crt', 'std'] as const) {
      const { handle, tids } = spawner.start({ count: 2, kind, suspended: true });
      expect(tids).toHaveLength(2);
      expect(spawner.stop(handle)).toBe(true);
      expect(await waitUntil(() => !threads().some((t) => tids.includes(t.id)))).toBe(true);
    }
  });
});
