// Rust symbol demangling (both schemes) and the attribution of Rust threads.
// Expected texts are rustc-demangle's alternate form ("{:#}"); the symbols
// are its reference examples and names read from real Rust threads (a cdylib
// built with rustc 1.95, legacy and v0 mangling), so no Rust toolchain is needed here.
import { describe, expect, it } from 'vitest';
import { attributeStack } from '../src/attribution.js';
import { demangleFrames, demangleRust } from '../src/demangle.js';

describe('demangleRust: legacy (_ZN...17h<hash>E)', () => {
  it.each([
    ['_ZN3foo17h05af221e174051e9E', 'foo'],
    ['_ZN12test$RF$test4foob17h05af221e174051e9E', 'test&test::foob'],
    ['_ZN12test$BP$test4foob17h05af221e174051e9E', 'test*test::foob'],
    ['_ZN35Bar$LT$$u5b$u32$u3b$$u20$4$u5d$$GT$17h05af221e174051e9E', 'Bar<[u32; 4]>'],
    ['_ZN13_$LT$test$GT$17h05af221e174051e9E', '<test>'],
    ['_ZN28_$u7b$$u7b$closure$u7d$$u7d$17h05af221e174051e9E', '{{closure}}'],
    [
      '_ZN71_$LT$Test$u20$$u2b$$u20$$u27$static$u20$as$u20$foo..Bar$LT$Test$GT$$GT$3bar17h930b740aa94f1d3aE',
      "<Test + 'static as foo::Bar<Test>>::bar",
    ],
    ['_ZN3foo17h05af221e174051e9E.llvm.8D2A', 'foo'],
    ['__ZN3foo17h05af221e174051e9E', 'foo'], // macOS adds an underscore
  ])('%s', (symbol, expected) => {
    expect(demangleRust(symbol)).toBe(expected);
  });

  it('reads the form the addon gives: already through the C++ demangler, escapes and hash left in', () => {
    expect(demangleRust('lib::pool::worker_loop::h956f33f286260725')).toBe('lib::pool::worker_loop');
    expect(demangleRust('lib::pool::Pool$LT$T$GT$::run_generic::hbc7411a4fc940818')).toBe('lib::pool::Pool<T>::run_generic');
    expect(demangleRust('core::ops::function::FnOnce::call_once$u7b$$u7b$vtable.shim$u7d$$u7d$::h3f0ce42cb897af64')).toBe(
      'core::ops::function::FnOnce::call_once{{vtable.shim}}',
    );
    expect(
      demangleRust('_$LT$alloc..boxed..Box$LT$F$C$A$GT$$u20$as$u20$core..ops..function..FnOnce$LT$Args$GT$$GT$::call_once::h0123456789abcdef'),
    ).toBe('<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once');
    // and as a Rust-aware demangler (binutils) prints it: only the hash goes
    expect(demangleRust('core::ptr::drop_in_place<alloc::boxed::Box<dyn core::any::Any+core::marker::Send>>::hb4d69cbb5e357770')).toBe(
      'core::ptr::drop_in_place<alloc::boxed::Box<dyn core::any::Any+core::marker::Send>>',
    );
  });

  it('leaves C++ names alone, including legacy-shaped ones without the hash element', () => {
    for (const name of [
      '_ZN3foo3barEv',
      '_ZN4test1a2bcE', // rustc-demangle takes it for Rust; it is as likely C++ `test::a::bc`
      'std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (*)()> > >::_M_run()',
      'v8::platform::DefaultWorkerThreadsTaskRunner::WorkerThread::Run()',
      'node::(anonymous namespace)::PlatformWorkerThread(void*)',
      'spawner_thread_main',
    ]) {
      expect(demangleRust(name)).toBe(name);
    }
  });
});

describe('demangleRust: v0 (_R...)', () => {
  it.each([
    ['_RNvC6_123foo3bar', '123foo::bar'],
    ['_RNCNCNgCs6DXkGYLi8lr_2cc5spawn00B5_', 'cc::spawn::{closure#0}::{closure#0}'],
    [
      '_RNCINkXs25_NgCsbmNqQUJIY6D_4core5sliceINyB9_4IterhENuNgNoBb_4iter8iterator8Iterator9rpositionNCNgNpB9_6memchr7memrchrs_0E0Bb_',
      '<core::slice::Iter<u8> as core::iter::iterator::Iterator>::rposition::<core::slice::memchr::memrchr::{closure#1}>::{closure#0}',
    ],
    [
      '_RINbNbCskIICzLVDPPb_5alloc5alloc8box_freeDINbNiB4_5boxed5FnBoxuEp6OutputuEL_ECs1iopQbuBiw2_3std',
      'alloc::alloc::box_free::<dyn alloc::boxed::FnBox<(), Output = ()>>',
    ],
    ['_RMC0INtC8arrayvec8ArrayVechKj7b_E', '<arrayvec::ArrayVec<u8, 123>>'],
    ['_RINvNtC3std3foo3barFG0_RL1_hRL0_tEuE', "std::foo::bar::<for<'a, 'b> fn(&'a u8, &'b u16)>"],
    ['_RINvNtC3std3foo3barDG0_NtC3std3FooEL_E', "std::foo::bar::<dyn for<'a, 'b> std::Foo>"],
    ['_RINvNtC3std3foo3barAhj4_E', 'std::foo::bar::<[u8; 4]>'],
    ['_RINvNtC3std3foo3barKb1_E', 'std::foo::bar::<true>'],
    ['_RINvNtC3std3foo3barKc76_E', "std::foo::bar::<'v'>"],
    ['_RINvNtC3std3foo3barFUKCEuE', 'std::foo::bar::<unsafe extern "C" fn()>'],
    ['_RINvNtC3std3foo3barQPOShE', 'std::foo::bar::<&mut *const *mut [u8]>'],
    [
      '_RNvXs8Z_NtNtCsgVdDwkt78Uu_4jiff4util8rangeintINtB6_5ri128Knn80000000000000000000000000000000_Kn7fffffffffffffffffffffffffffffff_ENtNtCs8NwYtU1Mohg_4core3fmt7Display3fmtBa_',
      '<jiff::util::rangeint::ri128<-0x80000000000000000000000000000000, 0x7fffffffffffffffffffffffffffffff> as core::fmt::Display>::fmt',
    ],
    ['_RNvNtCseoLLP0J7DPZ_3uniu11nodeapble4bu7caf_dma', 'uni::გემრიელი::café'],
    ['_RNvNtCseoLLP0J7DPZ_3uniu11nodeapble4bu30____7hkackfecea1cbdathfdh9hlq6y', 'uni::გემრიელი::საჭმელად_გემრიელი_სადილი'],
    ['_RNvCs1234_3foo3bar.llvm.123', 'foo::bar'],
  ])('%s', (symbol, expected) => {
    expect(demangleRust(symbol)).toBe(expected);
  });

  it("names the frames of a real Rust thread's stack", () => {
    expect(demangleRust('_RNvNvMs0_NtNtNtCsjrHSEGnQ3l9_3std3sys6thread4unixNtB7_6Thread3new12thread_start')).toBe(
      '<std::sys::thread::unix::Thread>::new::thread_start',
    );
    expect(demangleRust(RUST_V0_STACK.shim)).toBe(
      '<std::thread::lifecycle::spawn_unchecked<lib::napi_register_module_v1::{closure#0}, ()>::{closure#1} as core::ops::function::FnOnce<()>>::call_once::{shim:vtable#0}',
    );
    expect(demangleRust(RUST_V0_STACK.shortBacktrace)).toBe(
      'std::sys::backtrace::__rust_begin_short_backtrace::<lib::napi_register_module_v1::{closure#0}, ()>',
    );
    expect(demangleRust('_RNvMNtCsh537bOAIRKx_3lib4poolINtB2_4PoolINtNtCslNYArtu3iFV_5alloc3vec3VechEE11run_genericB4_')).toBe(
      '<lib::pool::Pool<alloc::vec::Vec<u8>>>::run_generic',
    );
  });
});

describe('demangleRust: malformed input', () => {
  const valid = [
    '_RNCINkXs25_NgCsbmNqQUJIY6D_4core5sliceINyB9_4IterhENuNgNoBb_4iter8iterator8Iterator9rpositionNCNgNpB9_6memchr7memrchrs_0E0Bb_',
    '_RINvNtC3std3foo3barFG0_RL1_hRL0_tEuE',
    '_ZN71_$LT$Test$u20$$u2b$$u20$$u27$static$u20$as$u20$foo..Bar$LT$Test$GT$$GT$3bar17h930b740aa94f1d3aE',
  ];

  it('returns every truncation of a valid name unchanged, or demangled, and never throws', () => {
    for (const symbol of valid) {
      for (let end = 0; end < symbol.length; end++) {
        const cut = symbol.slice(0, end);
        expect(typeof demangleRust(cut)).toBe('string');
      }
    }
    expect(demangleRust('_RNvNtC3foo')).toBe('_RNvNtC3foo'); // ends inside a path
    expect(demangleRust('_RNvC3foo3barE')).toBe('_RNvC3foo3barE'); // trailing garbage
    expect(demangleRust('_RNvB0_3bar')).toBe('_RNvB0_3bar'); // a backref that does not point back
    expect(demangleRust('_RINvNtC3std3foo3barRL_RL0_hE')).toBe('_RINvNtC3std3foo3barRL_RL0_hE'); // an unbound lifetime
    expect(demangleRust('_ZN3foo$XX$17h05af221e174051e9E')).toBe('_ZN3foo$XX$17h05af221e174051e9E'); // wrong: $XX$ is no escape
    expect(demangleRust('_ZN99foo17h05af221e174051e9E')).toBe('_ZN99foo17h05af221e174051e9E'); // length past the end
  });

  it('never throws on arbitrary bytes', () => {
    let seed = 12345;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const alphabet = '_RNvCMXYIEBKLGFDSTAQPOUpsu0123456789abcdefghijklmnoxyz$.';
    for (let i = 0; i < 2000; i++) {
      let symbol = random() < 0.5 ? '_R' : '_ZN';
      const length = Math.floor(random() * 40);
      for (let j = 0; j < length; j++) symbol += alphabet[Math.floor(random() * alphabet.length)];
      expect(typeof demangleRust(symbol)).toBe('string');
    }
  });

  it('bounds nesting and the expansion of backreferences', () => {
    // 10 000 nested generic paths: past the depth bound, given back unchanged.
    const deep = `_R${'I'.repeat(10_000)}C3foo${'E'.repeat(10_000)}`;
    expect(demangleRust(deep)).toBe(deep);
    // Each argument is a tuple of the previous one twice, by backreference: 2^59 leaves in the last.
    const exponential = doublingTuples(60);
    expect(demangleRust(exponential)).toBe(exponential);
    // A few levels of the same stay within the bounds and are demangled.
    expect(demangleRust(doublingTuples(2))).toBe('f::<(u8, u8), ((u8, u8), (u8, u8))>');
  });
});

/** `_RIC1f...E` (`f::<...>`) whose generic argument is a tuple of two copies of the last, `levels` deep. */
function doublingTuples(levels: number): string {
  const base62 = (n: number): string => {
    if (n === 0) return '_';
    let v = n - 1;
    let digits = '';
    const chars = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
    do {
      digits = chars[v % 62] + digits;
      v = Math.floor(v / 62);
    } while (v > 0);
    return `${digits}_`;
  };
  // Positions count from the character after `_R`: the first tuple is at 4.
  let body = 'IC1f';
  let previous = body.length;
  body += 'ThhE';
  for (let i = 1; i < levels; i++) {
    const at = body.length;
    body += `TB${base62(previous)}B${base62(previous)}E`;
    previous = at;
  }
  return `_R${body}E`;
}

// Names read from a std::thread::spawn'd thread of a cdylib built with -C symbol-mangling-version=v0.
const RUST_V0_STACK = {
  threadStart: '_RNvNvMs0_NtNtNtCsjrHSEGnQ3l9_3std3sys6thread4unixNtB7_6Thread3new12thread_start',
  shim:
    '_RNSNvYNCINvNtNtCsjrHSEGnQ3l9_3std6thread9lifecycle15spawn_uncheckedNCNvCsh537bOAIRKx_3lib23napi_register_module_v10uEs_0INtNtNtCsgEmfK2I1SDS_4core3ops8function6FnOnceuE9call_once6vtableB17_',
  shortBacktrace:
    '_RINvNtNtCsjrHSEGnQ3l9_3std3sys9backtrace28___rust_begin_short_backtraceNCNvCsh537bOAIRKx_3lib23napi_register_module_v10uEB1b_',
  user: '_RNvNtCsh537bOAIRKx_3lib4pool11worker_loop',
  sleep: '_RNvNtNtCsjrHSEGnQ3l9_3std6thread9functions5sleep',
};

describe('attributeStack: Rust threads', () => {
  const LIBC = '/usr/lib/x86_64-linux-gnu/libc.so.6';
  const ADDON = '/app/node_modules/lance/lance.linux-x64-gnu.node';

  it('passes over std thread_start, the FnOnce shim and __rust_begin_short_backtrace (v0 names)', () => {
    // As threadStack() reads them: innermost first, symbols demangled.
    const frames = demangleFrames([
      { module: LIBC, symbol: 'clock_nanosleep' },
      { module: ADDON, symbol: RUST_V0_STACK.sleep },
      { module: ADDON, symbol: RUST_V0_STACK.user },
      { module: ADDON, symbol: RUST_V0_STACK.shortBacktrace },
      { module: ADDON, symbol: RUST_V0_STACK.shim },
      { module: ADDON, symbol: RUST_V0_STACK.threadStart },
      { module: LIBC },
      { module: LIBC },
    ]);
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'lib::pool::worker_loop' });
  });

  it('does the same with legacy names as the addon gives them (through the C++ demangler)', () => {
    const frames = demangleFrames([
      { module: LIBC, symbol: 'clock_nanosleep' },
      { module: ADDON, symbol: RUST_V0_STACK.sleep },
      { module: ADDON, symbol: 'lib::pool::worker_loop::h956f33f286260725' },
      { module: ADDON, symbol: 'lib::pool::Pool$LT$T$GT$::run_generic::hbc7411a4fc940818' },
      { module: ADDON, symbol: 'std::sys::backtrace::__rust_begin_short_backtrace::h3f27279524e6e8b5' },
      { module: ADDON, symbol: 'core::ops::function::FnOnce::call_once$u7b$$u7b$vtable.shim$u7d$$u7d$::h3f0ce42cb897af64' },
      { module: ADDON, symbol: 'std::thread::Builder::spawn_unchecked_::$u7b$$u7b$closure$u7d$$u7d$::h0123456789abcdef' },
      { module: ADDON, symbol: RUST_V0_STACK.threadStart },
      { module: LIBC },
    ]);
    expect(attributeStack(frames)).toEqual({ module: ADDON, startRoutine: 'lib::pool::Pool<T>::run_generic' });
  });

  it("names the crate that asked for the thread: tokio's closure, boxed in alloc's FnOnce", () => {
    const frames = [
      { module: LIBC, symbol: 'syscall' },
      { module: ADDON, symbol: 'tokio::runtime::blocking::pool::Inner::run' },
      { module: ADDON, symbol: 'tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}' },
      { module: ADDON, symbol: 'std::sys::backtrace::__rust_begin_short_backtrace' },
      { module: ADDON, symbol: '<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once' },
      { module: ADDON, symbol: '<std::sys::thread::unix::Thread>::new::thread_start' },
      { module: LIBC, symbol: 'start_thread' },
      { module: LIBC, symbol: '__clone3' },
    ];
    expect(attributeStack(frames).startRoutine).toBe('tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}');
  });
});
