// The macOS parts that are plain TypeScript: the state table (src/states.ts)
// and attribution of macOS frames (src/attribution.ts), as the darwin backend
// (native/darwin/) reports them. They run everywhere; the native backend
// itself is compiled here with zig and runs only on macOS.
import { describe, expect, it } from 'vitest';
import { attributeStack, isSystemRuntimeModule } from '../src/attribution.js';
import { portableState } from '../src/states.js';

const KERNEL = '/usr/lib/system/libsystem_kernel.dylib';
const PTHREAD = '/usr/lib/system/libsystem_pthread.dylib';
const PLATFORM = '/usr/lib/system/libsystem_platform.dylib';
const MALLOC = '/usr/lib/system/libsystem_malloc.dylib';
const LIBCXX = '/usr/lib/libc++.1.dylib';
const DISPATCH = '/usr/lib/system/libdispatch.dylib';
const DYLD = '/usr/lib/dyld';
const NODE = '/opt/homebrew/Cellar/node/24.1.0/bin/node';
const ADDON = '/Users/me/app/node_modules/native/build/Release/native.node';
// What dladdr + __cxa_demangle give for libc++'s std::thread entry, instantiated in the addon.
const THREAD_PROXY =
  'void* std::__1::__thread_proxy[abi:ne190100]<std::__1::tuple<std::__1::unique_ptr<std::__1::__thread_struct, ' +
  'std::__1::default_delete<std::__1::__thread_struct> >, void (*)()> >(void*)';

const pthreadEntry = [
  { symbol: '_pthread_start', module: PTHREAD },
  { symbol: 'thread_start', module: PTHREAD },
];

describe('portableState on macOS', () => {
  it('maps the TH_STATE_* names as DESIGN.md says', () => {
    const table: Record<string, string> = {
      TH_STATE_RUNNING: 'running',
      TH_STATE_STOPPED: 'stopped',
      TH_STATE_WAITING: 'sleeping',
      TH_STATE_UNINTERRUPTIBLE: 'blocked',
      TH_STATE_HALTED: 'zombie',
      '6': 'unknown', // a state newer than the headers is given as its number
      '': 'unknown',
      R: 'unknown',
      Running: 'unknown',
      constructor: 'unknown',
    };
    for (const [raw, state] of Object.entries(table)) expect(portableState(raw, 'darwin'), raw).toBe(state);
  });

  it('keeps the macOS names out of the Linux and Windows tables', () => {
    expect(portableState('TH_STATE_RUNNING', 'linux')).toBe('unknown');
    expect(portableState('TH_STATE_RUNNING', 'win32')).toBe('unknown');
    expect(portableState('R', 'darwin')).toBe('unknown');
  });
});

describe('attribution of macOS frames', () => {
  it('takes a stack that ends in thread_start as reaching the entry, and names the pthread entry', () => {
    const frames = [
      { symbol: '__psynch_cvwait', module: KERNEL },
      { symbol: '_pthread_cond_wait', module: PTHREAD },
      { symbol: 'std::__1::condition_variable::wait(std::__1::unique_lock<std::__1::mutex>&)', module: LIBCXX },
      { symbol: 'spawner_thread_body', module: ADDON },
      { symbol: 'spawner_thread_main', module: ADDON },
      ...pthreadEntry,
    ];
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'spawner_thread_main' });
  });

  it("passes over libc++'s std::thread entry (a function template: its name starts with its return type)", () => {
    const frames = [
      { symbol: '__psynch_cvwait', module: KERNEL },
      { symbol: 'spawner_std_thread_main', module: ADDON },
      { symbol: THREAD_PROXY, module: ADDON },
      ...pthreadEntry,
    ];
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'spawner_std_thread_main' });
    // Only the entry itself outside the runtimes: it is still the addon's thread.
    expect(attributeStack([{ symbol: THREAD_PROXY, module: ADDON }, ...pthreadEntry])).toEqual({
      module: ADDON,
      startRoutine: THREAD_PROXY,
    });
  });

  it('passes over the lock and malloc primitives of libsystem_platform and libsystem_malloc', () => {
    const frames = [
      { symbol: '__ulock_wait', module: KERNEL },
      { symbol: '_os_unfair_lock_lock_slow', module: PLATFORM },
      { symbol: 'szone_malloc_should_clear', module: MALLOC },
      { symbol: 'worker', module: ADDON },
      ...pthreadEntry,
    ];
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'worker' });
  });

  it("names Node's main thread after main: dyld's start is the entry", () => {
    const frames = [
      { symbol: 'kevent', module: KERNEL },
      { symbol: 'uv_run', module: NODE },
      { symbol: 'node::Start(int, char**)', module: NODE },
      { symbol: 'main', module: NODE },
      { symbol: 'start', module: DYLD },
    ];
    expect(attributeStack(frames)).toEqual({ module: NODE, startRoutine: 'main' });
  });

  it('names libdispatch as the creator of its workers, and nothing for an idle one', () => {
    const working = [
      { symbol: 'block_body', module: ADDON },
      { symbol: '_dispatch_client_callout', module: DISPATCH },
      { symbol: '_dispatch_root_queue_drain', module: DISPATCH },
      { symbol: '_dispatch_worker_thread2', module: DISPATCH },
      { symbol: '_pthread_wqthread', module: PTHREAD },
      { symbol: 'start_wqthread', module: PTHREAD },
    ];
    expect(attributeStack(working)).toEqual({ module: DISPATCH, startRoutine: '_dispatch_worker_thread2' });
    const idle = [
      { symbol: '__workq_kernreturn', module: KERNEL },
      { symbol: '_pthread_wqthread', module: PTHREAD },
      { symbol: 'start_wqthread', module: PTHREAD },
    ];
    expect(attributeStack(idle)).toEqual({});
  });

  it('gives the module but no start routine when the walk stops short of the entry', () => {
    // A frame chain broken in JIT code, or a stack deeper than the copy.
    expect(attributeStack([{ symbol: '__psynch_cvwait', module: KERNEL }, { symbol: 'Pool::Wait()', module: ADDON }, {}])).toEqual({
      module: ADDON,
    });
  });

  it("passes over libstdc++'s function templates the same way (an unoptimized std::thread on Linux)", () => {
    const frames = [
      { symbol: 'worker(int)', module: '/x/a.node' },
      { symbol: 'void std::__invoke_impl<void, void (*)(int), int>(std::__invoke_other, void (*&&)(int), int&&)', module: '/x/a.node' },
      { symbol: 'std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (*)(int), int> > >::_M_run()', module: '/x/a.node' },
      { symbol: 'execute_native_thread_routine', module: '/usr/lib/x86_64-linux-gnu/libstdc++.so.6' },
      { symbol: 'start_thread', module: '/usr/lib/x86_64-linux-gnu/libc.so.6' },
    ];
    expect(attributeStack(frames)).toEqual({ module: '/x/a.node', startRoutine: 'worker(int)' });
  });

  it('knows the macOS runtimes by file name, and no other system library', () => {
    for (const m of [KERNEL, PTHREAD, PLATFORM, MALLOC, LIBCXX, '/usr/lib/libc++abi.dylib', '/usr/lib/system/libsystem_c.dylib',
      '/usr/lib/system/libdyld.dylib', DYLD]) {
      expect([m, isSystemRuntimeModule(m)]).toEqual([m, true]);
    }
    for (const m of [DISPATCH, '/usr/lib/libobjc.A.dylib', '/usr/lib/system/libsystem_info.dylib', NODE, ADDON, '/x/libzmq.5.dylib']) {
      expect([m, isSystemRuntimeModule(m)]).toEqual([m, false]);
    }
  });
});
