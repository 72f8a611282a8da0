// Thread headroom (Linux): how many more threads a process can start before a
// limit stops the next one (clone() failing with EAGAIN). monitorThreads()
// reads it at every sample, so it is synchronous, costs a handful of small
// file reads in the common case, and never throws: a file that is missing,
// unreadable or garbled only leaves its source out.
//
// Three limits apply to every new thread; the answer is the one with the
// fewest threads left:
// 1. 'pids.max': the cgroup pids controller. /proc/<pid>/cgroup names the
//    process's cgroup: the `N:pids:/path` line (cgroup v1, under
//    /sys/fs/cgroup/pids) or else the `0::/path` line (v2, under /sys/fs/cgroup,
//    or /sys/fs/cgroup/unified on a hybrid system). A limit may sit on any
//    ancestor, and an ancestor's pids.current counts its whole subtree, so each
//    cgroup from the process's up to the mount's root is read and the tightest
//    pids.max - pids.current wins ('max' is no limit there). In a container the
//    path is often '/' (a cgroup namespace, or v1's bind-mounted cgroup): the
//    mount's root itself is then the container's cgroup and has the limit.
//    Which of those cgroups have a numeric pids.max is cached per content of
//    /proc/<pid>/cgroup (re-read at every call, so a process moved to another
//    cgroup is followed at once) and derived again every REDERIVE_EVERY_CALLS
//    calls (so a limit set later on another ancestor is seen); pids.max and
//    pids.current of the cached cgroups are read at every call.
// 2. 'RLIMIT_NPROC': the soft 'Max processes' of /proc/<pid>/limits. The
//    kernel counts every task (thread) whose real uid is the process's (the
//    first field of `Uid:` in /proc/<pid>/status), in every process of that
//    user. Root and tasks with CAP_SYS_ADMIN or CAP_SYS_RESOURCE in their
//    effective set (CapEff bits 21 and 24) are exempt: no source then.
// 3. 'threads-max': /proc/sys/kernel/threads-max minus the system's threads
//    (the total of the 4th field of /proc/loadavg, `running/total`).
//
// Counting a user's threads takes a scan of every /proc/<n>/status, which costs
// far more than the rest together. It is skipped when it cannot change the
// answer: the user's threads are at most the system's, so
// `RLIMIT_NPROC - system threads` is a lower bound of that source's remaining,
// and when that bound is already >= the smallest remaining of the other
// sources, RLIMIT_NPROC cannot be the smallest. The kernel's default soft
// RLIMIT_NPROC is threads-max / 2, so an unprivileged process with no tighter
// cgroup limit scans at every call (RLIMIT_NPROC is then its smallest limit,
// and only the scan says by how much); a user slice's TasksMax (systemd: 33 %
// of the kernel's limit) or a container's pids.max is usually tighter than the
// bound, and root or an unlimited RLIMIT_NPROC never scans.
//
// A process that is gone (no /proc/<pid>/limits, which every live process has)
// has no headroom: undefined, even though the system-wide threads-max could be
// read. Everything is the kernel's view from the reading process: in a pid
// namespace the scan sees only that namespace's processes (an undercount), and
// in a user namespace the kernel keeps RLIMIT_NPROC counts per namespace;
// neither is corrected.
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import type { ThreadHeadroom } from './types.js';

/** Where /proc and /sys are: the real ones by default, a fake tree in tests. */
export interface HeadroomRoots {
  proc?: string;
  sys?: string;
}

/** Cached cgroups are derived again from the files after this many calls that used them. */
export const REDERIVE_EVERY_CALLS = 10;
/** How many distinct /proc/<pid>/cgroup contents (and roots) keep a cache entry. */
const MAX_CACHED_CGROUPS = 64;

// CapEff bits that exempt a task from RLIMIT_NPROC.
const CAP_SYS_ADMIN = 21;
const CAP_SYS_RESOURCE = 24;

/**
 * How many more threads process `pid` can start (Linux): the smallest remaining
 * of its cgroups' pids.max, its user's RLIMIT_NPROC and the kernel's
 * threads-max. undefined on other OSes, for a process that is gone, and when
 * no source could be read.
 */
export function readHeadroom(pid: number, roots?: HeadroomRoots): ThreadHeadroom | undefined {
  if (process.platform !== 'linux') return undefined;
  const proc = roots?.proc ?? '/proc';
  const sys = roots?.sys ?? '/sys';

  const limits = readProcessFile(`${proc}/${pid}/limits`);
  if (limits === GONE) return undefined;

  let best: ThreadHeadroom | undefined;
  const cgroup = cgroupHeadroom(proc, sys, pid);
  if (cgroup !== undefined) best = { ...cgroup, source: 'pids.max' };

  const systemThreads = readSystemThreads(proc);
  const threadsMax = readCount(`${proc}/sys/kernel/threads-max`);
  if (threadsMax !== undefined && systemThreads !== undefined) {
    best = smaller(best, { remaining: threadsMax - systemThreads, limit: threadsMax, source: 'threads-max' });
  }

  const nproc = limits === undefined ? undefined : softProcessLimit(limits);
  // The user's threads are at most the system's: nproc - systemThreads is a lower bound of this source's remaining.
  const couldBeSmallest =
    nproc !== undefined && (best === undefined || systemThreads === undefined || nproc - systemThreads < best.remaining);
  if (couldBeSmallest) {
    const owner = readOwner(`${proc}/${pid}/status`);
    const tasks = owner === undefined || owner.exempt ? undefined : countUserTasks(proc, owner.uid);
    if (tasks !== undefined) best = smaller(best, { remaining: nproc - tasks, limit: nproc, source: 'RLIMIT_NPROC' });
  }

  return best === undefined ? undefined : { ...best, remaining: Math.max(0, best.remaining) };
}

/** The one with fewer threads left; `current` on a tie. */
function smaller(current: ThreadHeadroom | undefined, other: ThreadHeadroom): ThreadHeadroom {
  return current === undefined || other.remaining < current.remaining ? other : current;
}

// ------------------------------------------------------------ reading files

let scratch = Buffer.allocUnsafe(8192);

/** The whole file as text; throws what open/read throw. */
function readWhole(path: string): string {
  const fd = openSync(path, 'r');
  try {
    let length = 0;
    for (;;) {
      if (length === scratch.length) {
        const bigger = Buffer.allocUnsafe(scratch.length * 2);
        scratch.copy(bigger, 0, 0, length);
        scratch = bigger;
      }
      const read = readSync(fd, scratch, length, scratch.length - length, null);
      if (read === 0) break;
      length += read;
    }
    return scratch.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/** The file's text, or undefined when it cannot be read. */
function readText(path: string): string | undefined {
  try {
    return readWhole(path);
  } catch {
    return undefined;
  }
}

const GONE = Symbol('gone');

/** A file of /proc/<pid>: GONE when the process is (no such file, or ESRCH), undefined when unreadable. */
function readProcessFile(path: string): string | undefined | typeof GONE {
  try {
    return readWhole(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ESRCH' ? GONE : undefined;
  }
}

/** A non-negative integer written alone in a file ('max' and garbage: undefined). */
function readCount(path: string): number | undefined {
  const text = readText(path);
  return text === undefined ? undefined : parseCount(text.trim());
}

/** A decimal count; more than 15 digits is no limit that could matter (and no exact number). */
function parseCount(text: string): number | undefined {
  if (!/^\d{1,15}$/.test(text)) return undefined;
  return Number(text);
}

// ------------------------------------------------------------ threads-max

/** The system's threads: `total` of `running/total`, the 4th field of /proc/loadavg. */
function readSystemThreads(proc: string): number | undefined {
  const text = readText(`${proc}/loadavg`);
  if (text === undefined) return undefined;
  const field = text.trim().split(/\s+/)[3];
  const slash = field?.indexOf('/') ?? -1;
  return slash < 0 ? undefined : parseCount(field!.slice(slash + 1));
}

// ------------------------------------------------------------ RLIMIT_NPROC

/** The soft limit of 'Max processes' in /proc/<pid>/limits; undefined when unlimited or unreadable. */
function softProcessLimit(limits: string): number | undefined {
  const match = /^Max processes[ \t]+(\S+)/m.exec(limits);
  return match === null ? undefined : parseCount(match[1]!);
}

/** The real uid of /proc/<pid>/status and whether RLIMIT_NPROC spares it (root, CAP_SYS_ADMIN, CAP_SYS_RESOURCE). */
function readOwner(path: string): { uid: number; exempt: boolean } | undefined {
  const text = readText(path);
  if (text === undefined) return undefined;
  const uidMatch = /^Uid:[ \t]+(\d+)/m.exec(text);
  const uid = uidMatch === null ? undefined : parseCount(uidMatch[1]!);
  if (uid === undefined) return undefined;
  const capMatch = /^CapEff:[ \t]+([0-9a-fA-F]{1,16})[ \t]*$/m.exec(text);
  // Bits 21 and 24 lie in the low 32 bits: the last 8 hex digits.
  const low = capMatch === null ? 0 : parseInt(capMatch[1]!.slice(-8), 16);
  const capable = ((low >>> CAP_SYS_ADMIN) & 1) === 1 || ((low >>> CAP_SYS_RESOURCE) & 1) === 1;
  return { uid, exempt: uid === 0 || capable };
}

/** The threads of every process whose real uid is `uid` (Threads: of each /proc/<n>/status); undefined if /proc cannot be listed. */
function countUserTasks(proc: string, uid: number): number | undefined {
  let names: string[];
  try {
    names = readdirSync(proc);
  } catch {
    return undefined;
  }
  let tasks = 0;
  for (const name of names) {
    const first = name.charCodeAt(0);
    if (first < 48 || first > 57 || !/^\d+$/.test(name)) continue;
    const text = readText(`${proc}/${name}/status`);
    if (text === undefined) continue; // exited since the listing
    const uidMatch = /^Uid:[ \t]+(\d+)/m.exec(text);
    if (uidMatch === null || Number(uidMatch[1]) !== uid) continue;
    const threadsMatch = /^Threads:[ \t]+(\d+)/m.exec(text);
    tasks += threadsMatch === null ? 1 : Number(threadsMatch[1]);
  }
  return tasks;
}

// ------------------------------------------------------------ pids.max

interface CgroupCache {
  /** The cgroup directories, the process's own first, whose pids.max was a number when derived. */
  limited: string[];
  /** Calls that used it since it was derived. */
  uses: number;
}

/** Keyed by sys root and the text of /proc/<pid>/cgroup: the cgroups depend on nothing else. */
const cgroupCaches = new Map<string, CgroupCache>();

/** The tightest pids.max - pids.current over the process's cgroup and its ancestors. */
function cgroupHeadroom(proc: string, sys: string, pid: number): { remaining: number; limit: number } | undefined {
  const text = readText(`${proc}/${pid}/cgroup`);
  if (text === undefined) return undefined;
  const key = `${sys}\0${text}`;
  let cache = cgroupCaches.get(key);
  if (cache === undefined || cache.uses >= REDERIVE_EVERY_CALLS) {
    cache = { limited: limitedCgroups(sys, text), uses: 0 };
    cgroupCaches.delete(key);
    cgroupCaches.set(key, cache);
    if (cgroupCaches.size > MAX_CACHED_CGROUPS) cgroupCaches.delete(cgroupCaches.keys().next().value!);
  }
  cache.uses++;
  let best: { remaining: number; limit: number } | undefined;
  for (const dir of cache.limited) {
    const limit = readCount(`${dir}/pids.max`);
    if (limit === undefined) continue; // back to 'max', or gone: no limit here now
    const current = readCount(`${dir}/pids.current`);
    if (current === undefined) continue;
    if (best === undefined || limit - current < best.remaining) best = { remaining: limit - current, limit };
  }
  return best;
}

/** Every cgroup directory from the process's up to the mount's root whose pids.max is a number. */
function limitedCgroups(sys: string, cgroupText: string): string[] {
  const placement = pidsPlacement(sys, cgroupText);
  if (placement === undefined) return [];
  const limited: string[] = [];
  for (const mount of placement.mounts) {
    for (let depth = placement.segments.length; depth >= 0; depth--) {
      const dir = depth === 0 ? mount : `${mount}/${placement.segments.slice(0, depth).join('/')}`;
      if (readCount(`${dir}/pids.max`) !== undefined) limited.push(dir);
    }
  }
  return limited;
}

/** cgroup v2 is mounted at /sys/fs/cgroup, or at /sys/fs/cgroup/unified beside v1 (hybrid), where /sys/fs/cgroup is no cgroup. */
function v2Mounts(base: string): string[] {
  return readText(`${base}/cgroup.controllers`) === undefined ? [base, `${base}/unified`] : [base];
}

/** Where the pids controller is mounted (candidates) and the process's cgroup path in it, as segments. */
function pidsPlacement(sys: string, cgroupText: string): { mounts: string[]; segments: string[] } | undefined {
  let v1: { controllers: string; path: string } | undefined;
  let v2: string | undefined;
  for (const line of cgroupText.split('\n')) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const hierarchy = line.slice(0, first);
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (hierarchy === '0' && controllers === '') v2 = path;
    else if (controllers.split(',').includes('pids')) v1 = { controllers, path };
  }
  // The pids controller is bound to one hierarchy: a v1 pids line means it is not in v2.
  const base = `${sys}/fs/cgroup`;
  const found = v1 !== undefined
    ? { mounts: [...new Set([`${base}/pids`, `${base}/${v1.controllers}`])], path: v1.path }
    : v2 !== undefined
      ? { mounts: v2Mounts(base), path: v2 }
      : undefined;
  if (found === undefined) return undefined;
  // v2 marks a removed cgroup ' (deleted)'; a cgroup outside our cgroup namespace shows as '/..'.
  const path = found.path.endsWith(' (deleted)') ? found.path.slice(0, -' (deleted)'.length) : found.path;
  if (!path.startsWith('/')) return undefined;
  const segments = path.split('/').filter((segment) => segment !== '' && segment !== '.');
  if (segments.includes('..')) return undefined;
  return { mounts: found.mounts, segments };
}
