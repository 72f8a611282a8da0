// monitorThreads(): samples, started/exited by key, CPU per thread, alerts once
// per episode, the threadpool probe, another pid, callbacks that throw, stop.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, open as openAsync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { monitorThreads, threads, type ThreadAlert, type ThreadMonitor, type ThreadSample } from '../src/index.js';
import { fixtureThreads, runNode, spawnerPath, waitUntil } from './helpers.js';

const fixture = fixtureThreads();
const monitors: ThreadMonitor[] = [];
const children: ChildProcess[] = [];

afterEach(() => {
  for (const monitor of monitors.splice(0)) monitor.stop();
  for (const child of children.splice(0)) child.kill('SIGKILL');
  vi.useRealTimers();
});

/** A monitor whose samples and alerts are collected; stopped after the test. */
function watch(options: Parameters<typeof monitorThreads>[0] = {}) {
  const samples: ThreadSample[] = [];
  const alerts: ThreadAlert[] = [];
  const monitor = monitorThreads({
    intervalMs: 50,
    ...options,
    onSample: (s) => {
      samples.push(s);
      options.onSample?.(s);
    },
    onAlert: (a) => alerts.push(a),
  });
  monitors.push(monitor);
  return { monitor, samples, alerts };
}

const LONG = 20_000;
// Taken before any test fakes them.
const realSetImmediate = setImmediate;
const monotonicNow = performance.now.bind(performance);

describe('options', () => {
  it.each([
    [{ intervalMs: 0 }, 'options.intervalMs'],
    [{ intervalMs: 5 }, 'options.intervalMs'],
    [{ intervalMs: '100' }, 'options.intervalMs'],
    [{ pid: -1 }, 'options.pid'],
    [{ pid: 1.5 }, 'options.pid'],
    [{ maxThreads: 0 }, 'options.maxThreads'],
    [{ growthSamples: 1 }, 'options.growthSamples'],
    [{ onSample: 'log' }, 'options.onSample'],
    [{ onAlert: {} }, 'options.onAlert'],
    [{ intervall: 100 }, 'unknown option'],
  ])('%o is a TypeError naming %s', (options, named) => {
    expect.assertions(3);
    try {
      monitorThreads(options as never);
    } catch (error) {
      expect(error).toBeInstanceOf(TypeError);
      expect((error as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
      expect((error as Error).message).toContain(named);
    }
  });

  it('a pid with no process throws the OS error at the call', () => {
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    expect(() => monitorThreads({ pid: gone })).toThrow(expect.objectContaining({ code: 'ESRCH', pid: gone }));
  });
});

describe('samples', () => {
  it('name the threads started and exited since the previous sample, by key', async () => {
    const { samples } = watch();
    await waitUntil(() => samples.length >= 1, LONG);
    const { tids } = fixture.start({ count: 3, name: 'mon-started' });
    const startedIds = () => samples.flatMap((s) => s.started.map((t) => t.id));
    expect(await waitUntil(() => tids.every((id) => startedIds().includes(id)), LONG)).toBe(true);
    // Each once, in one sample: the sample after the start.
    const withStarted = samples.find((s) => s.started.some((t) => tids.includes(t.id)))!;
    expect(withStarted.started.filter((t) => tids.includes(t.id)).map((t) => t.id).sort()).toEqual([...tids].sort());
    expect(startedIds().filter((id) => tids.includes(id))).toHaveLength(tids.length);
    const keys = new Set(withStarted.started.filter((t) => tids.includes(t.id)).map((t) => t.key));

    fixture.stopAll();
    expect(await waitUntil(() => samples.some((s) => s.exited.some((t) => keys.has(t.key))), LONG)).toBe(true);
    const withExited = samples.find((s) => s.exited.some((t) => keys.has(t.key)))!;
    // A thread seen ending can still be on its way out in the same sample: every one is gone in the next.
    const after = samples[samples.indexOf(withExited) + 1] ?? (await nextSample(samples));
    expect(after.threads.some((t) => keys.has(t.key))).toBe(false);
    for (const s of samples) {
      expect(s.count).toBe(s.threads.length);
      expect(s.threads.map((t) => t.id)).toEqual([...s.threads.map((t) => t.id)].sort((a, b) => a - b));
    }
  });

  it('give each thread its CPU % of one core over the interval', async () => {
    const parked = fixture.start({ count: 2, name: 'mon-parked' });
    const spinning = fixture.start({ count: 1, name: 'mon-spin', spin: true });
    const { samples } = watch({ intervalMs: 100 });
    const busy = (s: ThreadSample) => s.threads.find((t) => t.id === spinning.tids[0])?.cpuPercent ?? 0;
    // A thread spinning on a shared machine gets a good share of a core in some interval.
    expect(await waitUntil(() => samples.some((s) => busy(s) >= 20), LONG)).toBe(true);
    for (const s of samples) {
      for (const t of s.threads.filter((t) => parked.tids.includes(t.id))) expect(t.cpuPercent).toBe(0);
      for (const t of s.threads) expect(t.cpuPercent).toBeGreaterThanOrEqual(0);
    }
  });

  it('latest() is the newest sample; stop() ends them; running says so', async () => {
    const { monitor, samples } = watch();
    expect(monitor.latest()).toBeUndefined();
    expect(monitor.running).toBe(true);
    await waitUntil(() => samples.length >= 2, LONG);
    expect(monitor.latest()).toBe(samples[samples.length - 1]);
    monitor.stop();
    monitor.stop();
    expect(monitor.running).toBe(false);
    const seen = samples.length;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(samples.length).toBe(seen);
  });

  it('`using` stops it', async () => {
    let monitor: ThreadMonitor;
    {
      using m = monitorThreads({ intervalMs: 10 });
      monitor = m;
      expect(monitor.running).toBe(true);
    }
    expect(monitor.running).toBe(false);
  });

  it("samples go on under a test's fake timers", async () => {
    const { samples } = watch();
    vi.useFakeTimers();
    const deadline = monotonicNow() + LONG;
    while (samples.length < 2 && monotonicNow() < deadline) await new Promise((resolve) => realSetImmediate(resolve));
    expect(samples.length).toBeGreaterThanOrEqual(2);
  });

  it('the timer does not keep the process alive', () => {
    const script = `const m = require(${JSON.stringify(fileURLToPath(new URL('../dist/index.js', import.meta.url)))}).monitorThreads({ intervalMs: 10 }); console.log(m.running);`;
    const result = runNode(['-e', script], { timeout: LONG });
    expect(result.stdout.trim()).toBe('true');
    expect(result.status).toBe(0);
  });

  it('a callback that throws becomes a warning and the monitor goes on', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      let calls = 0;
      watch({
        onSample: () => {
          calls++;
          throw new Error('callback bug');
        },
      });
      expect(await waitUntil(() => calls >= 3, LONG)).toBe(true);
      await waitUntil(() => warnings.length >= 1, LONG);
      const warning = warnings.find((w) => (w as { code?: string }).code === 'ERR_THREADLEAK_MONITOR_CALLBACK');
      expect(warning?.message).toContain('callback bug');
      expect(warning?.message).toContain('onSample');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('alerts, once per episode', () => {
  it('max-threads: when the count reaches it, again after it fell below', async () => {
    const { alerts, samples } = watch({ maxThreads: threads().length + 2 });
    await waitUntil(() => samples.length >= 1, LONG);
    const first = fixture.start({ count: 3, name: 'mon-max' });
    expect(await waitUntil(() => alerts.some((a) => a.kind === 'max-threads'), LONG)).toBe(true);
    const seen = samples.length;
    await waitUntil(() => samples.length >= seen + 3, LONG);
    expect(alerts.filter((a) => a.kind === 'max-threads')).toHaveLength(1);
    const alert = alerts.find((a) => a.kind === 'max-threads')!;
    expect(alert.message).toContain(`has ${alert.sample.count} threads`);
    expect(alert.sample.count).toBeGreaterThanOrEqual(threads().length - 1);

    fixture.stop(first.handle);
    await waitUntil(() => samples.length > 0 && !samples[samples.length - 1]!.threads.some((t) => first.tids.includes(t.id)), LONG);
    fixture.start({ count: 3, name: 'mon-max' });
    expect(await waitUntil(() => alerts.filter((a) => a.kind === 'max-threads').length === 2, LONG)).toBe(true);
  });

  it('growth: the count grew in each of the last growthSamples samples', async () => {
    let grown = 0;
    let quiet = false;
    const { alerts, samples } = watch({
      growthSamples: 3,
      onSample: (s) => {
        // Once no thread started or ended in a sample (the earlier tests' threads are gone),
        // one more thread before each of the next 6 samples.
        quiet ||= s.started.length === 0 && s.exited.length === 0;
        if (quiet && grown < 6) {
          grown++;
          fixture.start({ count: 1, name: 'mon-grow' });
        }
      },
    });
    expect(await waitUntil(() => grown === 6, LONG)).toBe(true);
    const seen = samples.length;
    expect(await waitUntil(() => samples.length >= seen + 3, LONG)).toBe(true);
    const growth = alerts.filter((a) => a.kind === 'growth');
    expect(growth).toHaveLength(1);
    expect(growth[0]!.message).toContain('grew in each of the last 3 samples');
  });

  // A FIFO opened for reading blocks the pool thread that opens it until a writer comes: every pool
  // thread can be held that way, and let go at once. Windows has no mkfifo.
  it.skipIf(process.platform === 'win32')('threadpool: a saturated pool, then idle, then saturated again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'threadleak-fifo-'));
    const fifo = join(dir, 'pool');
    try {
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
      const { alerts, samples } = watch();
      expect(await waitUntil(() => samples.some((s) => s.threadpoolDelayMs !== undefined), LONG)).toBe(true);
      const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
      const saturate = () => {
        const opened: Promise<number>[] = [];
        for (let i = 0; i < poolSize; i++) opened.push(new Promise((resolve) => openAsync(fifo, 'r', (_e, fd) => resolve(fd))));
        return () => {
          const writer = openSync(fifo, 'w'); // every reader's open returns now
          return Promise.all(opened).then((fds) => {
            for (const fd of fds) closeSync(fd);
            closeSync(writer);
          });
        };
      };
      let release = saturate();
      expect(await waitUntil(() => alerts.some((a) => a.kind === 'threadpool'), LONG)).toBe(true);
      const alert = alerts.find((a) => a.kind === 'threadpool')!;
      expect(alert.sample.threadpoolDelayMs).toBeGreaterThan(50);
      expect(alert.message).toContain('threadpool is saturated');
      let seen = samples.length;
      await waitUntil(() => samples.length >= seen + 3, LONG);
      expect(alerts.filter((a) => a.kind === 'threadpool')).toHaveLength(1);

      await release();
      // Idle again: the delay falls back below the alert level (the probe waits for nothing).
      expect(await waitUntil(() => (samples[samples.length - 1]!.threadpoolDelayMs ?? Infinity) < 50, LONG)).toBe(true);
      seen = samples.length;
      release = saturate();
      expect(await waitUntil(() => alerts.filter((a) => a.kind === 'threadpool').length === 2, LONG)).toBe(true);
      await release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.runIf(process.platform === 'linux')('headroom: every Linux sample says how many threads can still start, and from which limit', async () => {
    const { samples } = watch();
    await waitUntil(() => samples.length >= 1, LONG);
    const { headroom } = samples[0]!;
    expect(headroom).toBeDefined();
    expect(['pids.max', 'RLIMIT_NPROC', 'threads-max']).toContain(headroom!.source);
    expect(headroom!.remaining).toBeLessThanOrEqual(headroom!.limit);
    expect(headroom!.remaining).toBeGreaterThan(0);
  });
});

async function nextSample(samples: ThreadSample[]): Promise<ThreadSample> {
  const seen = samples.length;
  await waitUntil(() => samples.length > seen, LONG);
  return samples[seen]!;
}

describe('another process', () => {
  function childWithThreads(): Promise<{ child: ChildProcess; tids: number[] }> {
    const script = `const s = require(${JSON.stringify(spawnerPath)}); const { tids } = s.start({ count: 2, name: 'mon-child' });
      console.log(JSON.stringify(tids)); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    return new Promise((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve({ child, tids: JSON.parse(out) });
      });
      child.on('error', reject);
    });
  }

  it('is sampled like this one, without the threadpool delay; its end stops the monitor with the error', async () => {
    const { child, tids } = await childWithThreads();
    const errors: Error[] = [];
    const { monitor, samples } = watch({ pid: child.pid!, onError: (e) => errors.push(e) });
    expect(await waitUntil(() => samples.length >= 2, LONG)).toBe(true);
    const ids = samples[1]!.threads.map((t) => t.id);
    for (const tid of tids) expect(ids).toContain(tid);
    expect(samples.every((s) => s.threadpoolDelayMs === undefined)).toBe(true);
    if (process.platform === 'linux') expect(samples[1]!.headroom).toBeDefined();

    child.kill('SIGKILL');
    expect(await waitUntil(() => errors.length === 1, LONG)).toBe(true);
    expect(monitor.running).toBe(false);
    expect(['ESRCH', 'ENOENT']).toContain((errors[0] as { code?: string }).code);
  });

  it('without onError, the end of the process is a warning', async () => {
    const { child } = await childWithThreads();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const { monitor, samples } = watch({ pid: child.pid! });
      await waitUntil(() => samples.length >= 1, LONG);
      child.kill('SIGKILL');
      expect(await waitUntil(() => !monitor.running, LONG)).toBe(true);
      await waitUntil(() => warnings.length >= 1, LONG);
      const warning = warnings.find((w) => (w as { code?: string }).code === 'ERR_THREADLEAK_MONITOR_STOPPED');
      expect(warning?.message).toContain(`process ${child.pid}`);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
