// Which shared object started a native thread, from its frames: portable
// logic, a pure function of the frames (used by threadStack() and the leak
// reports).
//
// Rule (DESIGN.md, Attribution): walking from the thread's entry (the
// outermost frame) towards the innermost, the creator is the first frame that
// lies outside the system C and C++ runtimes. A std::thread started by an
// addon enters through libstdc++ (execute_native_thread_routine) and then
// runs std::thread::_State_impl<...>::_M_run, a template instantiated inside
// the addon: frames of the C++ runtime's own namespaces are passed over too,
// so the creator is the addon function the thread was started with. When
// every frame outside the runtimes is such runtime code, the outermost of
// them is used. Frames with no module (JIT code, unknown memory) say nothing
// about the creator and are skipped.
//
// Rust threads enter the same way: std's thread_start
// (`<std::sys::thread::unix::Thread>::new::thread_start`), the boxed-closure
// shim (`<... as core::ops::function::FnOnce<()>>::call_once::{shim:vtable#0}`,
// `{{vtable.shim}}` in legacy names) and `__rust_begin_short_backtrace`, all
// instantiated inside the crate that spawned the thread. Frames whose
// (demangled) path is in Rust's std, core or alloc are passed over like the
// C++ runtime's, so the creator is the first frame of the code that asked for
// the thread (its closure, or the function the closure was inlined into).
//
// A compiler may turn an entry function's last call into a jump (a tail
// call); the entry then has no frame and the function it called is named.
//
// The start routine is only named when the frames reach the thread's entry:
// when the outermost frame is C runtime code (libc's start_thread/clone, a
// CRT entry). An unwinder can stop early -- at code whose unwind tables are
// wrong or missing, as in the libvips that sharp ships, whose idle threads
// unwind only to g_cond_wait_until -- and the outermost frame it reached is
// then just the deepest known one, not the function the thread was started
// with (the Linux probe scans on from there, which usually reaches the entry,
// but a scan can fall short too). The module is still given: it is the code
// the thread was seen in.
//
// Windows frames end at ntdll!RtlUserThreadStart (ntdll.dll is a runtime
// module, so a stack that reaches it reaches the entry) and the OS also tells
// each thread's start address. When the frames stop short of the entry (a
// stack deeper than the copy, code without unwind tables), or name no creator,
// that start address is used instead, unless it lies in a runtime too (the C
// runtime's thread entry behind _beginthreadex and std::thread): the function
// given to CreateThread is the start routine by definition.
//
// macOS frames end at libsystem_pthread's thread_start (start_wqthread for a
// dispatch worker, dyld's start for the main thread), so a stack that reaches
// them reaches the entry. A std::thread enters through libc++'s
// std::__1::__thread_proxy, a function template instantiated inside the addon
// whose demangled name, like every function template's, begins with its
// return type (`void* std::__1::__thread_proxy<...>(void*)`): a return type
// before the runtime's namespace is allowed. Mach tells no start address, so
// attribution rests on the frames alone.

/** The fields of a frame that attribution reads. */
export interface AttributableFrame {
  symbol?: string;
  module?: string;
}

export interface Attribution {
  /** The shared object (.node, .so, .dll, .dylib) or executable that holds the start routine. */
  module?: string;
  /** The function the thread was started with, where its frame has a name. */
  startRoutine?: string;
}

// Base names of the system C/C++ runtimes and loaders, per OS. Matched
// case-insensitively (Windows file names are case-insensitive).
const RUNTIME_MODULES: readonly RegExp[] = [
  // Linux: glibc, musl, the dynamic loaders, libstdc++, libc++, libgcc.
  /^libc\.so(\.|$)/,
  /^libc\.musl-/,
  /^ld-musl-/,
  /^libpthread\.so(\.|$)/,
  /^ld-linux(-[^.]+)?\.so(\.|$)/,
  /^ld(64)?\.so(\.|$)/,
  /^libstdc\+\+\.so(\.|$)/,
  /^libc\+\+\.so(\.|$)/,
  /^libc\+\+abi\.so(\.|$)/,
  /^libgcc_s\.so(\.|$)/,
  // Windows: the NT layer, the CRTs, MSVC's C++ runtime, MinGW's runtime DLLs.
  /^ntdll\.dll$/,
  /^kernel32\.dll$/,
  /^kernelbase\.dll$/,
  /^ucrtbased?\.dll$/,
  /^msvcrt\.dll$/,
  /^msvcp[^.]*\.dll$/,
  /^vcruntime[^.]*\.dll$/,
  /^libwinpthread-\d+\.dll$/,
  /^libstdc\+\+-\d+\.dll$/,
  /^libgcc_s_[^.]*\.dll$/,
  // macOS: libSystem's C runtime parts (pthreads, libc, the system call
  // stubs, the string/atomic/lock primitives of libsystem_platform, malloc),
  // dyld, libc++. Not libdispatch: it is a thread pool that starts its own
  // workers, and is named as their creator like any other library.
  /^libsystem_pthread\.dylib$/,
  /^libsystem_c\.dylib$/,
  /^libsystem_kernel\.dylib$/,
  /^libsystem_platform\.dylib$/,
  /^libsystem_malloc\.dylib$/,
  /^libdyld\.dylib$/,
  /^dyld$/,
  /^libc\+\+\.1\.dylib$/,
  /^libc\+\+abi\.dylib$/,
];

// Symbols of C/C++ runtime code that ends up inside other modules: C++
// standard library templates instantiated in an addon, and the C runtime's
// start-up code linked into every executable (crt1.o, MSVC's CRT entry).
// Rust's standard library is instantiated into the crate that uses it the
// same way: paths in std, core or alloc, including their impls
// (`<std::...>::f`, `<alloc::boxed::Box<F> as core::ops::function::FnOnce<A>>::call_once`).
// A C++ function template's demangled name starts with its return type
// (`void* std::__1::__thread_proxy<...>(void*)`): up to three plain words
// may come before the namespace.
const RUNTIME_SYMBOL =
  /^(?:(?:[\w:]+[*&]* ){0,3}(?:std::|__gnu_cxx::|__cxxabiv1::)|_ZN?K?St|_ZN9__gnu_cxx|<?(core|alloc)::|<std::)/;
const CRT_ENTRY_SYMBOLS: ReadonlySet<string> = new Set([
  '_start',
  '__libc_start_main',
  '__libc_start_call_main',
  'mainCRTStartup',
  'wmainCRTStartup',
  'WinMainCRTStartup',
  'wWinMainCRTStartup',
  '__tmainCRTStartup',
]);

function baseName(path: string): string {
  const cut = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'));
  return (cut < 0 ? path : path.slice(cut + 1)).toLowerCase();
}

/** True when `module` (a path or a file name) is one of the system C/C++ runtimes or loaders. */
export function isSystemRuntimeModule(module: string): boolean {
  const name = baseName(module);
  return RUNTIME_MODULES.some((pattern) => pattern.test(name));
}

function isRuntimeCode(symbol: string | undefined): boolean {
  return symbol !== undefined && (RUNTIME_SYMBOL.test(symbol) || CRT_ENTRY_SYMBOLS.has(symbol));
}

/**
 * The creator of a thread from its frames (innermost first, as NativeStack
 * holds them): the module and start routine of the first frame, from the
 * outermost inwards, outside the system C/C++ runtimes. When the frames stop
 * short of the thread's entry: the thread's `start` address where the OS
 * tells it and it lies outside the runtimes, else no start routine.
 */
export function attributeStack(frames: readonly AttributableFrame[], start?: AttributableFrame): Attribution {
  const attribution = creatorFrame(frames);
  const complete = reachesEntry(frames);
  if (complete && attribution.module !== undefined) return attribution;
  // The frames stop short of the entry, or every one is runtime code: the
  // start address, where the OS told it, names the creator.
  if (start?.module !== undefined && !isSystemRuntimeModule(start.module)) return describe(start);
  if (attribution.startRoutine !== undefined && !complete) delete attribution.startRoutine;
  return attribution;
}

/** True when the outermost frame is the C runtime code every thread starts in. */
function reachesEntry(frames: readonly AttributableFrame[]): boolean {
  const outermost = frames[frames.length - 1];
  if (outermost === undefined) return false;
  return (outermost.module !== undefined && isSystemRuntimeModule(outermost.module)) ||
    (outermost.symbol !== undefined && CRT_ENTRY_SYMBOLS.has(outermost.symbol));
}

function creatorFrame(frames: readonly AttributableFrame[]): Attribution {
  let fallback: AttributableFrame | undefined;
  for (let i = frames.length - 1; i >= 0; i--) {
    const frame = frames[i]!;
    if (frame.module === undefined || isSystemRuntimeModule(frame.module)) continue;
    if (isRuntimeCode(frame.symbol)) {
      fallback ??= frame;
      continue;
    }
    return describe(frame);
  }
  return fallback ? describe(fallback) : {};
}

function describe(frame: AttributableFrame): Attribution {
  const result: Attribution = { module: frame.module! };
  if (frame.symbol !== undefined) result.startRoutine = frame.symbol;
  return result;
}
