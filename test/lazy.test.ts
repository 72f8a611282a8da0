// Importing threadleak costs nothing native (DESIGN.md, Semantics -> Lazy):
// no addon is loaded, no /proc file is opened, and `new Worker()` is only
// noted (its creation stack), never matched to an OS thread on the spot. The
// addon loads at the first thread function or scope. Each case runs in a
// fresh process against the built package, through its public entry points.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runNode } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));

// What a child reports about itself: the .node files it has mapped and, on
// Linux, the descriptors it holds (by target; the one listing /proc/self/fd
// left out). Linux reads /proc/self/maps; Windows and macOS have no such file
// (and process.report.getReport() with Workers running crashes Node under
// wine), so there every process.dlopen() is recorded instead, the way every
// addon loads. Windows and macOS have no procfs for threadleak to open (it
// reads threads through system calls there): their descriptor lists are empty.
const PROBE = `
  const fs = require('node:fs');
  const linux = process.platform === 'linux';
  const dlopened = [];
  if (!linux) {
    const dlopen = process.dlopen;
    process.dlopen = function (module, filename, ...rest) {
      dlopened.push(filename);
      return dlopen.call(this, module, filename, ...rest);
    };
  }
  const nativeFiles = () => linux
    ? [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
      .filter((line) => line.endsWith('.node')).map((line) => line.slice(line.indexOf('/'))))]
    : [...new Set(dlopened)];
  const descriptors = () => !linux ? [] : fs.readdirSync('/proc/self/fd').map((fd) => {
    try { return fs.readlinkSync('/proc/self/fd/' + fd); } catch { return null; }
  }).filter((target) => target !== null && !target.endsWith('/fd')).sort();
  // threadleak's descriptors are on /proc/<pid>/task/<tid>/ files (Node itself
  // may have /proc/self/maps open for a moment while a Worker starts).
  const procFiles = () => descriptors().filter((target) => /^\\/proc\\/\\d+\\/task\\//.test(target));
  const { Worker } = require('node:worker_threads');
  const startWorkers = (count) => Array.from({ length: count }, () => new Worker('setInterval(() => {}, 1000)', { eval: true }));
`;

function runChild(body: string, esm = false): Record<string, unknown> {
  const source = esm
    ? `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);\n${PROBE}\n${body}`
    : `${PROBE}\n(async () => {\n${body}\n})().catch((error) => { console.error(error); process.exit(1); });`;
  const args = esm ? ['--input-type=module', '-e', source] : ['-e', source];
  const result = runNode(args, { cwd: root, timeout: 30_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return JSON.parse(result.stdout.trim().split('\n').at(-1)!);
}

const importAndStartWorkers = (load: string) => `
  const before = descriptors();
  const threadleak = ${load};
  const afterImport = descriptors();
  const workers = startWorkers(3);
  const afterWorkers = { native: nativeFiles(), proc: procFiles() };
  threadleak.threads();
  const afterThreads = nativeFiles();
  await Promise.all(workers.map((w) => w.terminate()));
  console.log(JSON.stringify({ before, afterImport, afterWorkers, afterThreads, exports: typeof threadleak.noThreadLeaks }));
`;

for (const [entry, load, esm] of [
  ['CommonJS', "require('threadleak')", false],
  ['ES module', "await import('threadleak')", true],
] as const) {
  it(`importing the ${entry} entry and creating Workers loads no addon and opens no descriptor; threads() loads it`, () => {
    const r = runChild(importAndStartWorkers(load), esm) as {
      before: string[];
      afterImport: string[];
      afterWorkers: { native: string[]; proc: string[] };
      afterThreads: string[];
      exports: string;
    };
    expect(r.exports).toBe('function');
    expect(r.afterImport).toEqual(r.before);
    expect(r.afterWorkers).toEqual({ native: [], proc: [] });
    // The control: the first thread function does load it.
    expect(r.afterThreads).toEqual([expect.stringMatching(/[\\/]threadleak\.node$/)]);
  });
}

it('LeakTracker and resource scopes alone load nothing native', () => {
  const r = runChild(`
    const { LeakTracker, noResourceLeaks } = require('threadleak');
    const tracker = new LeakTracker({ captureStack: true });
    tracker.reportAtExit({ logger: { warn() {} } });
    const scope = noResourceLeaks(tracker, { action: 'log', logger: { warn() {} } });
    const kept = tracker.track({}, { kind: 'file' });
    tracker.untrack(tracker.track({}));
    await scope.close();
    noResourceLeaks(tracker, () => 1)();
    String(tracker.report());
    console.log(JSON.stringify({ native: nativeFiles(), proc: procFiles(), live: tracker.live().length, kept: typeof kept }));
  `);
  expect(r).toEqual({ native: [], proc: [], live: 1, kept: 'object' });
});

it('once the addon is loaded, new Workers are still only noted: no /proc read until a scope looks', () => {
  const r = runChild(`
    const { noThreadLeaks, ThreadLeakError } = require('threadleak');
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0 });
    const before = procFiles();
    const workers = startWorkers(3);
    const afterWorkers = procFiles();
    let leaks = [];
    try { await scope.close(); } catch (error) { if (error instanceof ThreadLeakError) leaks = error.leaks; else throw error; }
    const mapped = leaks.filter((t) => t.origin.kind === 'worker').map((t) => workers.indexOf(t.origin.worker));
    await Promise.all(workers.map((w) => w.terminate()));
    console.log(JSON.stringify({ newProcFiles: afterWorkers.filter((f) => !before.includes(f)), mapped: mapped.sort(), leaks: leaks.length }));
  `);
  expect(r).toEqual({ newProcFiles: [], mapped: [0, 1, 2], leaks: 3 });
});

// The grace period lets the early Worker's OS thread finish ending: Node has
// joined it before 'exit', but the kernel may still list it for a moment
// after (one CI run under load saw one more, unattributed, thread at a check
// with gracePeriodMs 0). The late Worker stays alive: its thread is checked
// again until the grace period ends, and must still be matched to it.
it('a Worker that exited before any scope looked is dropped, not matched to a later thread', () => {
  const r = runChild(`
    const { noThreadLeaks, ThreadLeakError } = require('threadleak');
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 200, excludeDaemon: false });
    const [early] = startWorkers(1);
    await early.terminate();
    const [late] = startWorkers(1);
    let leaks = [];
    try { await scope.close(); } catch (error) { if (error instanceof ThreadLeakError) leaks = error.leaks; else throw error; }
    await late.terminate();
    const owner = (t) => t.origin.kind !== 'worker' ? t.origin.kind : t.origin.worker === late ? 'late' : 'other';
    console.log(JSON.stringify({ owners: leaks.map(owner), threads: leaks.map((t) => [owner(t), t.id, t.name, t.rawState]) }));
  `);
  expect(r.owners, JSON.stringify(r.threads)).toEqual(['late']);
});
