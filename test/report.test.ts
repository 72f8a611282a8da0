// Message formats that real packages bring out (the field test's findings).
import { describe, expect, it } from 'vitest';
import { PISCINA_CREATION_STACK } from './helpers.js';
import { formatCannotStopThreads, formatFrame, formatStackError, formatThreadLeaks, formatUninterruptedStack } from '../src/report.js';

// A creation stack's frames as the report shows them: without V8's "at ".
const shown = (frame: string) => `        ${frame.replace(/^at /, '')}`;

describe('formatThreadLeaks: a Worker created inside a dependency', () => {
  const worker = (creationStack: string) => ({
    id: 7,
    name: 'WorkerThread',
    state: 'sleeping',
    origin: { kind: 'worker' as const, creationStack },
  });
  const piscina = PISCINA_CREATION_STACK;

  it("adds the caller's own frame when every top frame is the dependency's", () => {
    const lines = formatThreadLeaks([worker(piscina.join('\n'))], 100).split('\n');
    expect(lines.slice(2)).toEqual([
      '      created at:',
      ...piscina.slice(0, 4).map(shown),
      '        ...',
      '        startPool (file:///app/pool.mjs:4:31)',
    ]);
  });

  it('shows the top frames alone when one of them is the caller\'s own, or when there is none', () => {
    const direct = ['at startPool (file:///app/pool.mjs:4:31)', ...piscina.slice(0, 5)];
    expect(formatThreadLeaks([worker(direct.join('\n'))], 100).split('\n').slice(3)).toEqual(direct.slice(0, 4).map(shown));
    const onlyDependency = piscina.slice(0, 5);
    expect(formatThreadLeaks([worker(onlyDependency.join('\n'))], 100).split('\n').slice(3)).toEqual(onlyDependency.slice(0, 4).map(shown));
    // The caller's frame right after the top four: no '...'.
    const next = [...piscina.slice(0, 4), 'at startPool (file:///app/pool.mjs:4:31)'];
    expect(formatThreadLeaks([worker(next.join('\n'))], 100).split('\n').slice(3)).toEqual(next.map(shown));
  });

  it('knows Windows paths', () => {
    const windows = piscina.map((frame) => frame.replaceAll('/app/node_modules/', 'C:\\app\\node_modules\\'));
    expect(formatThreadLeaks([worker(windows.join('\n'))], 100)).toContain('        startPool (file:///app/pool.mjs:4:31)');
  });
});

describe('formatStackError', () => {
  it("explains 'stack-low' and keeps the native detail", () => {
    const text = formatStackError(4242, {
      code: 'stack-low',
      detail: 'only 3000 bytes of stack are left below its stack pointer; a signal needs 4608',
      signal: 64,
      timeoutMs: 100,
      recoveredFrames: 3,
      platform: 'linux',
    });
    expect(text).toMatch(/^thread 4242 is too close to the end of its stack for the stack probe \(signal 64\) to run safely on it: only 3000 bytes/);
  });

  it("says a probe never sent ('not-sent') was not sent, not that the thread did not answer", () => {
    const text = formatStackError(77, { code: 'not-sent', signal: 64, timeoutMs: 100, recoveredFrames: 0, platform: 'linux' });
    expect(text).toMatch(/^thread 77 was not probed: within 100 ms it was never seen asleep in a system call or on a CPU/);
    expect(text).not.toMatch(/did not answer/);
  });
});

describe('formatFrame', () => {
  it('names a frame by symbol and offset, or by its offset in the module for addr2line', () => {
    const libc = '/usr/lib/x86_64-linux-gnu/libc.so.6';
    expect(formatFrame({ address: '0x7f0abe71f829', symbol: 'syscall', module: libc, offset: 25 })).toBe(`syscall+0x19 (${libc})`);
    expect(formatFrame({ address: '0x7f0abe6a71f5', module: libc, offset: 561653, scanned: true })).toBe(
      `0x7f0abe6a71f5 (${libc}+0x891f5) [scanned]`,
    );
    expect(formatFrame({ address: '0x3e1c0a4b2f00' })).toBe('0x3e1c0a4b2f00');
  });
});

const LIBC = '/usr/lib/x86_64-linux-gnu/libc.so.6';
const ADDON = '/app/node_modules/foo/build/Release/foo.node';

/** A native leaked thread whose stack was read as a leak report reads a thread blocked in a system call. */
function nativeLeak(id: number, overrides: { scanned?: boolean; error?: string } = {}) {
  const scanned = overrides.scanned ?? true;
  return {
    id,
    name: 'foo-pool',
    state: 'sleeping',
    origin: { kind: 'native' as const, module: ADDON, startRoutine: 'foo::Pool::Run()' },
    stack: {
      threadId: id,
      frames: [
        { address: '0x7f3a1c8a65d8', symbol: 'pthread_cond_wait', module: LIBC, offset: 488 },
        { address: '0x7f3a1c4297bb', symbol: 'foo::Queue::Pop()', module: ADDON, offset: 187, scanned },
        { address: '0x7f3a1c4297cc', symbol: 'foo::Pool::Run()', module: ADDON, offset: 33, scanned },
      ],
      error: 'error' in overrides ? overrides.error : formatUninterruptedStack(id),
    },
  };
}

describe('formatThreadLeaks: native frames no test runner takes for JavaScript frames', () => {
  it('numbers native frames as gdb does, and no line starts with "at "', () => {
    const message = formatThreadLeaks(
      [nativeLeak(41), { id: 42, name: 'w', state: 'running', origin: { kind: 'worker', creationStack: 'at start (file:///app/a.mjs:1:2)' } }],
      100,
    );
    expect(message.split('\n').slice(2, 5)).toEqual([
      `        #0 pthread_cond_wait+0x1e8 (${LIBC})`,
      `        #1 foo::Queue::Pop()+0xbb (${ADDON}) [scanned]`,
      `        #2 foo::Pool::Run()+0x21 (${ADDON}) [scanned]`,
    ]);
    expect(message).toContain('\n      created at:\n        start (file:///app/a.mjs:1:2)\n');
    expect(message).not.toMatch(/^\s*at\s/m);
  });
});

describe('formatThreadLeaks: the note on stacks read without a signal', () => {
  it('says it once per report, under the threads, not once per thread', () => {
    const message = formatThreadLeaks([nativeLeak(41), nativeLeak(42), nativeLeak(43)], 100);
    expect(message).not.toContain('(stack:');
    expect(message).not.toContain('blocked in a system call');
    expect(message.match(/\[scanned\]: /g)).toHaveLength(1);
    expect(message.split('\n').at(-1)).toMatch(/^ {2}\[scanned\]: read without interrupting the thread/);
    expect(formatCannotStopThreads([nativeLeak(41), nativeLeak(42)]).match(/\[scanned\]: /g)).toHaveLength(1);
  });

  it('leaves it out where no frame shown was scanned', () => {
    const message = formatThreadLeaks([nativeLeak(41, { scanned: false, error: undefined })], 100);
    expect(message).not.toContain('[scanned]');
  });

  it("keeps a thread's own reason, without the recovery text the note already gives", () => {
    const blocked = formatStackError(41, { code: 'signal-blocked', signal: 64, timeoutMs: 100, recoveredFrames: 3, platform: 'linux' });
    const message = formatThreadLeaks([nativeLeak(41, { error: blocked }), nativeLeak(42)], 100);
    expect(message).toContain('\n        (stack: thread 41 blocks the stack probe (signal 64), as libraries often do in their worker threads)\n');
    expect(message.match(/\(stack: /g)).toHaveLength(1);
    expect(message.match(/\[scanned\]: /g)).toHaveLength(1);
  });
});
