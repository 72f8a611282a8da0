// The probe signal: chosen at run time, never one someone else uses, never
// given back to SIG_DFL. This file runs in its own process (vitest forks), and
// its first test must run before any other stack capture in that process.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { threadStack } from '../src/index.js';
import { CHILD_PRELUDE, spawner, waitUntil } from './helpers.js';

// SIGRTMAX on Linux (x86-64 and arm64, glibc and musl alike): _NSIG - 1.
const SIGRTMAX = 64;
// Signals Node itself handles: SIGINT, SIGUSR1, SIGSEGV, SIGTERM, SIGPROF, and glibc's 32/33.
const NODE_SIGNALS = [2, 10, 11, 15, 27, 32, 33];

/** The signals with a handler in this process (SigCgt of /proc/self/status). */
function caught(): Set<number> {
  const mask = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
  const out = new Set<number>();
  for (let sig = 1; sig <= 64; sig++) if (mask & (1n << BigInt(sig - 1))) out.add(sig);
  return out;
}

const handles: number[] = [];
afterEach(() => {
  while (handles.length) spawner.stop(handles.pop()!);
});

// The stack probe signal: Linux's (Windows suspends the thread instead).
describe.runIf(process.platform === 'linux')('the probe signal in this process', () => {
  let probe = 0;

  it('is a free real-time signal, not one Node uses, and leaves another RT handler alone', async () => {
    // Someone else's handler on SIGRTMAX, installed before threadleak's first capture.
    spawner.countSignal(SIGRTMAX);
    const before = caught();
    expect(before.has(SIGRTMAX)).toBe(true);
    const { handle, tids } = spawner.start({ count: 1 });
    handles.push(handle);
    expect(threadStack(tids[0]!).error).toBeUndefined();
    const added = [...caught()].filter((sig) => !before.has(sig));
    expect(added).toHaveLength(1);
    probe = added[0]!;
    expect(probe).toBeGreaterThanOrEqual(34);
    expect(probe).toBeLessThan(SIGRTMAX);
    expect(NODE_SIGNALS).not.toContain(probe);

    // The other handler still gets its signal.
    process.kill(process.pid, SIGRTMAX);
    expect(await waitUntil(() => spawner.signalCount(SIGRTMAX) === 1)).toBe(true);
    // Captures never touched it.
    for (let i = 0; i < 20; i++) expect(threadStack(tids[0]!).error).toBeUndefined();
    expect(spawner.signalCount(SIGRTMAX)).toBe(1);
  });

  it('names the signal in the error of a thread that blocks it', () => {
    const { handle, tids } = spawner.start({ count: 1, blockSignals: true });
    handles.push(handle);
    expect(threadStack(tids[0]!).error).toContain(`blocks the stack probe (signal ${probe})`);
  });

  it('survives the probe signal sent by someone else (it is never given back to SIG_DFL)', async () => {
    // SI_USER, not a probe: dropped (the previous disposition was SIG_DFL,
    // whose action would terminate the process).
    process.kill(process.pid, probe);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(caught().has(probe)).toBe(true);
    const { handle, tids } = spawner.start({ count: 1 });
    handles.push(handle);
    expect(threadStack(tids[0]!).startRoutine).toBe('spawner_thread_main');
  });

  // Last in this process: it leaves the probe off for good.
  it('stops probing once another library installs its own handler on the signal, and never sends it again', () => {
    spawner.countSignal(probe);
    const { handle, tids } = spawner.start({ count: 1 });
    handles.push(handle);
    for (let i = 0; i < 5; i++) {
      const stack = threadStack(tids[0]!);
      expect(stack.error).toMatch(new RegExp(`^no stack probe: signal ${probe} was taken over by another handler; frames recovered`));
      expect(stack.startRoutine).toBe('spawner_thread_main');
    }
    expect(spawner.signalCount(probe)).toBe(0);
  });
});

// Each run is a fresh process: the probe is installed once per process.
function inChild(env: Record<string, string>): { signals: number[]; result: { frames: { symbol?: string; module?: string; scanned?: boolean }[]; error?: string; detail?: string; signal?: number } } {
  const script = `
    ${CHILD_PRELUDE}
    const { handle, tids } = spawner.start({ count: 1 });
    const result = addon.captureStack(tids[0], 1000);
    spawner.stop(handle);
    const mask = BigInt('0x' + /^SigCgt:\\s*([0-9a-f]+)$/m.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'))[1]);
    const signals = [];
    for (let sig = 34; sig <= 64; sig++) if (mask & (1n << BigInt(sig - 1))) signals.push(sig);
    console.log(JSON.stringify({ signals, result }));
  `;
  const child = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 20_000,
  });
  expect(child.stderr).toBe('');
  expect(child.status).toBe(0);
  return JSON.parse(child.stdout);
}

// The stack probe signal's settings: Linux's.
describe.runIf(process.platform === 'linux')('THREADLEAK_STACK_SIGNAL and THREADLEAK_STACK_UNWIND', () => {
  it('uses the signal it names', () => {
    const { signals, result } = inChild({ THREADLEAK_STACK_SIGNAL: '50' });
    expect(result.error).toBeUndefined();
    expect(result.signal).toBe(50);
    expect(signals).toEqual([50]);
    expect(result.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
  });

  it('0 turns the probe off: no handler, frames from the kernel view only', () => {
    const { signals, result } = inChild({ THREADLEAK_STACK_SIGNAL: '0' });
    expect(signals).toEqual([]);
    expect(result.error).toBe('no-signal');
    expect(result.detail).toBe('THREADLEAK_STACK_SIGNAL=0 turns the probe off');
    expect(result.frames.slice(1).every((f) => f.scanned)).toBe(true);
    expect(result.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
  });

  it('refuses a value that is not a free real-time signal, and takes no signal then', () => {
    for (const [value, why] of [
      ['abc', 'is not a signal number'],
      ['12abc', 'is not a signal number'],
      ['10', 'is not a real-time signal'],
      ['65', 'is not a real-time signal'],
    ] as const) {
      const { signals, result } = inChild({ THREADLEAK_STACK_SIGNAL: value });
      expect(signals).toEqual([]);
      expect(result.error).toBe('no-signal');
      expect(result.detail).toMatch(new RegExp(`^THREADLEAK_STACK_SIGNAL=${value} ${why} \\(real-time signals are 3[45]\\.\\.64\\)$`));
    }
  });

  it('THREADLEAK_STACK_UNWIND=0 copies the stack in the handler and scans it', () => {
    const { signals, result } = inChild({ THREADLEAK_STACK_UNWIND: '0' });
    expect(signals).toEqual([SIGRTMAX]);
    expect(result.error).toBeUndefined();
    // The interrupted PC, then scanned return addresses.
    expect(result.frames[0]!.scanned).toBeUndefined();
    expect(result.frames.length).toBeGreaterThan(2);
    expect(result.frames.slice(1).every((f) => f.scanned)).toBe(true);
    expect(result.frames.map((f) => f.symbol)).toContain('spawner_thread_main');
  });
});
