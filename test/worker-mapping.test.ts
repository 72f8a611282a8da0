// A native thread that starts in the instant between a Worker's OS thread and
// threadleak's look at it (a library's thread started from the libuv pool, in
// the field) must not be taken for the Worker's thread. The race is made
// certain here: a 'worker_threads' subscriber registered before threadleak's
// starts a fixture thread, so it is always the newest thread threadleak sees.
import diagnosticsChannel from 'node:diagnostics_channel';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterEach, expect, it } from 'vitest';
import { DEFAULT_ENTRY, fixtureThreads, mainThreadId, spawnerPath } from './helpers.js';

const fixture = fixtureThreads();
let racerName: string | undefined;
let racersPerWorker = 1;
const racers: number[] = [];
diagnosticsChannel.subscribe('worker_threads', () => {
  if (racerName !== undefined) racers.push(...fixture.start({ name: racerName, count: racersPerWorker }).tids);
});
// Imported only now, so that threadleak's subscriber runs after the one above.
const { noThreadLeaks, threads, ThreadLeakError } = await import('../src/index.js');

const workers: Worker[] = [];
afterEach(async () => {
  racerName = undefined;
  racersPerWorker = 1;
  racers.length = 0;
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

async function leaksOf(scope: ReturnType<typeof noThreadLeaks>) {
  try {
    await scope.close();
  } catch (error) {
    expect(error).toBeInstanceOf(ThreadLeakError);
    return (error as InstanceType<typeof ThreadLeakError>).leaks;
  }
  throw new Error('expected a ThreadLeakError');
}

const creatorName = () => threads().find((t) => t.id === mainThreadId())!.name;
// The name a new thread has before it names itself: its creator's on Linux
// (inherited), none on macOS (pthread_setname_np names only the calling
// thread, and nothing is inherited).
const birthName = () => (process.platform === 'darwin' ? '' : creatorName());

for (const [what, name] of [
  ['a thread that named itself', () => 'racer'],
  ['a thread with the same name as the Worker thread at birth', birthName],
] as const) {
  it(`maps a Worker to its own OS thread, not to ${what} started just after it`, async () => {
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 20 });
    racerName = name();
    const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
    workers.push(worker);
    racerName = undefined;
    expect(racers).toHaveLength(1);
    const leaks = await leaksOf(scope);
    const racer = leaks.find((t) => t.id === racers[0]);
    expect(racer?.origin).toEqual({ kind: 'native', module: realpathSync(spawnerPath), startRoutine: DEFAULT_ENTRY });
    const mapped = leaks.filter((t) => t.origin.kind === 'worker');
    expect(mapped).toHaveLength(1);
    expect(mapped[0]!.origin.kind === 'worker' && mapped[0]!.origin.worker).toBe(worker);
    expect(mapped[0]!.id).not.toBe(racers[0]);
  });
}

it("'cancel' stops the Worker and waits for its own thread, not the native thread started just after it", async () => {
  const messages: string[] = [];
  const scope = noThreadLeaks({ action: 'cancel', gracePeriodMs: 20, logger: { warn: (m) => void messages.push(m) } });
  racerName = birthName();
  const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
  workers.push(worker);
  racerName = undefined;
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  await scope.close();
  await exited;
  // The native thread cannot be stopped: it alone is logged (had the Worker
  // been taken for it, the Worker's own thread would be logged instead).
  expect(messages).toHaveLength(1);
  expect(messages[0]).toMatch(/^Cannot force-stop 1 leaked thread/);
  expect(messages[0]).toContain(`thread ${racers[0]} `);
});

// Each Worker tells its own OS thread id (Linux: /proc/thread-self, read
// inside it; Windows, macOS: GetCurrentThreadId / pthread_threadid_np through
// the addon, loaded inside it):
// the truth the matching is checked against.
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TID_WORKER = `
  const { parentPort } = require('node:worker_threads');
  const tid = process.platform === 'linux'
    ? Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop())
    : require('node:module').createRequire(${JSON.stringify(`${ROOT}package.json`)})('node-gyp-build')(${JSON.stringify(ROOT)}).currentThreadId();
  parentPort.postMessage(tid);
  setInterval(() => {}, 1000);
`;

for (const when of ['once they are all running', 'while they are still starting'] as const) {
  it(`matches each of a burst of Workers to its own OS thread, with a same-named native thread after each, looked at ${when}`, async () => {
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0 });
    racerName = birthName();
    const burst = Array.from({ length: 8 }, (_, i) => new Worker(TID_WORKER, { eval: true, name: `burst-${i}` }));
    racerName = undefined;
    workers.push(...burst);
    expect(racers).toHaveLength(burst.length);
    const tids = burst.map((w) => new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`a Worker exited (${code}) before it told its thread id`)));
    }));
    if (when === 'once they are all running') await Promise.all(tids);
    const leaks = await leaksOf(scope);
    const truth = await Promise.all(tids);
    const byWorker = new Map(leaks.filter((t) => t.origin.kind === 'worker').map((t) => [(t.origin as { worker: Worker }).worker, t.id]));
    expect(burst.map((w) => byWorker.get(w))).toEqual(truth);
    expect(leaks.filter((t) => t.origin.kind === 'native').map((t) => t.id).sort()).toEqual([...racers].sort());
  });
}

it('finds a Worker\'s thread behind many native threads started in the same instant', async () => {
  const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0 });
  racerName = birthName();
  racersPerWorker = 12;
  const worker = new Worker(TID_WORKER, { eval: true });
  racerName = undefined;
  workers.push(worker);
  const tid = new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const leaks = await leaksOf(scope);
  const mapped = leaks.filter((t) => t.origin.kind === 'worker');
  expect(mapped.map((t) => t.id)).toEqual([await tid]);
  expect(leaks.filter((t) => t.origin.kind === 'native')).toHaveLength(12);
});
