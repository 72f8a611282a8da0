// Mach-O images (and universal "fat" files, whose slices are listed): the load
// commands dyld reads and the symbol table of LC_SYMTAB.
import { Reader } from './reader.js';

const CPU_ABI64 = 0x01000000;
const CPUS = { 7: 'ia32', 12: 'arm', [7 | CPU_ABI64]: 'x64', [12 | CPU_ABI64]: 'arm64', 18: 'ppc', [18 | CPU_ABI64]: 'ppc64' };
const FILETYPES = { 1: 'MH_OBJECT', 2: 'MH_EXECUTE', 6: 'MH_DYLIB', 7: 'MH_DYLINKER', 8: 'MH_BUNDLE', 9: 'MH_DYLIB_STUB', 10: 'MH_DSYM' };
const PLATFORMS = { 1: 'macos', 2: 'ios', 3: 'tvos', 4: 'watchos', 6: 'maccatalyst', 7: 'iossimulator' };
const LC_SYMTAB = 0x2, LC_ID_DYLIB = 0xd, LC_CODE_SIGNATURE = 0x1d, LC_VERSION_MIN_MACOSX = 0x24, LC_BUILD_VERSION = 0x32, LC_RPATH = 0x8000001c;
// Every command that loads a dylib; their order gives the two-level library ordinals.
const LOAD_DYLIB = new Set([0xc, 0x80000018 /* weak */, 0x8000001f /* reexport */, 0x20 /* lazy */, 0x80000023 /* upward */]);
const MH_TWOLEVEL = 0x80;
const N_STAB = 0xe0, N_PEXT = 0x10, N_TYPE = 0x0e, N_EXT = 0x01, N_UNDF = 0x0, N_SECT = 0xe;
const CSMAGIC_EMBEDDED_SIGNATURE = 0xfade0cc0, CSMAGIC_CODEDIRECTORY = 0xfade0c02, CS_ADHOC = 0x2;

export const MACHO_MAGICS = [0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe];
export const FAT_MAGICS = [0xcafebabe, 0xcafebabf];

/** X.Y.Z packed as xxxx.yy.zz nibbles, written "11.0" or "10.15.4". */
function version(packed) {
  const parts = [packed >>> 16, (packed >>> 8) & 0xff];
  if (packed & 0xff) parts.push(packed & 0xff);
  return parts.join('.');
}

/** A universal file: each slice inspected on its own. */
export function parseFat(buffer, path) {
  const r = new Reader(buffer, path, false);
  const fat64 = r.u32(0) === 0xcafebabf;
  const count = r.u32(4, 'the fat header');
  const entry = fat64 ? 32 : 20;
  r.table(8, count, entry, 'the fat architectures');
  const slices = [];
  for (let i = 0; i < count; i++) {
    const at = 8 + i * entry;
    const offset = fat64 ? r.u64(at + 8) : r.u32(at + 8), size = fat64 ? r.u64(at + 16) : r.u32(at + 12);
    r.need(offset, size, `slice ${i}`);
    slices.push(parseMachO(buffer.subarray(offset, offset + size), `${path} (slice ${i} at offset ${offset})`));
  }
  return { format: 'macho', fat: true, arch: slices.map((s) => s.arch).join('+'), slices };
}

export function parseMachO(buffer, path) {
  const magic = new Reader(buffer, path).u32(0, 'the Mach-O magic');
  const r = new Reader(buffer, path, magic === 0xfeedface || magic === 0xfeedfacf);
  const bits = magic === 0xfeedfacf || magic === 0xcffaedfe ? 64 : 32;
  const cputype = r.u32(4, 'the Mach-O header'), filetype = r.u32(12, 'the Mach-O header');
  const ncmds = r.u32(16, 'the Mach-O header'), sizeofcmds = r.u32(20, 'the Mach-O header'), flags = r.u32(24, 'the Mach-O header');
  const first = bits === 64 ? 32 : 28;
  r.need(first, sizeofcmds, 'the load commands');

  const dylibs = [];
  const rpaths = [];
  let id = null, minOs = null, sdk = null, platform = null, symtab = null, signature = null;
  for (let i = 0, at = first; i < ncmds; i++) {
    const cmd = r.u32(at, 'a load command'), size = r.u32(at + 4, 'a load command');
    if (size < 8 || at + size > first + sizeofcmds) r.fail(`is a corrupt Mach-O file (load command ${i} at offset ${at} has size ${size})`);
    const str = (field) => r.cstr(at + r.u32(at + field, 'a load command string'), 'a load command string', at + size);
    if (LOAD_DYLIB.has(cmd)) dylibs.push(str(8));
    else if (cmd === LC_ID_DYLIB) id = str(8);
    else if (cmd === LC_RPATH) rpaths.push(str(8));
    else if (cmd === LC_BUILD_VERSION) {
      platform = PLATFORMS[r.u32(at + 8)] ?? `platform-${r.u32(at + 8)}`;
      minOs = version(r.u32(at + 12));
      sdk = version(r.u32(at + 16));
    } else if (cmd === LC_VERSION_MIN_MACOSX) {
      platform = 'macos';
      minOs = version(r.u32(at + 8));
      sdk = version(r.u32(at + 12));
    } else if (cmd === LC_SYMTAB) {
      symtab = { symoff: r.u32(at + 8), nsyms: r.u32(at + 12), stroff: r.u32(at + 16), strsize: r.u32(at + 20) };
    } else if (cmd === LC_CODE_SIGNATURE) {
      signature = { offset: r.u32(at + 8), size: r.u32(at + 12) };
    }
    at += size;
  }

  // Symbols: names lose the leading underscore C names get on Mach-O, so they read as on ELF and PE.
  const undefinedSymbols = [], dynamicLookup = [], exports = [];
  let debugSymbols = 0, localSymbols = 0;
  if (symtab) {
    const size = bits === 64 ? 16 : 12;
    r.table(symtab.symoff, symtab.nsyms, size, 'the symbol table');
    r.need(symtab.stroff, symtab.strsize, 'the string table');
    const strEnd = symtab.stroff + symtab.strsize;
    for (let i = 0; i < symtab.nsyms; i++) {
      const at = symtab.symoff + i * size;
      const strx = r.u32(at), type = r.u8(at + 4), desc = r.u16(at + 6);
      if (type & N_STAB) { debugSymbols++; continue; }
      if (!(type & N_EXT)) { localSymbols++; continue; }
      const raw = strx === 0 ? '' : r.cstr(symtab.stroff + strx, 'a symbol name', strEnd);
      const name = raw.startsWith('_') ? raw.slice(1) : raw;
      if ((type & N_TYPE) === N_UNDF) {
        undefinedSymbols.push(name);
        // The dylib a two-level image binds it to: 1.. the LC_*_DYLIB commands in order. Any other
        // ordinal is a lookup in whatever the process has loaded (the node executable): ld64 writes
        // DYNAMIC_LOOKUP_ORDINAL for -undefined dynamic_lookup, zig writes 0 and binds flat.
        const ordinal = (desc >> 8) & 0xff;
        if (!(flags & MH_TWOLEVEL) || ordinal === 0 || ordinal > dylibs.length) dynamicLookup.push(name);
      } else if ((type & N_TYPE) === N_SECT && !(type & N_PEXT)) {
        exports.push(name);
      }
    }
  }

  // The embedded signature: a SuperBlob (big-endian, whatever the image's byte order) whose CodeDirectory has the flags.
  let codeSignature = false, adHocSignature = false;
  if (signature) {
    const be = new Reader(buffer, path, false);
    be.need(signature.offset, signature.size, 'the code signature');
    if (signature.size >= 12 && be.u32(signature.offset) === CSMAGIC_EMBEDDED_SIGNATURE) {
      codeSignature = true;
      const count = be.u32(signature.offset + 8);
      be.table(signature.offset + 12, count, 8, 'the code signature index');
      for (let i = 0; i < count; i++) {
        const blob = signature.offset + be.u32(signature.offset + 12 + 8 * i + 4, 'the code signature index');
        if (be.u32(blob, 'a code signature blob') === CSMAGIC_CODEDIRECTORY && be.u32(blob + 12, 'the code directory') & CS_ADHOC) adHocSignature = true;
      }
    }
  }

  return {
    format: 'macho',
    fat: false,
    arch: CPUS[cputype] ?? `cpu-${cputype}`,
    bits,
    filetype: FILETYPES[filetype] ?? `0x${filetype.toString(16)}`,
    twoLevel: Boolean(flags & MH_TWOLEVEL),
    id,
    dylibs,
    rpaths,
    platform,
    minOs,
    sdk,
    codeSignature,
    adHocSignature,
    undefined: undefinedSymbols,
    dynamicLookup,
    exports,
    debugSymbols,
    localSymbols,
    stripped: debugSymbols === 0,
  };
}
