// scripts/check-binary.js: the prebuild check reads ELF, Mach-O and PE files itself. The host
// build is a real ELF (or PE under wine) file; the other formats and the rules come from files
// test/binary-builders.ts writes byte by byte, so no cross toolchain is needed here.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain-JS script without type declarations
import { BinaryFormatError, checkPrebuild, inspectBinary, inspectBuffer } from '../scripts/check-binary.js';
import { buildElf, buildFat, buildMachO, buildPe, type ElfSymbol } from './binary-builders.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const hostBuild = join(root, 'build', 'Release', 'threadleak.node');
const script = join(root, 'scripts', 'check-binary.js');
const tmp = mkdtempSync(join(tmpdir(), 'check-binary-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let serial = 0;
/** Writes `data` to a new file in the temp dir and returns its path. */
function file(data: Buffer | string, name = `file-${serial++}.node`): string {
  const path = join(tmp, name);
  writeFileSync(path, data);
  return path;
}

/** The problems checkPrebuild throws for `path` (an empty list if it accepts it). */
function problems(path: string, target: { platform: string; arch: string; libc?: string; maxGlibc?: string; minOs?: string; name?: string }): string[] {
  try {
    checkPrebuild(path, target);
    return [];
  } catch (error) {
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect((error as { problems: string[] }).problems).toEqual(message.split('\n'));
    return message.split('\n');
  }
}

const glibc = (name: string, version = '2.2.5'): ElfSymbol => ({ name, version: `GLIBC_${version}` });
const linuxX64 = { platform: 'linux', arch: 'x64', libc: 'glibc' };

describe.runIf(existsSync(hostBuild))('the host build (build/Release/threadleak.node)', () => {
  const expectedFormat = { linux: 'elf', darwin: 'macho', win32: 'pe' }[process.platform as string];

  it('is inspected as this platform and architecture', () => {
    const info = inspectBinary(hostBuild);
    expect(info.format).toBe(expectedFormat);
    expect(info.arch).toBe(process.arch);
    expect(info.bits).toBe(64);
    expect(info.exports).toContain('napi_register_module_v1');
  });

  it.runIf(process.platform === 'linux')('is a g++ shared object: libstdc++, a recent glibc, both Node-API entry points', () => {
    const info = inspectBinary(hostBuild);
    expect(info).toMatchObject({ format: 'elf', type: 'ET_DYN', libc: 'glibc', interpreter: null, soname: 'threadleak.node' });
    expect(info.needed).toEqual(expect.arrayContaining(['libstdc++.so.6', 'libc.so.6']));
    expect(info.versionNeeds['libc.so.6']).toContain('GLIBC_2.2.5');
    expect(info.versionNeeds['libc.so.6']).toContain(`GLIBC_${info.maxGlibc}`);
    expect(Number(info.maxGlibc.split('.')[1])).toBeGreaterThan(17);
    // A C++ symbol from libstdc++, a libc one and a Node-API one, as the dynamic loader sees them.
    expect(info.undefined.some((s: string) => /^_Z.*@GLIBCXX_3\.4/.test(s))).toBe(true);
    expect(info.undefined.some((s: string) => /^\w+@GLIBC_2\.2\.5$/.test(s))).toBe(true);
    expect(info.undefined).toContain('napi_create_function');
    expect(info.exports).toEqual(expect.arrayContaining(['napi_register_module_v1', 'node_api_module_get_api_version_v1']));
    expect(info.undefined.every((s: string) => !info.exports.includes(s))).toBe(true);
  });

  it.runIf(process.platform === 'linux' && process.arch === 'x64')('is refused as the linux-x64 prebuild, naming libstdc++ and its glibc version', () => {
    const info = inspectBinary(hostBuild);
    const found = problems(hostBuild, linuxX64);
    expect(found.every((line) => line.startsWith(`${hostBuild}: `))).toBe(true);
    expect(found).toContain(`${hostBuild}: needs libstdc++.so.6: the C++ runtime must be linked statically`);
    expect(found.some((line) => line.startsWith(`${hostBuild}: needs GLIBC_${info.maxGlibc}, the limit is GLIBC_2.17 (`))).toBe(true);
    expect(found.some((line) => /leaves \d+ C\+\+ runtime symbols .*_Z\w+@GLIBCXX_3\.4/.test(line))).toBe(true);
    // `name` names the file in the messages, e.g. the prebuild a temporary file will become.
    expect(problems(hostBuild, { ...linuxX64, name: 'prebuilds/linux-x64/threadleak.node' })).toContain('prebuilds/linux-x64/threadleak.node: needs libstdc++.so.6: the C++ runtime must be linked statically');
    // A newer limit drops only the glibc complaint.
    const laxer = problems(hostBuild, { ...linuxX64, maxGlibc: info.maxGlibc });
    expect(laxer.some((line) => line.includes('GLIBC_2.'))).toBe(false);
    expect(laxer).toContain(`${hostBuild}: needs libstdc++.so.6: the C++ runtime must be linked statically`);
  });

  it.runIf(process.platform === 'linux')('is refused for another platform, architecture or libc', () => {
    expect(problems(hostBuild, { platform: 'win32', arch: 'x64' })).toEqual([`${hostBuild}: is an ELF file, a win32 prebuild must be PE`]);
    expect(problems(hostBuild, { platform: 'darwin', arch: process.arch })).toEqual([`${hostBuild}: is an ELF file, a darwin prebuild must be Mach-O`]);
    const other = process.arch === 'x64' ? 'arm64' : 'x64';
    expect(problems(hostBuild, { platform: 'linux', arch: other })).toContain(`${hostBuild}: is built for ${process.arch}, the target is linux-${other} (glibc)`);
    expect(problems(hostBuild, { platform: 'linux', arch: process.arch, libc: 'musl' })).toContain(`${hostBuild}: is linked against glibc, the target's C library is musl`);
  });

  it('the CLI prints the inspection as JSON, and with a target exits 1 listing the problems', () => {
    const inspect = spawnSync(process.execPath, [script, hostBuild], { encoding: 'utf8' });
    expect(inspect.status).toBe(0);
    expect(JSON.parse(inspect.stdout)).toEqual(inspectBinary(hostBuild));
    const platform = process.platform === 'linux' ? 'win32' : 'linux';
    const check = spawnSync(process.execPath, [script, hostBuild, '--platform', platform, '--arch', process.arch], { encoding: 'utf8' });
    expect(check.status).toBe(1);
    expect(check.stderr).toMatch(new RegExp(`is an? (ELF|Mach-O|PE) file, a ${platform} prebuild must be`));
  });
});

describe('files that are not addons', () => {
  const notBinary = /: is not an ELF, Mach-O or PE file \(/;

  it('garbage, text, an empty file and a Java class are "not an ELF, Mach-O or PE file"', () => {
    for (const data of [Buffer.alloc(0), Buffer.from('#!/bin/sh\necho hello\n'), Buffer.from([0x7f, 0x45]), Buffer.from([0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52, 1, 2])]) {
      const path = file(data);
      expect(() => inspectBinary(path)).toThrow(BinaryFormatError);
      expect(() => inspectBinary(path)).toThrow(notBinary);
    }
    expect(() => inspectBinary(file(''))).toThrow(/is not an ELF, Mach-O or PE file \(it is empty\)/);
    expect(() => checkPrebuild(file('hello'), linuxX64)).toThrow(/is not an ELF, Mach-O or PE file \(it starts with 68 65 6c 6c\)/);
  });

  it('a truncated file is "truncated at offset N", at every length', () => {
    const samples = [buildElf(), buildMachO(), buildPe(), ...(existsSync(hostBuild) ? [readFileSync(hostBuild)] : [])];
    for (const whole of samples) {
      const path = file(whole.subarray(0, 24));
      expect(() => inspectBinary(path)).toThrow(/truncated at offset \d+/);
    }
    // Every prefix of the small files: a clear BinaryFormatError or a (partial) inspection, never a RangeError.
    for (const whole of samples.slice(0, 3)) {
      let truncated = 0;
      for (let length = 1; length < whole.length; length++) {
        try {
          inspectBuffer(whole.subarray(0, length), 'prefix.node');
        } catch (error) {
          expect(error).toBeInstanceOf(BinaryFormatError);
          expect((error as Error).message).toMatch(/^prefix\.node: (truncated at offset \d+ \(|is not an ELF|is (a corrupt|an MZ file))/);
          if (/truncated at offset/.test((error as Error).message)) truncated++;
        }
      }
      expect(truncated).toBeGreaterThan(whole.length / 2);
    }
  });

  it('corrupt fields give a BinaryFormatError, never an exception from a Buffer read', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const samples = [buildElf({ undefined: [glibc('memcpy', '2.14')] }), buildElf({ sections: false }), buildMachO(), buildPe(), ...(existsSync(hostBuild) ? [readFileSync(hostBuild)] : [])];
    let failures = 0;
    for (const whole of samples) {
      for (let round = 0; round < 150; round++) {
        const copy = Buffer.from(whole);
        // Headers and tables are near the start: corrupt a few bytes there, with 0xff runs for huge offsets.
        for (let n = 0; n < 4; n++) {
          const at = Math.floor(random() * Math.min(copy.length, 1024));
          copy[at] = random() < 0.5 ? 0xff : Math.floor(random() * 256);
        }
        try {
          inspectBuffer(copy, 'corrupt.node');
        } catch (error) {
          if (!(error instanceof BinaryFormatError)) throw error;
          failures++;
        }
      }
    }
    expect(failures).toBeGreaterThan(0);
  });

  it('a universal Mach-O file lists its slices and is refused as a prebuild', () => {
    const path = file(buildFat([{ cputype: 0x01000007, data: buildMachO({ arch: 'x64' }) }, { cputype: 0x0100000c, data: buildMachO({ arch: 'arm64' }) }]));
    const info = inspectBinary(path);
    expect(info).toMatchObject({ format: 'macho', fat: true, arch: 'x64+arm64' });
    expect(info.slices.map((s: { arch: string; codeSignature: boolean }) => [s.arch, s.codeSignature])).toEqual([['x64', false], ['arm64', true]]);
    expect(problems(path, { platform: 'darwin', arch: 'arm64' })).toEqual([`${path}: is a universal file (x64+arm64), a darwin-arm64 prebuild must be a single-architecture file`]);
  });
});

describe('ELF rules (linux)', () => {
  const libcSymbols = [glibc('memcpy', '2.14'), glibc('pthread_create'), { name: '__tls_get_addr', version: 'GLIBC_2.3', file: 'ld-linux-x86-64.so.2' }, { name: 'napi_create_object' }, { name: '__gmon_start__', weak: true }];

  it('accepts a zig-like glibc 2.17 build and reads what it needs', () => {
    const path = file(buildElf({ needed: ['libm.so.6', 'libpthread.so.0', 'libc.so.6', 'libdl.so.2', 'ld-linux-x86-64.so.2'], undefined: libcSymbols, exports: ['napi_register_module_v1', 'node_api_module_get_api_version_v1'] }));
    const info = checkPrebuild(path, linuxX64);
    expect(info).toMatchObject({ format: 'elf', arch: 'x64', type: 'ET_DYN', libc: 'glibc', maxGlibc: '2.14', stripped: true });
    expect(info.undefined).toEqual(['memcpy@GLIBC_2.14', 'pthread_create@GLIBC_2.2.5', '__tls_get_addr@GLIBC_2.3', 'napi_create_object', '__gmon_start__']);
    expect(info.weakUndefined).toEqual(['__gmon_start__']);
    expect(info.versionNeeds).toEqual({ 'libc.so.6': ['GLIBC_2.14', 'GLIBC_2.2.5'], 'ld-linux-x86-64.so.2': ['GLIBC_2.3'] });
    expect(checkPrebuild(file(buildElf({ machine: 183, needed: ['libc.so.6'], undefined: [glibc('memcpy', '2.17')] })), { platform: 'linux', arch: 'arm64' })).toMatchObject({ arch: 'arm64', maxGlibc: '2.17' });
  });

  it('without section headers the symbols are counted through DT_HASH', () => {
    const info = inspectBinary(file(buildElf({ sections: false, undefined: libcSymbols })));
    expect(info.undefined).toHaveLength(libcSymbols.length);
    expect(info.maxGlibc).toBe('2.14');
  });

  it('refuses a glibc above the limit, naming the version and the symbols that need it', () => {
    const path = file(buildElf({ undefined: [glibc('memcpy', '2.14'), glibc('pthread_sigmask', '2.32'), glibc('dlopen', '2.34'), glibc('strlen')] }));
    expect(inspectBinary(path).maxGlibc).toBe('2.34');
    expect(problems(path, linuxX64)).toEqual([`${path}: needs GLIBC_2.34, the limit is GLIBC_2.17 (pthread_sigmask@GLIBC_2.32, dlopen@GLIBC_2.34)`]);
    expect(problems(path, { ...linuxX64, maxGlibc: '2.34' })).toEqual([]);
    // Versions compare as numbers: 2.2.5 < 2.17.
    expect(problems(file(buildElf({ undefined: [glibc('a', '2.2.5'), glibc('b', '2.17')] })), linuxX64)).toEqual([]);
  });

  it('refuses the C++ runtime as a library or as undefined symbols, and symbols neither Node-API nor glibc', () => {
    const path = file(buildElf({
      needed: ['libstdc++.so.6', 'libgcc_s.so.1', 'libuv.so.1', 'libc.so.6'],
      undefined: [{ name: '_Znwm', version: 'GLIBCXX_3.4', file: 'libstdc++.so.6' }, { name: '_Unwind_Resume', version: 'GCC_3.0', file: 'libgcc_s.so.1' }, { name: 'uv_default_loop' }, { name: 'uv_run', version: 'UV_1', file: 'libuv.so.1' }, { name: 'uv_weak_thing', weak: true }, glibc('__cxa_finalize')],
      symtab: true,
    }));
    expect(problems(path, linuxX64)).toEqual([
      `${path}: needs libstdc++.so.6: the C++ runtime must be linked statically`,
      `${path}: needs libgcc_s.so.1: the C++ runtime must be linked statically`,
      `${path}: needs libuv.so.1, which is not part of glibc`,
      `${path}: leaves 2 C++ runtime symbols to other libraries (link it statically): _Znwm@GLIBCXX_3.4, _Unwind_Resume@GCC_3.0`,
      `${path}: has 1 undefined symbols versioned by libraries other than glibc: uv_run@UV_1`,
      `${path}: has 1 undefined symbols that are neither Node-API nor glibc's: uv_default_loop`,
      `${path}: is not stripped (it has a .symtab or debug sections)`,
    ]);
  });

  it('musl: accepts unversioned libc symbols, refuses C++ runtime ones and glibc', () => {
    const musl = { platform: 'linux', arch: 'arm64', libc: 'musl' };
    const good = file(buildElf({ machine: 183, needed: ['libc.so'], undefined: [{ name: 'memcpy' }, { name: '__cxa_atexit' }, { name: 'napi_create_object' }] }));
    expect(checkPrebuild(good, musl)).toMatchObject({ libc: 'musl', maxGlibc: null });
    expect(problems(file(buildElf({ machine: 183, needed: ['libc.musl-aarch64.so.1', 'libm.so.6'] })), musl)).toEqual([]);
    const other = file(buildElf({ machine: 183, needed: ['libc.so', 'libcrypto.so.3'] }));
    expect(problems(other, musl)).toEqual([`${other}: needs libcrypto.so.3, which is not part of musl`]);
    const bad = file(buildElf({ machine: 183, needed: ['libc.so', 'libstdc++.so.6'], undefined: [{ name: '_ZNSt3__16chrono12steady_clock3nowEv' }, { name: '__cxa_throw' }, { name: 'memcpy' }] }));
    expect(problems(bad, musl)).toEqual([
      `${bad}: needs libstdc++.so.6: the C++ runtime must be linked statically`,
      `${bad}: leaves 2 C++ runtime symbols to other libraries (link it statically): _ZNSt3__16chrono12steady_clock3nowEv, __cxa_throw`,
    ]);
    const glibcBuild = file(buildElf({ machine: 183, undefined: [glibc('memcpy', '2.17')] }));
    expect(problems(glibcBuild, musl)).toEqual([
      `${glibcBuild}: is linked against glibc, the target's C library is musl`,
      `${glibcBuild}: was linked against glibc: 1 undefined symbols carry glibc versions: memcpy@GLIBC_2.17`,
    ]);
  });

  it('refuses a file that is not a shared object or does not export napi_register_module_v1', () => {
    const path = file(buildElf({ type: 2, exports: ['init'] }));
    expect(problems(path, linuxX64)).toEqual([
      `${path}: is ET_EXEC, an addon must be a shared object (ET_DYN)`,
      `${path}: does not export napi_register_module_v1, so Node cannot load it as an addon`,
    ]);
  });
});

describe('Mach-O rules (darwin)', () => {
  it('accepts a signed arm64 dylib and an x64 one, with libSystem only and macOS 11.0', () => {
    // ld64 marks a -undefined dynamic_lookup symbol with DYNAMIC_LOOKUP_ORDINAL (0xfe), zig with 0 (and binds it flat).
    const arm64 = file(buildMachO({ undefined: [{ name: 'napi_create_object', ordinal: 0xfe }, { name: 'napi_set_named_property', ordinal: 0 }, { name: 'malloc', ordinal: 1 }, { name: '_Unwind_Resume', ordinal: 1 }] }));
    const info = checkPrebuild(arm64, { platform: 'darwin', arch: 'arm64' });
    expect(info).toMatchObject({ format: 'macho', fat: false, arch: 'arm64', filetype: 'MH_DYLIB', dylibs: ['/usr/lib/libSystem.B.dylib'], minOs: '11.0', platform: 'macos', codeSignature: true, adHocSignature: true, twoLevel: true });
    expect(info.undefined).toEqual(['napi_create_object', 'napi_set_named_property', 'malloc', '_Unwind_Resume']);
    expect(info.dynamicLookup).toEqual(['napi_create_object', 'napi_set_named_property']);
    expect(info.exports).toEqual(['napi_register_module_v1']);
    const x64 = file(buildMachO({ arch: 'x64', filetype: 8, minOs: [10, 15] }));
    expect(checkPrebuild(x64, { platform: 'darwin', arch: 'x64' })).toMatchObject({ arch: 'x64', filetype: 'MH_BUNDLE', minOs: '10.15', codeSignature: false });
    // libc++ from the OS is allowed, and C++ runtime symbols bound to it.
    const libcxx = file(buildMachO({ dylibs: ['/usr/lib/libc++.1.dylib', '/usr/lib/libSystem.B.dylib'], undefined: [{ name: '__cxa_throw', ordinal: 1 }] }));
    expect(problems(libcxx, { platform: 'darwin', arch: 'arm64' })).toEqual([]);
  });

  it('refuses an unsigned arm64 file, a newer macOS, other dylibs, host symbols that are not Node-API, debug symbols', () => {
    const path = file(buildMachO({
      signature: false,
      minOs: [13, 0],
      dylibs: ['/usr/lib/libSystem.B.dylib', '/opt/homebrew/lib/libuv.1.dylib'],
      undefined: [{ name: 'napi_create_object', ordinal: 0xfe }, { name: 'uv_default_loop', ordinal: 0 }, { name: 'uv_run', ordinal: 3 }],
      stabs: 3,
    }));
    expect(problems(path, { platform: 'darwin', arch: 'arm64' })).toEqual([
      `${path}: needs /opt/homebrew/lib/libuv.1.dylib, which is not /usr/lib/libSystem.B.dylib or /usr/lib/libc++.1.dylib`,
      `${path}: needs macOS 13.0, the limit is macOS 11.0`,
      `${path}: has no code signature: macOS on arm64 refuses unsigned code (sign it ad hoc)`,
      `${path}: leaves 2 symbols that are not Node-API to the node process: uv_default_loop, uv_run`,
      `${path}: is not stripped (it has 3 debug symbols)`,
    ]);
    const x64 = file(buildMachO({ arch: 'x64', signature: false }));
    expect(problems(x64, { platform: 'darwin', arch: 'arm64' })).toEqual([`${x64}: is built for x64, the target is darwin-arm64`]);
  });
});

describe('PE rules (win32)', () => {
  it('accepts a DLL that imports node.exe, KERNEL32 and the CRT', () => {
    const path = file(buildPe({ imports: { 'node.exe': ['napi_create_object', 'node_api_get_module_file_name'], 'KERNEL32.dll': ['GetLastError'], 'msvcrt.dll': ['malloc'], 'api-ms-win-crt-heap-l1-1-0.dll': ['free'] } }));
    const info = checkPrebuild(path, { platform: 'win32', arch: 'x64' });
    expect(info).toMatchObject({ format: 'pe', arch: 'x64', bits: 64, machine: 'IMAGE_FILE_MACHINE_AMD64', dll: true, stripped: true, exports: ['napi_register_module_v1'] });
    expect(info.imports).toEqual(['node.exe', 'KERNEL32.dll', 'msvcrt.dll', 'api-ms-win-crt-heap-l1-1-0.dll']);
    expect(info.importedSymbols['node.exe']).toEqual(['napi_create_object', 'node_api_get_module_file_name']);
    expect(checkPrebuild(file(buildPe({ machine: 0xaa64 })), { platform: 'win32', arch: 'arm64' })).toMatchObject({ arch: 'arm64', machine: 'IMAGE_FILE_MACHINE_ARM64' });
  });

  it('refuses runtime DLLs, non-Node-API imports from node.exe, a wrong machine, a non-DLL and a symbol table', () => {
    const path = file(buildPe({ machine: 0xaa64, dll: false, symbols: true, imports: { 'NODE.EXE': ['napi_create_object', 'uv_default_loop'], 'libstdc++-6.dll': ['_ZdlPv'], 'kernel32.dll': ['Sleep'] }, exports: ['init'] }));
    expect(problems(path, { platform: 'win32', arch: 'x64' })).toEqual([
      `${path}: is built for arm64, the target is win32-x64`,
      `${path}: is not a DLL (IMAGE_FILE_DLL is not set)`,
      `${path}: imports libstdc++-6.dll, which is not node.exe or a DLL every Windows has (link the runtime statically)`,
      `${path}: imports 1 functions from node.exe that are not Node-API: uv_default_loop`,
      `${path}: does not export napi_register_module_v1, so Node cannot load it as an addon`,
      `${path}: is not stripped (it has a COFF symbol table)`,
    ]);
  });
});
