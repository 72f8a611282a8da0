// The snapshot layer: the threads of a process as plain data, no policy.
import { listThreads } from './binding.js';
import { invalidOption, systemError } from './errors.js';

export type ThreadState = 'running' | 'sleeping' | 'blocked' | 'stopped' | 'zombie' | 'unknown';

export interface ThreadInfo {
  /** OS thread id (Linux tid, macOS thread_id, Windows thread id). */
  id: number;
  /** Identity that survives id reuse: equal for the same thread across snapshots. */
  key: string;
  /** '' when the thread has none. */
  name: string;
  state: ThreadState;
  /** The OS's own word for the state: 'S', 'TH_STATE_WAITING', 'Waiting/WrQueue'. */
  rawState: string;
  /** ms since the epoch, where the OS tells. */
  startTime?: number;
  userCpuMs: number;
  systemCpuMs: number;
}

/** One frame of a native stack. */
export interface NativeFrame {
  /** The return (or program-counter) address, in hex: '0x7f12...'. */
  address: string;
  symbol?: string;
  /** Absolute path of the shared object or executable that holds the address. */
  module?: string;
  /** Offset of the address from `symbol` (or from the module's base when no symbol). */
  offset?: number;
  /** Found by scanning the thread's stack memory, not by unwinding. */
  scanned?: boolean;
}

/** The native stack of one thread. */
export interface NativeStack {
  threadId: number;
  frames: NativeFrame[];
  /** The function the thread was started with, where it can be told. */
  startRoutine?: string;
  /** The shared object (.node, .so, .dll, .dylib) that holds it. */
  module?: string;
  /** Why frames are missing or partial (signals blocked, timed out, exited, unsupported). */
  error?: string;
}

export interface ThreadsOptions {
  /** Another process to list; default: this process. */
  pid?: number;
}

// man 5 proc, /proc/pid/stat field 3.
const LINUX_STATES: Readonly<Record<string, ThreadState>> = {
  R: 'running',
  S: 'sleeping',
  I: 'sleeping',
  P: 'sleeping',
  D: 'blocked',
  T: 'stopped',
  t: 'stopped',
  Z: 'zombie',
  X: 'zombie',
};

function portableState(rawState: string): ThreadState {
  return LINUX_STATES[rawState] ?? 'unknown';
}

function validatePid(options: unknown): number {
  if (options === undefined) return 0;
  if (options === null || typeof options !== 'object') {
    throw invalidOption('threads()', 'options', options, 'an object');
  }
  const { pid } = options as ThreadsOptions;
  if (pid === undefined) return 0;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) {
    throw invalidOption('threads()', 'options.pid', pid, 'a positive safe integer');
  }
  return pid;
}

/** The threads of this process (or of `options.pid`), as plain data. */
export function threads(options?: ThreadsOptions): ThreadInfo[] {
  const pid = validatePid(options);
  const raw = listThreads(pid === process.pid ? 0 : pid);
  if (!Array.isArray(raw)) throw systemError('threads()', raw, pid === 0 ? undefined : pid);
  const out = new Array<ThreadInfo>(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const t = raw[i]!;
    const info: ThreadInfo = {
      id: t.id,
      key: `${t.id}@${t.identity}`,
      name: t.name,
      state: portableState(t.rawState),
      rawState: t.rawState,
      userCpuMs: t.userCpuMs,
      systemCpuMs: t.systemCpuMs,
    };
    if (!Number.isNaN(t.startTime)) info.startTime = t.startTime;
    out[i] = info;
  }
  return out;
}
