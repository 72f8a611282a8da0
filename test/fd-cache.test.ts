// threads() keeps an fd open on each live thread's stat between calls. The fd
// numbers are the process's: a library with a double close() can close one of
// them, and its next open() then gets the number for a file of its own. On no
// path (the thread ends, the cache shrinks, the cache turns off) may threads()
// close that file. Each scenario runs in a child process of its own (some
// under a lower fd limit) and writes to the user's file between listings.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CHILD_PRELUDE } from './helpers.js';

const CHILD_TIMEOUT_MS = 60_000;

// In the child: `file` is the user's file, `takeOver(fd)` is the stray close of
// a cached fd followed by opens of the user's file until one gets its number,
// `write(fd, what)` records each write, `report(fd)` prints what landed.
const CHILD_HELPERS = `
  const fs = require('node:fs');
  const path = require('node:path');
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'threadleak-fdcache-'));
  const file = path.join(dir, 'user.log');
  fs.writeFileSync(file, '');
  const statFdOf = (tid) => {
    for (const fd of fs.readdirSync('/proc/self/fd')) {
      try { if (fs.readlinkSync('/proc/self/fd/' + fd).endsWith('/task/' + tid + '/stat')) return Number(fd); } catch {}
    }
    return -1;
  };
  const statFds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
    try { return /\\/task\\/\\d+\\/stat$/.test(fs.readlinkSync('/proc/self/fd/' + fd)); } catch { return false; }
  }).length;
  const takeOver = (fd) => {
    if (fd < 0) return -1;
    fs.closeSync(fd);
    const others = [];
    try {
      for (let i = 0; i < 1024; i++) {
        const got = fs.openSync(file, 'a');
        if (got === fd) return fd;
        others.push(got);
      }
      return -1;
    } finally {
      for (const other of others) fs.closeSync(other);
    }
  };
  const written = [];
  const failures = [];
  const write = (fd, what) => {
    try { fs.writeSync(fd, what + '\\n'); written.push(what + '\\n'); } catch (e) { failures.push(what + ': ' + e.code); }
  };
  const listOk = () => { const r = addon.listThreads(0); if (r.error) throw new Error(JSON.stringify(r.error)); return r; };
  const report = (fd, extra) => {
    let stillTheirs;
    try { stillTheirs = fs.fstatSync(fd).ino === fs.statSync(file).ino; } catch (e) { stillTheirs = e.code; }
    const content = fs.readFileSync(file, 'utf8');
    fs.rmSync(dir, { recursive: true, force: true });
    console.log(JSON.stringify({ took: fd >= 0, stillTheirs, failures, landed: content === written.join(''), writes: written.length, ...extra }));
  };
`;

function runChild(body: string, fdLimit?: number) {
  const script = CHILD_PRELUDE + CHILD_HELPERS + body;
  const child =
    fdLimit === undefined
      ? spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: CHILD_TIMEOUT_MS })
      : spawnSync('bash', ['-c', `ulimit -n ${fdLimit} && exec "$0" -e "$1"`, process.execPath, script], {
          encoding: 'utf8',
          timeout: CHILD_TIMEOUT_MS,
        });
  expect({ stderr: child.stderr, status: child.status, signal: child.signal }).toEqual({ stderr: '', status: 0, signal: null });
  return JSON.parse(child.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

const ALL_LANDED = { took: true, stillTheirs: true, failures: [], landed: true };

// The cache of procfs descriptors: Linux's.
describe.runIf(process.platform === 'linux')("threads()' fd cache never closes a descriptor it no longer owns", () => {
  it('when the cached thread ends', () => {
    const result = runChild(`
      const { handle, tids } = spawner.start({ count: 1 });
      listOk();
      const fd = takeOver(statFdOf(tids[0]));
      spawner.stop(handle);
      for (let i = 0; i < 50; i++) { listOk(); write(fd, 'after listing ' + i); }
      report(fd);
    `);
    expect(result).toEqual({ ...ALL_LANDED, writes: 50 });
  });

  it('when the process comes close to its fd limit (the cache turns off)', () => {
    // Limit 512: the cache keeps nothing from fd 256 on.
    const result = runChild(`
      const { handle, tids } = spawner.start({ count: 4 });
      listOk();
      const fd = takeOver(statFdOf(tids[0]));
      const held = [];
      for (let i = 0; i < 300; i++) held.push(fs.openSync('/dev/null', 'r'));
      for (let i = 0; i < 10; i++) { listOk(); write(fd, 'crowded ' + i); }
      const crowdedStatFds = statFds();
      for (const h of held) fs.closeSync(h);
      for (let i = 0; i < 10; i++) { listOk(); write(fd, 'roomy ' + i); }
      spawner.stop(handle);
      for (let i = 0; i < 10; i++) { listOk(); write(fd, 'ended ' + i); }
      report(fd, { crowdedStatFds });
    `, 512);
    expect(result).toEqual({ ...ALL_LANDED, writes: 30, crowdedStatFds: 0 });
  });

  it('when an open fails with EMFILE (the cache gives back every fd)', () => {
    // Threads a < b are cached. b's number becomes the user's file; a's is
    // closed by someone and taken by a filler, then every fd is used but one,
    // which the listing's directory fd gets: reading a afresh hits EMFILE
    // while b's entry is still waiting in the cache.
    const result = runChild(`
      const { handle, tids } = spawner.start({ count: 2 });
      const [a, b] = [...tids].sort((x, y) => x - y);
      listOk();
      const fd = takeOver(statFdOf(b));
      fs.closeSync(statFdOf(a));
      const held = [];
      let full = '';
      try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (e) { full = e.code; }
      held.sort((x, y) => x - y);
      fs.closeSync(held.splice(1, 1)[0]);
      const listed = addon.listThreads(0);
      const sawA = !listed.error && Array.from(listed.numbers).includes(a);
      for (const h of held) fs.closeSync(h);
      for (let i = 0; i < 20; i++) { listOk(); write(fd, 'after ' + i); }
      spawner.stop(handle);
      for (let i = 0; i < 20; i++) { listOk(); write(fd, 'ended ' + i); }
      report(fd, { full, sawA });
    `, 128);
    expect(result).toEqual({ ...ALL_LANDED, writes: 40, full: 'EMFILE', sawA: true });
  });

  it('when the fd limit is lowered (the cache shrinks to its new budget)', () => {
    // Limit 4096: up to 512 cached fds. Lowered to 400 (by prlimit, from
    // outside: Node cannot lower its own), the budget is 50.
    const result = runChild(`
      const { handle, tids } = spawner.start({ count: 100 });
      listOk();
      const before = statFds();
      const fd = takeOver(statFdOf(tids[99]));
      const lowered = require('node:child_process').spawnSync('prlimit', ['--pid', String(process.pid), '--nofile=400:400']).status;
      for (let i = 0; i < 10; i++) { listOk(); write(fd, 'lowered ' + i); }
      const after = statFds();
      spawner.stop(handle);
      for (let i = 0; i < 10; i++) { listOk(); write(fd, 'ended ' + i); }
      report(fd, { lowered, shrank: before >= 100 && after <= 50 });
    `, 4096);
    expect(result).toEqual({ ...ALL_LANDED, writes: 20, lowered: 0, shrank: true });
  });
});
