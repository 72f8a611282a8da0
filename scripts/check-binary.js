// Checks a built addon before it is accepted as a prebuild, by reading the file
// itself (ELF, Mach-O or PE: scripts/binary/*.js), so it needs no tools on a bare CI machine.
//
//   node scripts/check-binary.js <file>                                      the inspection, as JSON
//   node scripts/check-binary.js <file> --platform linux --arch x64 [--libc musl] [--max-glibc 2.17] [--min-os 11.0]
//                                                                            and the prebuild check (exit 1: problems)
//
// import { inspectBinary, checkPrebuild } from './check-binary.js':
//   inspectBinary(path)  -> { format: 'elf' | 'macho' | 'pe', arch, bits, ... } (fields per format: see the parsers)
//   inspectBuffer(bytes, name) the same, of bytes already read
//   checkPrebuild(path, { platform, arch, libc }) -> that inspection, or throws an Error listing every problem.
// A file that is not one of the three formats, or is cut short or corrupt, throws a
// BinaryFormatError ("<file>: is not an ELF, Mach-O or PE file", "<file>: truncated at offset N (...)").
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compareVersions, parseElf } from './binary/elf.js';
import { FAT_MAGICS, MACHO_MAGICS, parseFat, parseMachO } from './binary/macho.js';
import { parsePe } from './binary/pe.js';
import { BinaryFormatError } from './binary/reader.js';

export { BinaryFormatError };

export function inspectBinary(path) {
  return inspectBuffer(readFileSync(path), path);
}

/** inspectBinary of bytes already read; `path` names them in messages. */
export function inspectBuffer(buffer, path = '<buffer>') {
  const head = (n) => (buffer.length >= n ? buffer : null);
  if (head(4) && buffer.readUInt32BE(0) === 0x7f454c46) return parseElf(buffer, path);
  if (head(4) && MACHO_MAGICS.includes(buffer.readUInt32LE(0))) return parseMachO(buffer, path);
  // 0xcafebabe also starts Java class files, whose next field (the class version) is at least 45.
  if (head(8) && FAT_MAGICS.includes(buffer.readUInt32BE(0)) && buffer.readUInt32BE(4) < 45) return parseFat(buffer, path);
  if (head(2) && buffer.toString('latin1', 0, 2) === 'MZ') return parsePe(buffer, path);
  const start = buffer.length === 0 ? 'it is empty' : `it starts with ${[...buffer.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`;
  throw new BinaryFormatError(`${path}: is not an ELF, Mach-O or PE file (${start})`);
}

const FORMATS = { linux: 'elf', darwin: 'macho', win32: 'pe' };
const FORMAT_NAMES = { elf: 'ELF', macho: 'Mach-O', pe: 'PE' };
const A_FORMAT = { elf: 'an ELF', macho: 'a Mach-O', pe: 'a PE' };

/** Node-API functions: the only symbols an addon may take from the node process itself. */
const isNodeApi = (name) => /^(napi|node_api)_/.test(name);

// C++ runtime symbols (libstdc++/libc++, their ABI library, the unwinder). An addon must carry its
// own (zig links libc++ statically): the target may have none, or an older one. __cxa_atexit and
// __cxa_finalize are the C library's (glibc and musl), and so is __cxa_thread_atexit_impl on glibc
// (GLIBC_2.18: the version limit catches it; libc++abi refers to it weakly).
const LIBC_CXA = new Set(['__cxa_atexit', '__cxa_finalize', '__cxa_thread_atexit_impl']);
const isCxxRuntime = (name) =>
  /^_Z/.test(name) || /^_Unwind_/.test(name) || /^__g(xx|cc)_personality/.test(name) || (/^__cxa_/.test(name) && !LIBC_CXA.has(name));

const LINUX_LIBRARIES = {
  // glibc's own libraries (librt too: part of glibc on every glibc system, and older glibc put clock_* there).
  glibc: /^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-[\w.-]+\.so\.\d+)$/,
  // musl is one library, its own loader (ld-musl-<arch>.so.1), and that loader answers any needed
  // lib{c,pthread,rt,m,dl,util,xnet}.* with itself (musl's ldso/dynlink.c, load_library): zig's libc.so and
  // Alpine's libc.musl-<arch>.so.1 both load everywhere, with or without musl-dev.
  musl: /^(lib(c|pthread|rt|m|dl|util|xnet)\.[\w.-]*|ld-musl-[\w-]+\.so\.1)$/,
};
const CXX_LIBRARIES = /^(libstdc\+\+|libc\+\+|libc\+\+abi|libgcc_s|libunwind)[.-]/;

// libSystem is all of macOS's C library. /usr/lib/libc++.1.dylib is allowed too: it is on every macOS
// since 10.7 (in the dyld shared cache, with a stable ABI), and every C++ addon Xcode's clang links
// (node-gyp on a Mac) depends on it. zig links libc++ statically, so our builds do not use it.
const DARWIN_LIBRARIES = new Set(['/usr/lib/libSystem.B.dylib', '/usr/lib/libc++.1.dylib']);

const WIN32_IMPORTS = /^(node\.exe|kernel32\.dll|msvcrt\.dll|ntdll\.dll|advapi32\.dll|ucrtbase\.dll|api-ms-win-(crt|core)-[\w.-]+\.dll)$/i;

/** Up to `n` names, then how many more. */
function some(names, n = 4) {
  return names.slice(0, n).join(', ') + (names.length > n ? `, … (${names.length - n} more)` : '');
}

/**
 * Checks that `path` can be the prebuild for `platform`-`arch` (and `libc`, on Linux: 'glibc' or 'musl').
 * `maxGlibc` and `minOs` are the oldest glibc and macOS it must load on; `name` names the file in
 * messages (default: `path`; e.g. the final name of a file still being written elsewhere).
 * `stripped: false` accepts a file with its symbol table (the test fixture keeps it).
 * Returns the inspection; throws an Error with one line per problem (also on `error.problems`).
 */
export function checkPrebuild(path, { platform, arch, libc = 'glibc', maxGlibc = '2.17', minOs = '11.0', name = path, stripped = true } = {}) {
  const format = FORMATS[platform];
  if (!format) throw new Error(`checkPrebuild: platform ${platform} is not one of ${Object.keys(FORMATS).join(', ')}`);
  if (!arch) throw new Error('checkPrebuild: arch is missing');
  if (platform === 'linux' && !(libc in LINUX_LIBRARIES)) throw new Error(`checkPrebuild: libc ${libc} is not glibc or musl`);
  const info = inspectBuffer(readFileSync(path), name);
  const problems = [];
  const problem = (message) => problems.push(`${name}: ${message}`);
  const target = `${platform}-${arch}${platform === 'linux' ? ` (${libc})` : ''}`;

  if (info.format !== format) {
    problem(`is ${A_FORMAT[info.format]} file, a ${platform} prebuild must be ${FORMAT_NAMES[format]}`);
  } else if (info.fat) {
    problem(`is a universal file (${info.arch}), a ${platform}-${arch} prebuild must be a single-architecture file`);
  } else {
    if (info.arch !== arch) problem(`is built for ${info.arch}, the target is ${target}`);
    if (format === 'elf') checkElf(info, { libc, maxGlibc }, problem);
    if (format === 'macho') checkMachO(info, { minOs }, problem);
    if (format === 'pe') checkPe(info, problem);
    if (!info.exports.includes('napi_register_module_v1')) problem('does not export napi_register_module_v1, so Node cannot load it as an addon');
    if (stripped && !info.stripped) problem(`is not stripped (${format === 'elf' ? 'it has a .symtab or debug sections' : format === 'pe' ? 'it has a COFF symbol table' : `it has ${info.debugSymbols} debug symbols`})`);
  }
  if (problems.length > 0) throw Object.assign(new Error(problems.join('\n')), { problems, inspection: info });
  return info;
}

function checkElf(info, { libc, maxGlibc }, problem) {
  if (info.type !== 'ET_DYN') problem(`is ${info.type}, an addon must be a shared object (ET_DYN)`);
  if (info.libc !== null && info.libc !== libc) problem(`is linked against ${info.libc}, the target's C library is ${libc}`);
  for (const name of info.needed) {
    if (LINUX_LIBRARIES[libc].test(name)) continue;
    if (CXX_LIBRARIES.test(name)) problem(`needs ${name}: the C++ runtime must be linked statically`);
    else problem(`needs ${name}, which is not part of ${libc}`);
  }
  if (libc === 'glibc' && info.maxGlibc !== null && compareVersions(info.maxGlibc, maxGlibc) > 0) {
    const above = info.undefined.filter((s) => /@GLIBC_[\d.]+$/.test(s) && compareVersions(s.split('@GLIBC_')[1], maxGlibc) > 0);
    problem(`needs GLIBC_${info.maxGlibc}, the limit is GLIBC_${maxGlibc} (${some(above)})`);
  }
  const privateSymbols = info.undefined.filter((s) => s.endsWith('@GLIBC_PRIVATE'));
  if (privateSymbols.length > 0) problem(`uses glibc's private ABI, which changes with every glibc release: ${some(privateSymbols)}`);

  // Undefined symbols. A weak one never fails the load (the loader leaves a missing one null:
  // __gmon_start__, _ITM_*), so only strong ones count. glibc versions every symbol it exports, so
  // on glibc a symbol with a GLIBC_* version is libc's, and one without a version is not glibc's:
  // unless it is Node-API (resolved from the node executable) it would bind to whatever the process
  // happens to export (V8, libuv, OpenSSL: no stable ABI), or to nothing.
  // musl versions nothing, so there an unversioned symbol may be libc's and cannot be told from the
  // process's: the rule is then only that no C++ runtime symbol is left undefined (those are what a
  // musl system most likely lacks, and what the glibc limit cannot catch), and that no glibc version is needed.
  // (The version limit above counts weak references too: glibc's loader checks every version needed.)
  const cxx = [], glibcOnMusl = [], foreign = [], unversioned = [];
  const weak = new Set(info.weakUndefined);
  for (const symbol of info.undefined) {
    const [name, version] = symbol.split('@');
    if ((isNodeApi(name) && version === undefined) || weak.has(symbol)) continue;
    if (isCxxRuntime(name) || /^(GLIBCXX|CXXABI|GCC)_/.test(version ?? '')) cxx.push(symbol);
    else if (version?.startsWith('GLIBC_') && libc === 'musl') glibcOnMusl.push(symbol);
    else if (version !== undefined && !version.startsWith('GLIBC_')) foreign.push(symbol);
    else if (version === undefined && libc === 'glibc') unversioned.push(symbol);
  }
  if (cxx.length > 0) problem(`leaves ${cxx.length} C++ runtime symbols to other libraries (link it statically): ${some(cxx)}`);
  if (glibcOnMusl.length > 0) problem(`was linked against glibc: ${glibcOnMusl.length} undefined symbols carry glibc versions: ${some(glibcOnMusl)}`);
  if (foreign.length > 0) problem(`has ${foreign.length} undefined symbols versioned by libraries other than ${libc}: ${some(foreign)}`);
  if (unversioned.length > 0) problem(`has ${unversioned.length} undefined symbols that are neither Node-API nor glibc's: ${some(unversioned)}`);
}

function checkMachO(info, { minOs }, problem) {
  if (info.filetype !== 'MH_DYLIB' && info.filetype !== 'MH_BUNDLE') problem(`is ${info.filetype}, an addon must be MH_DYLIB or MH_BUNDLE`);
  if (info.platform !== null && info.platform !== 'macos') problem(`is built for ${info.platform}, not macOS`);
  for (const dylib of info.dylibs) {
    if (!DARWIN_LIBRARIES.has(dylib)) problem(`needs ${dylib}, which is not ${[...DARWIN_LIBRARIES].join(' or ')}`);
  }
  if (info.minOs === null) problem('has no minimum macOS version (LC_BUILD_VERSION or LC_VERSION_MIN_MACOSX)');
  else if (compareVersions(info.minOs, minOs) > 0) problem(`needs macOS ${info.minOs}, the limit is macOS ${minOs}`);
  if (info.arch === 'arm64' && !info.codeSignature) problem('has no code signature: macOS on arm64 refuses unsigned code (sign it ad hoc)');

  // With a two-level namespace each undefined symbol names the dylib it binds to (the linker found
  // it there), so only the symbols left to dynamic lookup (the node process) need a rule: Node-API only.
  // A flat-namespace image names none, so then only C++ runtime symbols are refused, unless libc++ is linked.
  if (info.twoLevel) {
    const host = info.dynamicLookup.filter((name) => !isNodeApi(name));
    if (host.length > 0) problem(`leaves ${host.length} symbols that are not Node-API to the node process: ${some(host)}`);
  } else if (!info.dylibs.includes('/usr/lib/libc++.1.dylib')) {
    const cxx = info.undefined.filter((name) => isCxxRuntime(name) && !/^_Unwind_/.test(name)); // libSystem has the unwinder
    if (cxx.length > 0) problem(`leaves ${cxx.length} C++ runtime symbols undefined without libc++: ${some(cxx)}`);
  }
}

function checkPe(info, problem) {
  if (!info.dll) problem('is not a DLL (IMAGE_FILE_DLL is not set)');
  for (const dll of info.imports) {
    if (!WIN32_IMPORTS.test(dll)) problem(`imports ${dll}, which is not node.exe or a DLL every Windows has${/^lib/i.test(dll) ? ' (link the runtime statically)' : ''}`);
  }
  const fromNode = Object.entries(info.importedSymbols).flatMap(([dll, names]) => (/^node\.exe$/i.test(dll) ? names : []));
  const notNodeApi = fromNode.filter((name) => !isNodeApi(name));
  if (notNodeApi.length > 0) problem(`imports ${notNodeApi.length} functions from node.exe that are not Node-API: ${some(notNodeApi)}`);
}

// ------------------------------------------------------------------ CLI

function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      platform: { type: 'string' },
      arch: { type: 'string' },
      libc: { type: 'string' },
      'max-glibc': { type: 'string' },
      'min-os': { type: 'string' },
    },
  });
  if (positionals.length !== 1 || (values.platform === undefined) !== (values.arch === undefined)) {
    console.error('usage: node scripts/check-binary.js <file> [--platform linux|darwin|win32 --arch x64|arm64 [--libc glibc|musl] [--max-glibc 2.17] [--min-os 11.0]]');
    return 2;
  }
  const [file] = positionals;
  try {
    if (values.platform === undefined) {
      console.log(JSON.stringify(inspectBinary(file), null, 2));
      return 0;
    }
    const options = { platform: values.platform, arch: values.arch, libc: values.libc, maxGlibc: values['max-glibc'], minOs: values['min-os'] };
    for (const key of Object.keys(options)) if (options[key] === undefined) delete options[key];
    console.log(JSON.stringify(checkPrebuild(file, options), null, 2));
    console.error(`check-binary: ${file} is a good ${values.platform}-${values.arch} prebuild`);
    return 0;
  } catch (error) {
    if (error.inspection) console.log(JSON.stringify(error.inspection, null, 2));
    console.error(error.message);
    return 1;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
