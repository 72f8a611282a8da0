// readHeadroom(): how many more threads a Linux process can start (the
// monitor's `headroom`). Every rule on a fake /proc and /sys tree in a temp
// dir (each source winning, cgroup ancestors, v1 and v2, limits that are not
// limits, exemptions, the skipped scan, a gone process, garbage), then the real
// files of this machine: this process, a child under a lowered RLIMIT_NPROC, and
// a child moved into a cgroup with a pids.max where cgroups can be made.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { readHeadroom, REDERIVE_EVERY_CALLS } from '../src/headroom.js';
import type { ThreadHeadroom } from '../src/types.js';

const linux = process.platform === 'linux';
const ROOT = fileURLToPath(new URL('..', import.meta.url));

// ------------------------------------------------------------ a fake tree

const PID = 4242;
const OTHER = 4343;

/** /proc/<pid>/limits as Linux writes it, with `processes` as the soft 'Max processes'. */
function limitsFile(processes: number | string): string {
  const row = (name: string, soft: string | number, hard: string | number, units: string) =>
    `${name.padEnd(26)}${String(soft).padEnd(21)}${String(hard).padEnd(21)}${units.padEnd(10)}\n`;
  return (
    row('Limit', 'Soft Limit', 'Hard Limit', 'Units') +
    row('Max cpu time', 'unlimited', 'unlimited', 'seconds') +
    row('Max stack size', 8388608, 'unlimited', 'bytes') +
    row('Max processes', processes, 'unlimited', 'processes') +
    row('Max open files', 1024, 524288, 'files') +
    row('Max pending signals', 63704, 63704, 'signals')
  );
}

/** /proc/<pid>/status with the lines readHeadroom reads (Uid: real effective saved fs). */
function statusFile(o: { uid: number | string; euid?: number; threads: number; capEff?: string }): string {
  const euid = o.euid ?? o.uid;
  return (
    `Name:\tnode\nState:\tS (sleeping)\nTgid:\t${PID}\nPid:\t${PID}\n` +
    `Uid:\t${o.uid}\t${euid}\t${euid}\t${euid}\nGid:\t100\t100\t100\t100\nGroups:\t100 \n` +
    `VmRSS:\t   51200 kB\nThreads:\t${o.threads}\nSigQ:\t0/63704\n` +
    `CapInh:\t0000000000000000\nCapPrm:\t${o.capEff ?? '0000000000000000'}\nCapEff:\t${o.capEff ?? '0000000000000000'}\n` +
    `CapBnd:\t000001ffffffffff\nNoNewPrivs:\t0\n`
  );
}

/** Files of a fake tree, by path under its root ('proc/…', 'sys/…'); null removes one. */
type Files = Record<string, string | null>;

const trees: string[] = [];
afterEach(() => {
  for (const tree of trees.splice(0)) rmSync(tree, { recursive: true, force: true });
});

/**
 * A fake tree: process PID (uid 1000, 7 threads, soft RLIMIT_NPROC unlimited,
 * in cgroup v2 '/app.slice/job.service', where no pids.max is set) on a system
 * with threads-max 100000 and 500 threads (99500 left), plus `files`.
 */
function fakeTree(files: Files = {}) {
  const root = mkdtempSync(join(tmpdir(), 'threadleak-headroom-'));
  trees.push(root);
  const roots = { proc: join(root, 'proc'), sys: join(root, 'sys') };
  const write = (more: Files) => {
    for (const [path, text] of Object.entries(more)) {
      const file = join(root, path);
      if (text === null) {
        rmSync(file, { force: true });
        continue;
      }
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, text);
    }
  };
  write({
    'proc/sys/kernel/threads-max': '100000\n',
    'proc/loadavg': '0.52 0.58 0.59 3/500 98765\n',
    [`proc/${PID}/limits`]: limitsFile('unlimited'),
    [`proc/${PID}/status`]: statusFile({ uid: 1000, threads: 7 }),
    [`proc/${PID}/cgroup`]: '0::/app.slice/job.service\n',
    'sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
    'sys/fs/cgroup/app.slice/pids.max': 'max\n',
    'sys/fs/cgroup/app.slice/pids.current': '40\n',
    'sys/fs/cgroup/app.slice/job.service/pids.max': 'max\n',
    'sys/fs/cgroup/app.slice/job.service/pids.current': '9\n',
    ...files,
  });
  return { roots, write, read: (pid = PID) => readHeadroom(pid, roots) };
}

const THREADS_MAX: ThreadHeadroom = { remaining: 99500, limit: 100000, source: 'threads-max' };

describe.runIf(linux)('readHeadroom() on a fake /proc and /sys', () => {
  it("threads-max minus the system's threads (loadavg's running/total) when nothing else limits", () => {
    expect(fakeTree().read()).toEqual(THREADS_MAX);
  });

  it("cgroup v2: the process's own cgroup's pids.max - pids.current", () => {
    const tree = fakeTree({ 'sys/fs/cgroup/app.slice/job.service/pids.max': '300\n', 'sys/fs/cgroup/app.slice/job.service/pids.current': '120\n' });
    expect(tree.read()).toEqual({ remaining: 180, limit: 300, source: 'pids.max' });
  });

  it("an ancestor's limit, against its own pids.current (its whole subtree): the tightest remaining, not the smallest limit", () => {
    const tree = fakeTree({
      [`proc/${PID}/cgroup`]: '0::/app.slice/job.service/worker\n',
      'sys/fs/cgroup/app.slice/job.service/worker/pids.max': '40\n', // 40 - 2 = 38 left
      'sys/fs/cgroup/app.slice/job.service/worker/pids.current': '2\n',
      'sys/fs/cgroup/app.slice/pids.max': '500\n', // 500 - 490 = 10 left
      'sys/fs/cgroup/app.slice/pids.current': '490\n',
    });
    expect(tree.read()).toEqual({ remaining: 10, limit: 500, source: 'pids.max' });
  });

  it('cgroup v1: the pids controller\'s line and hierarchy (sys/fs/cgroup/pids), not v2\'s', () => {
    const tree = fakeTree({
      [`proc/${PID}/cgroup`]: '9:name=systemd:/user/42\n8:pids:/user/42\n4:memory:/user/42\n1:cpu,cpuacct:/\n0::/\n',
      'sys/fs/cgroup/cgroup.controllers': null, // hybrid: /sys/fs/cgroup is a tmpfs of mounts
      'sys/fs/cgroup/pids/user/42/pids.max': '64\n',
      'sys/fs/cgroup/pids/user/42/pids.current': '4\n',
      'sys/fs/cgroup/memory/user/42/pids.max': '5\n', // not the pids hierarchy
      'sys/fs/cgroup/memory/user/42/pids.current': '4\n',
    });
    expect(tree.read()).toEqual({ remaining: 60, limit: 64, source: 'pids.max' });
  });

  it('cgroup v2 beside v1 (hybrid): the v2 hierarchy at sys/fs/cgroup/unified', () => {
    const tree = fakeTree({
      [`proc/${PID}/cgroup`]: '1:name=systemd:/job\n0::/job\n',
      'sys/fs/cgroup/cgroup.controllers': null,
      'sys/fs/cgroup/unified/cgroup.controllers': 'pids\n',
      'sys/fs/cgroup/unified/job/pids.max': '100\n',
      'sys/fs/cgroup/unified/job/pids.current': '30\n',
    });
    expect(tree.read()).toEqual({ remaining: 70, limit: 100, source: 'pids.max' });
  });

  it("a container: cgroup path '/' (a cgroup namespace) reads the mount's root, which is then the container's cgroup", () => {
    const tree = fakeTree({ [`proc/${PID}/cgroup`]: '0::/\n', 'sys/fs/cgroup/pids.max': '2000\n', 'sys/fs/cgroup/pids.current': '30\n' });
    expect(tree.read()).toEqual({ remaining: 1970, limit: 2000, source: 'pids.max' });
  });

  it("a v1 container's path that is not under its mount (/docker/<id>, bind-mounted): the mount's root still counts", () => {
    const tree = fakeTree({
      [`proc/${PID}/cgroup`]: '5:pids:/docker/0123abcd\n0::/\n',
      'sys/fs/cgroup/pids/pids.max': '512\n',
      'sys/fs/cgroup/pids/pids.current': '12\n',
    });
    expect(tree.read()).toEqual({ remaining: 500, limit: 512, source: 'pids.max' });
  });

  it("'max' in every cgroup is no limit; the root cgroup has no pids.max at all", () => {
    const tree = fakeTree({ [`proc/${PID}/cgroup`]: '0::/app.slice/job.service\n' });
    expect(readdirSync(join(tree.roots.sys, 'fs/cgroup'))).not.toContain('pids.max');
    expect(tree.read()).toEqual(THREADS_MAX);
  });

  it('a cgroup over its limit (a process moved in) has 0 left, never a negative count', () => {
    const tree = fakeTree({ 'sys/fs/cgroup/app.slice/job.service/pids.max': '8\n', 'sys/fs/cgroup/app.slice/job.service/pids.current': '11\n' });
    expect(tree.read()).toEqual({ remaining: 0, limit: 8, source: 'pids.max' });
  });

  it("RLIMIT_NPROC: the soft limit minus every thread of the process's real uid, in every process", () => {
    const tree = fakeTree({
      [`proc/${PID}/limits`]: limitsFile(600),
      [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 13 }),
      'proc/4400/status': statusFile({ uid: 1000, euid: 0, threads: 2 }), // sudo-like: real uid 1000 counts
      'proc/4401/status': statusFile({ uid: 1001, euid: 1000, threads: 50 }), // real uid 1001 does not
      'proc/4402/status': statusFile({ uid: 0, threads: 100 }),
      'proc/self/status': statusFile({ uid: 1000, threads: 1000 }), // not a pid
    });
    expect(tree.read()).toEqual({ remaining: 600 - (7 + 13 + 2), limit: 600, source: 'RLIMIT_NPROC' });
  });

  it("the user's threads are counted again at each call", () => {
    const tree = fakeTree({ [`proc/${PID}/limits`]: limitsFile(600), [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 13 }) });
    expect(tree.read()?.remaining).toBe(580);
    tree.write({ [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 93 }) });
    expect(tree.read()?.remaining).toBe(500);
    tree.write({ [`proc/${OTHER}/status`]: null });
    expect(tree.read()?.remaining).toBe(593);
  });

  it("'unlimited' is no RLIMIT_NPROC", () => {
    const tree = fakeTree({ [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 99_999 }) });
    expect(tree.read()).toEqual(THREADS_MAX);
  });

  for (const [who, status] of [
    ['root (uid 0)', statusFile({ uid: 0, threads: 7 })],
    ['a process with CAP_SYS_RESOURCE (bit 24)', statusFile({ uid: 1000, threads: 7, capEff: '0000000001000000' })],
    ['a process with CAP_SYS_ADMIN (bit 21)', statusFile({ uid: 1000, threads: 7, capEff: '0000000000200000' })],
    ['a process with every capability', statusFile({ uid: 1000, threads: 7, capEff: '000001ffffffffff' })],
  ] as const) {
    it(`${who} is exempt from RLIMIT_NPROC: no such source`, () => {
      const tree = fakeTree({ [`proc/${PID}/limits`]: limitsFile(10), [`proc/${PID}/status`]: status });
      expect(tree.read()).toEqual(THREADS_MAX);
    });
  }

  it('other capabilities (CAP_NET_ADMIN, CAP_SYS_NICE) exempt nothing', () => {
    const tree = fakeTree({
      [`proc/${PID}/limits`]: limitsFile(10),
      [`proc/${PID}/status`]: statusFile({ uid: 1000, threads: 7, capEff: '0000000000801000' }),
    });
    expect(tree.read()).toEqual({ remaining: 3, limit: 10, source: 'RLIMIT_NPROC' });
  });

  it("skips the scan when RLIMIT_NPROC - the system's threads is no less than another source's remaining", () => {
    // Another process of the user claims more threads than the whole system has
    // (loadavg: 500): a tree no kernel writes, so only a scan could see them.
    const scanned = (cgroupLimit: number) =>
      fakeTree({
        [`proc/${PID}/limits`]: limitsFile(2000), // at least 2000 - 500 = 1500 left
        [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 1900 }), // a scan says 2000 - 1907 = 93
        'sys/fs/cgroup/app.slice/pids.max': `${cgroupLimit}\n`,
        'sys/fs/cgroup/app.slice/pids.current': '100\n',
      }).read();
    // 900 left in the cgroup <= 1500: RLIMIT_NPROC cannot be smaller, not scanned.
    expect(scanned(1000)).toEqual({ remaining: 900, limit: 1000, source: 'pids.max' });
    // 1500 left in the cgroup: no longer surely smaller (a tie keeps the other source), not scanned.
    expect(scanned(1600)).toEqual({ remaining: 1500, limit: 1600, source: 'pids.max' });
    // 1501 left in the cgroup: RLIMIT_NPROC could be smaller, so it is scanned, and the scan finds it is.
    expect(scanned(1601)).toEqual({ remaining: 93, limit: 2000, source: 'RLIMIT_NPROC' });
  });

  it("scans when the system's threads cannot be read: there is no lower bound then", () => {
    const tree = fakeTree({
      'proc/loadavg': '0.52 0.58 0.59\n',
      [`proc/${PID}/limits`]: limitsFile(99_000),
      [`proc/${OTHER}/status`]: statusFile({ uid: 1000, threads: 20 }),
      'sys/fs/cgroup/app.slice/pids.max': '100000\n',
    });
    expect(tree.read()).toEqual({ remaining: 99_000 - 27, limit: 99_000, source: 'RLIMIT_NPROC' });
  });

  it('follows a process moved to another cgroup at the next call, and reads pids.current afresh each call', () => {
    const tree = fakeTree({
      'sys/fs/cgroup/a/pids.max': '100\n',
      'sys/fs/cgroup/a/pids.current': '10\n',
      'sys/fs/cgroup/b/pids.max': '50\n',
      'sys/fs/cgroup/b/pids.current': '45\n',
      [`proc/${PID}/cgroup`]: '0::/a\n',
    });
    expect(tree.read()).toEqual({ remaining: 90, limit: 100, source: 'pids.max' });
    tree.write({ 'sys/fs/cgroup/a/pids.current': '60\n' });
    expect(tree.read()).toEqual({ remaining: 40, limit: 100, source: 'pids.max' });
    tree.write({ [`proc/${PID}/cgroup`]: '0::/b\n' });
    expect(tree.read()).toEqual({ remaining: 5, limit: 50, source: 'pids.max' });
  });

  it(`sees a limit set later on another ancestor within ${REDERIVE_EVERY_CALLS} calls, and a limit lifted at once`, () => {
    const tree = fakeTree({ 'sys/fs/cgroup/app.slice/job.service/pids.max': '1000\n' });
    expect(tree.read()).toEqual({ remaining: 991, limit: 1000, source: 'pids.max' });
    tree.write({ 'sys/fs/cgroup/app.slice/pids.max': '50\n' });
    const answers = Array.from({ length: REDERIVE_EVERY_CALLS }, () => tree.read());
    expect(answers.at(-1)).toEqual({ remaining: 10, limit: 50, source: 'pids.max' });
    tree.write({ 'sys/fs/cgroup/app.slice/pids.max': 'max\n' });
    expect(tree.read()).toEqual({ remaining: 991, limit: 1000, source: 'pids.max' });
  });

  it("a process that is gone (no /proc/<pid>) has no headroom: undefined, though threads-max could be read", () => {
    const tree = fakeTree();
    expect(tree.read(PID + 1)).toBeUndefined();
    rmSync(join(tree.roots.proc, String(PID)), { recursive: true });
    expect(tree.read()).toBeUndefined();
  });

  it('a live process whose other files cannot be read: those sources are left out', () => {
    const tree = fakeTree({
      [`proc/${PID}/limits`]: limitsFile(10),
      [`proc/${PID}/status`]: null,
      [`proc/${PID}/cgroup`]: null,
    });
    expect(tree.read()).toEqual(THREADS_MAX);
  });

  it('undefined when no source can be read', () => {
    const tree = fakeTree({ 'proc/sys/kernel/threads-max': null, 'proc/loadavg': null });
    expect(tree.read()).toBeUndefined();
  });

  describe('garbage in a file leaves its source out', () => {
    const cases: [string, Files, ThreadHeadroom | undefined][] = [
      ['pids.max not a number', { 'sys/fs/cgroup/app.slice/pids.max': 'lots\n' }, THREADS_MAX],
      ['pids.max negative', { 'sys/fs/cgroup/app.slice/pids.max': '-5\n' }, THREADS_MAX],
      ['pids.current empty', { 'sys/fs/cgroup/app.slice/pids.max': '60\n', 'sys/fs/cgroup/app.slice/pids.current': '' }, THREADS_MAX],
      ['a cgroup file of no lines with colons', { [`proc/${PID}/cgroup`]: '\u0000\u0001garbage\n\n' }, THREADS_MAX],
      ['a relative cgroup path', { [`proc/${PID}/cgroup`]: '0::app.slice\n', 'sys/fs/cgroup/pids.max': '5\n', 'sys/fs/cgroup/pids.current': '1\n' }, THREADS_MAX],
      [
        "a cgroup outside this cgroup namespace ('/..')",
        { [`proc/${PID}/cgroup`]: '0::/../other\n', 'sys/fs/cgroup/pids.max': '5\n', 'sys/fs/cgroup/pids.current': '1\n' },
        THREADS_MAX,
      ],
      ['threads-max not a number', { 'proc/sys/kernel/threads-max': 'plenty\n' }, undefined],
      ['loadavg without running/total', { 'proc/loadavg': '0.52 0.58 0.59 3 98765\n' }, undefined],
      ['loadavg empty', { 'proc/loadavg': '' }, undefined],
      ['limits without a number', { [`proc/${PID}/limits`]: limitsFile('lots') }, THREADS_MAX],
      ['limits cut short', { [`proc/${PID}/limits`]: 'Limit                     Soft Limit\nMax proc' }, THREADS_MAX],
      ['status with a garbled Uid', { [`proc/${PID}/limits`]: limitsFile(10), [`proc/${PID}/status`]: statusFile({ uid: 'x1000', threads: 7 }) }, THREADS_MAX],
      ['status without a Uid', { [`proc/${PID}/limits`]: limitsFile(10), [`proc/${PID}/status`]: 'Name:\tnode\nThreads:\t7\n' }, THREADS_MAX],
    ];
    for (const [what, files, expected] of cases) {
      it(what, () => {
        expect(fakeTree(files).read()).toEqual(expected);
      });
    }

    it('a deleted cgroup (v2\'s " (deleted)") counts its ancestors', () => {
      const tree = fakeTree({
        [`proc/${PID}/cgroup`]: '0::/app.slice/gone.service (deleted)\n',
        'sys/fs/cgroup/app.slice/pids.max': '45\n',
      });
      expect(tree.read()).toEqual({ remaining: 5, limit: 45, source: 'pids.max' });
    });
  });
});

// readHeadroom() reads Linux's /proc and /sys; other OSes have neither.
it.runIf(!linux)('is undefined on other OSes, even given a tree that would answer on Linux', () => {
  const root = mkdtempSync(join(tmpdir(), 'threadleak-headroom-'));
  trees.push(root);
  mkdirSync(join(root, 'proc', 'sys', 'kernel'), { recursive: true });
  writeFileSync(join(root, 'proc', 'sys', 'kernel', 'threads-max'), '100000\n');
  writeFileSync(join(root, 'proc', 'loadavg'), '0.52 0.58 0.59 3/500 98765\n');
  expect(readHeadroom(process.pid, { proc: join(root, 'proc'), sys: join(root, 'sys') })).toBeUndefined();
  expect(readHeadroom(process.pid)).toBeUndefined();
});

// ------------------------------------------------------------ this machine's files

/** Reads `used`, then `act`, then `used` again until both reads agree (other processes start threads meanwhile). */
function whileStill<T>(used: () => number, act: () => T): { used: number; result: T } {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const before = used();
    const result = act();
    if (used() === before) return { used: before, result };
    if (Date.now() > deadline) throw new Error('the count never held still for one call in 10 s');
  }
}

const readNumber = (path: string) => Number(readFileSync(path, 'utf8').trim());
const systemThreads = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[3]!.split('/')[1]);

/** The threads of every process of real uid `uid`, counted the plain way (also run in children, as source text). */
function userTasks(uid: number, fs: Pick<typeof import('node:fs'), 'readdirSync' | 'readFileSync'>): number {
  let tasks = 0;
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = fs.readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue; // ended since the listing
    }
    if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid) tasks += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]);
  }
  return tasks;
}

/** The pids cgroup directory of this process (v1's pids hierarchy, else v2's), as the files name it. */
function ownPidsCgroup(): string | undefined {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v1 = lines.find((line) => line.split(':')[1]?.split(',').includes('pids'));
  const path = v1 !== undefined ? `pids${v1.split(':')[2]}` : lines.find((line) => line.startsWith('0::'))?.slice(3);
  return path === undefined ? undefined : join('/sys/fs/cgroup', path);
}

/** Where a cgroup with a pids.max can be made here (under this process's pids cgroup), or why not. */
const pidsCgroupParent = ((): { dir?: string; refused: string } => {
  const dir = linux ? ownPidsCgroup() : undefined;
  if (dir === undefined) return { refused: linux ? 'this process is in no pids cgroup' : 'not Linux' };
  const probe = join(dir, `threadleak-probe-${process.pid}`);
  try {
    mkdirSync(probe);
  } catch (error) {
    return { refused: `cannot make a cgroup in ${dir} (${(error as Error).message})` };
  }
  try {
    readFileSync(join(probe, 'pids.max'));
    return { dir, refused: '' };
  } catch {
    return { refused: `a cgroup made in ${dir} has no pids.max (the pids controller is not enabled for it)` };
  } finally {
    rmdirSync(probe);
  }
})();

describe.runIf(linux)("readHeadroom() on this machine's files", () => {
  it('this process: the numbers of whichever source wins agree with its files', () => {
    const first = readHeadroom(process.pid);
    expect(first).toBeDefined();
    const { limit, source } = first!;
    let used: () => number;
    if (source === 'threads-max') {
      expect(limit).toBe(readNumber('/proc/sys/kernel/threads-max'));
      used = systemThreads;
    } else if (source === 'RLIMIT_NPROC') {
      expect(limit).toBe(Number(/^Max processes\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]));
      used = () => userTasks(process.getuid!(), { readdirSync, readFileSync });
    } else {
      // The cgroups with this limit, among this process's and its ancestors (v1: up to /sys/fs/cgroup/pids).
      const limited: string[] = [];
      for (let dir = ownPidsCgroup() ?? ''; dir.startsWith('/sys/fs/cgroup'); dir = dirname(dir)) {
        let max = '';
        try {
          max = readFileSync(join(dir, 'pids.max'), 'utf8').trim();
        } catch {} // the root cgroup has none
        if (max === String(limit)) limited.push(dir);
      }
      expect(limited.length).toBeGreaterThan(0);
      used = () => Math.max(...limited.map((d) => readNumber(join(d, 'pids.current'))));
    }
    const still = whileStill(used, () => readHeadroom(process.pid));
    expect(still.result).toEqual({ remaining: Math.max(0, limit - still.used), limit, source });
  });

  // As root (this machine), the child runs as nobody (65534), whose only tasks are its own; elsewhere as this user.
  it("a child with its soft RLIMIT_NPROC lowered to 4000: RLIMIT_NPROC, 4000 minus its user's tasks", () => {
    const asRoot = process.getuid!() === 0;
    const script = `
      const { readHeadroom } = require(${JSON.stringify(`${ROOT}dist/headroom.js`)});
      const userTasks = ${userTasks.toString()};
      const deadline = Date.now() + 10000;
      let out;
      do {
        const before = userTasks(process.getuid(), require('node:fs'));
        const headroom = readHeadroom(process.pid);
        out = { uid: process.getuid(), before, after: userTasks(process.getuid(), require('node:fs')), headroom };
      } while (out.before !== out.after && Date.now() < deadline);
      console.log(JSON.stringify(out));`;
    // dash's ulimit calls it -p, bash's -u.
    const child = spawnSync('sh', ['-c', 'ulimit -Su 4000 2>/dev/null || ulimit -Sp 4000; exec "$0" "$@"', process.execPath, '-e', script], {
      encoding: 'utf8',
      cwd: tmpdir(),
      env: { PATH: process.env.PATH },
      timeout: 60_000,
      ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
    });
    expect(child.status, child.stderr).toBe(0);
    const out = JSON.parse(child.stdout) as { uid: number; before: number; after: number; headroom: ThreadHeadroom };
    expect(out.uid).toBe(asRoot ? 65534 : process.getuid!());
    expect(out.after).toBe(out.before);
    expect(out.headroom).toEqual({ remaining: 4000 - out.before, limit: 4000, source: 'RLIMIT_NPROC' });
  });

  // Making a cgroup takes root and a pids controller that can be used (checked by trying).
  it.skipIf(pidsCgroupParent.refused !== '')(
    `a child moved into a cgroup whose parent has pids.max 200: pids.max, 200 minus the parent's pids.current${pidsCgroupParent.refused ? ` (skipped: ${pidsCgroupParent.refused})` : ''}`,
    async () => {
      const outer = join(pidsCgroupParent.dir!, `threadleak-headroom-${process.pid}`);
      const inner = join(outer, 'inner');
      // Started (its runtime threads too) once it has printed: they are then all moved with it.
      const child = spawn(process.execPath, ['-e', 'console.log("ready"); setInterval(() => {}, 60_000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = once(child, 'exit');
      try {
        await once(child.stdout!, 'data');
        mkdirSync(inner, { recursive: true });
        writeFileSync(join(outer, 'pids.max'), '200');
        expect(readHeadroom(child.pid!)).not.toMatchObject({ source: 'pids.max', limit: 200 });
        writeFileSync(join(inner, 'cgroup.procs'), String(child.pid));
        const still = whileStill(
          () => readNumber(join(outer, 'pids.current')),
          () => ({ headroom: readHeadroom(child.pid!), inner: readNumber(join(inner, 'pids.current')) }),
        );
        expect(still.result.inner).toBe(still.used); // the parent counts its child cgroup's tasks
        expect(still.used).toBeGreaterThan(1); // Node's threads, not only its main thread
        expect(still.result.headroom).toEqual({ remaining: 200 - still.used, limit: 200, source: 'pids.max' });
      } finally {
        child.kill('SIGKILL');
        await exited;
        // A cgroup is removable once its last task is released: soon after the child is reaped.
        const deadline = Date.now() + 10_000;
        for (const dir of [inner, outer]) {
          for (;;) {
            try {
              rmdirSync(dir);
              break;
            } catch (error) {
              const code = (error as NodeJS.ErrnoException).code;
              if (code === 'ENOENT') break;
              if (code !== 'EBUSY' || Date.now() > deadline) throw error;
              await new Promise((resolve) => setTimeout(resolve, 10));
            }
          }
        }
      }
    },
  );
});
