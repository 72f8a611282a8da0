// The portable thread state of an OS's raw state word (the addon's rawState).
import type { ThreadState } from './types.js';

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

// Windows: rawState is the KTHREAD_STATE name, and for a Waiting thread
// "Waiting/<KWAIT_REASON name>" (native/win32/threads_win32.cc).
const WINDOWS_STATES: ReadonlyMap<string, ThreadState> = new Map([
  ['Running', 'running'],
  ['Ready', 'running'],
  ['Standby', 'running'], // chosen to run next on a processor
  ['DeferredReady', 'running'],
  ['Terminated', 'zombie'],
]);

// Waits that are Windows' uninterruptible sleep (Linux 'D'): the executive's
// own waits (a synchronous I/O waits for its IRP with reason Executive) and
// memory-manager waits (page-in, page-out, pool, free page, virtual memory,
// physical fault). Every other wait (UserRequest, WrQueue, DelayExecution,
// WrAlertByThreadId, locks, ...) is 'sleeping'.
const WINDOWS_BLOCKING_WAITS: ReadonlySet<string> = new Set([
  'Executive',
  'WrExecutive',
  'FreePage',
  'WrFreePage',
  'PageIn',
  'WrPageIn',
  'PoolAllocation',
  'WrPoolAllocation',
  'WrVirtualMemory',
  'WrPageOut',
  'WrPhysicalFault',
]);

const WINDOWS_STOPPING_WAITS: ReadonlySet<string> = new Set(['Suspended', 'WrSuspended']);

// macOS: rawState is the name of the TH_STATE_* constant of the thread's
// run state (mach/thread_info.h), or its number when newer than the table
// (native/darwin/threads_darwin.cc). RUNNING is runnable (on a CPU or
// waiting for one), STOPPED suspended (thread_suspend), HALTED ended.
const DARWIN_STATES: ReadonlyMap<string, ThreadState> = new Map([
  ['TH_STATE_RUNNING', 'running'],
  ['TH_STATE_STOPPED', 'stopped'],
  ['TH_STATE_WAITING', 'sleeping'],
  ['TH_STATE_UNINTERRUPTIBLE', 'blocked'],
  ['TH_STATE_HALTED', 'zombie'],
]);

function windowsState(rawState: string): ThreadState {
  const fixed = WINDOWS_STATES.get(rawState);
  if (fixed !== undefined) return fixed;
  if (!rawState.startsWith('Waiting/')) return 'unknown'; // Initialized, Transition, '' (Toolhelp32), ...
  const reason = rawState.slice('Waiting/'.length);
  if (WINDOWS_STOPPING_WAITS.has(reason)) return 'stopped';
  if (WINDOWS_BLOCKING_WAITS.has(reason)) return 'blocked';
  return 'sleeping';
}

/**
 * The portable state of `rawState` as the addon reports it on `platform`
 * (threads of another pid are on the same OS, so this process's platform).
 */
export function portableState(rawState: string, platform: NodeJS.Platform = process.platform): ThreadState {
  if (platform === 'win32') return windowsState(rawState);
  if (platform === 'darwin') return DARWIN_STATES.get(rawState) ?? 'unknown';
  return LINUX_STATES[rawState] ?? 'unknown';
}
