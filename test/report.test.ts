// Message formats that real packages bring out (the field test's findings).
import { describe, expect, it } from 'vitest';
import { formatFrame, formatStackError, formatThreadLeaks } from '../src/report.js';

describe('formatThreadLeaks: a Worker created inside a dependency', () => {
  const worker = (creationStack: string) => ({
    id: 7,
    name: 'WorkerThread',
    state: 'sleeping',
    origin: { kind: 'worker' as const, creationStack },
  });
  const piscina = [
    'at new WorkerInfo (/app/node_modules/piscina/dist/worker_pool/index.js:38:23)',
    'at ThreadPool._addNewWorker (/app/node_modules/piscina/dist/index.js:139:28)',
    'at ThreadPool._ensureMinimumWorkers (/app/node_modules/piscina/dist/index.js:132:18)',
    'at new ThreadPool (/app/node_modules/piscina/dist/index.js:123:14)',
    'at new Piscina (/app/node_modules/piscina/dist/index.js:656:53)',
    'at startPool (file:///app/pool.mjs:4:31)',
    'at file:///app/pool.mjs:6:14',
  ];

  it("adds the caller's own frame when every top frame is the dependency's", () => {
    const lines = formatThreadLeaks([worker(piscina.join('\n'))], 100).split('\n');
    expect(lines.slice(2)).toEqual([
      '      created at:',
      ...piscina.slice(0, 4).map((frame) => `        ${frame}`),
      '        ...',
      '        at startPool (file:///app/pool.mjs:4:31)',
    ]);
  });

  it('shows the top frames alone when one of them is the caller\'s own, or when there is none', () => {
    const direct = ['at startPool (file:///app/pool.mjs:4:31)', ...piscina.slice(0, 5)];
    expect(formatThreadLeaks([worker(direct.join('\n'))], 100).split('\n').slice(3)).toEqual(
      direct.slice(0, 4).map((frame) => `        ${frame}`),
    );
    const onlyDependency = piscina.slice(0, 5);
    expect(formatThreadLeaks([worker(onlyDependency.join('\n'))], 100).split('\n').slice(3)).toEqual(
      onlyDependency.slice(0, 4).map((frame) => `        ${frame}`),
    );
    // The caller's frame right after the top four: no '...'.
    const next = [...piscina.slice(0, 4), 'at startPool (file:///app/pool.mjs:4:31)'];
    expect(formatThreadLeaks([worker(next.join('\n'))], 100).split('\n').slice(3)).toEqual(next.map((frame) => `        ${frame}`));
  });

  it('knows Windows paths', () => {
    const windows = piscina.map((frame) => frame.replaceAll('/app/node_modules/', 'C:\\app\\node_modules\\'));
    expect(formatThreadLeaks([worker(windows.join('\n'))], 100)).toContain('        at startPool (file:///app/pool.mjs:4:31)');
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
