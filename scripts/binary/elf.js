// ELF shared objects: what the dynamic loader will look at. The dynamic section is
// read through the program headers (the loader's view); section headers, if any,
// only say whether the file still has a .symtab or debug sections, and how many
// entries .dynsym has (otherwise the hash table says).
import { Reader } from './reader.js';

const MACHINES = { 3: 'ia32', 8: 'mips', 20: 'ppc', 21: 'ppc64', 22: 's390x', 40: 'arm', 62: 'x64', 183: 'arm64', 243: 'riscv64', 258: 'loong64' };
const TYPES = { 0: 'ET_NONE', 1: 'ET_REL', 2: 'ET_EXEC', 3: 'ET_DYN', 4: 'ET_CORE' };
const PT_LOAD = 1, PT_DYNAMIC = 2, PT_INTERP = 3;
const SHT_SYMTAB = 2, SHT_DYNAMIC = 6, SHT_DYNSYM = 11;
const DT = { NULL: 0, NEEDED: 1, HASH: 4, STRTAB: 5, SYMTAB: 6, STRSZ: 10, SONAME: 14, RUNPATH: 29, GNU_HASH: 0x6ffffef5, VERSYM: 0x6ffffff0, VERNEED: 0x6ffffffe, VERNEEDNUM: 0x6fffffff };
const STB_LOCAL = 0, STB_WEAK = 2, STT_SECTION = 3, STT_FILE = 4, STV_HIDDEN = 2, STV_INTERNAL = 1;

/** Compares dotted versions numerically: '2.17' < '2.2.5' is false. */
export function compareVersions(a, b) {
  const x = a.split('.').map(Number), y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export function parseElf(buffer, path) {
  const head = new Reader(buffer, path);
  const elfClass = head.u8(4, 'the ELF class'), data = head.u8(5, 'the ELF data encoding');
  if (elfClass !== 1 && elfClass !== 2) head.fail(`is a corrupt ELF file (class ${elfClass})`);
  if (data !== 1 && data !== 2) head.fail(`is a corrupt ELF file (data encoding ${data})`);
  const bits = elfClass === 2 ? 64 : 32;
  const w = bits / 8;
  const r = new Reader(buffer, path, data === 1);
  const is64 = bits === 64;
  const type = r.u16(16, 'the ELF header'), machine = r.u16(18, 'the ELF header');
  const phoff = r.word(is64 ? 32 : 28, bits, 'the ELF header');
  const shoff = r.word(is64 ? 40 : 32, bits, 'the ELF header');
  const phentsize = r.u16(is64 ? 54 : 42, 'the ELF header'), phnum = r.u16(is64 ? 56 : 44, 'the ELF header');
  const shentsize = r.u16(is64 ? 58 : 46, 'the ELF header');
  let shnum = r.u16(is64 ? 60 : 48, 'the ELF header'), shstrndx = r.u16(is64 ? 62 : 50, 'the ELF header');

  if (phnum > 0 && phentsize < (is64 ? 56 : 32)) r.fail(`is a corrupt ELF file (program header size ${phentsize})`);
  if (shoff !== 0 && shentsize < (is64 ? 64 : 40)) r.fail(`is a corrupt ELF file (section header size ${shentsize})`);

  // Program headers.
  if (phnum > 0) r.table(phoff, phnum, phentsize, 'the program headers');
  const segments = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    segments.push({
      type: r.u32(at, 'a program header'),
      offset: r.word(at + (is64 ? 8 : 4), bits, 'a program header'),
      vaddr: r.word(at + (is64 ? 16 : 8), bits, 'a program header'),
      filesz: r.word(at + (is64 ? 32 : 16), bits, 'a program header'),
    });
  }

  // Section headers (optional for loading; extended numbering per the gABI).
  const sections = [];
  if (shoff !== 0) {
    if (shnum === 0) shnum = r.word(shoff + (is64 ? 32 : 20), bits, 'section header 0');
    if (shstrndx === 0xffff) shstrndx = r.u32(shoff + (is64 ? 40 : 24), 'section header 0');
    r.table(shoff, shnum, shentsize, 'the section headers');
    for (let i = 0; i < shnum; i++) {
      const at = shoff + i * shentsize;
      sections.push({
        nameOffset: r.u32(at, 'a section header'),
        type: r.u32(at + 4, 'a section header'),
        offset: r.word(at + (is64 ? 24 : 16), bits, 'a section header'),
        size: r.word(at + (is64 ? 32 : 20), bits, 'a section header'),
        entsize: r.word(at + (is64 ? 56 : 36), bits, 'a section header'),
      });
    }
    const names = sections[shstrndx];
    for (const section of sections) {
      section.name = names ? r.cstr(names.offset + section.nameOffset, 'a section name', names.offset + names.size) : '';
    }
  }

  /** The file offset of a virtual address, through the PT_LOAD segments. */
  const fileOffset = (address, what) => {
    const load = segments.find((s) => s.type === PT_LOAD && address >= s.vaddr && address < s.vaddr + s.filesz);
    if (!load) r.fail(`is a corrupt ELF file (${what} at address 0x${address.toString(16)} is in no loaded segment)`);
    return load.offset + (address - load.vaddr);
  };

  const interpSegment = segments.find((s) => s.type === PT_INTERP);
  const interpreter = interpSegment ? r.cstr(interpSegment.offset, 'the interpreter name', interpSegment.offset + interpSegment.filesz) : null;

  // The dynamic section.
  const dynamicSegment = segments.find((s) => s.type === PT_DYNAMIC) ?? sections.find((s) => s.type === SHT_DYNAMIC);
  const dyn = new Map();
  const neededOffsets = [];
  if (dynamicSegment) {
    const size = dynamicSegment.filesz ?? dynamicSegment.size;
    for (let at = dynamicSegment.offset; at + 2 * w <= dynamicSegment.offset + size; at += 2 * w) {
      const tag = r.word(at, bits, 'the dynamic section'), value = r.word(at + w, bits, 'the dynamic section');
      if (tag === DT.NULL) break;
      if (tag === DT.NEEDED) neededOffsets.push(value);
      else if (!dyn.has(tag)) dyn.set(tag, value);
    }
  }
  const strtab = dyn.has(DT.STRTAB) ? fileOffset(dyn.get(DT.STRTAB), 'DT_STRTAB') : null;
  const strEnd = strtab === null ? 0 : strtab + (dyn.get(DT.STRSZ) ?? r.size - strtab);
  const dynString = (offset, what) => {
    if (strtab === null) r.fail(`is a corrupt ELF file (${what} but no DT_STRTAB)`);
    return r.cstr(strtab + offset, what, strEnd);
  };
  const needed = neededOffsets.map((offset) => dynString(offset, 'a DT_NEEDED name'));

  // Version needs: version index -> { name, file }.
  const versions = new Map();
  const versionNeeds = {};
  if (dyn.has(DT.VERNEED)) {
    let at = fileOffset(dyn.get(DT.VERNEED), 'DT_VERNEED');
    const count = dyn.get(DT.VERNEEDNUM) ?? 0;
    for (let i = 0; i < count; i++) {
      const cnt = r.u16(at + 2, 'a version need'), file = dynString(r.u32(at + 4, 'a version need'), 'a version need file');
      const list = (versionNeeds[file] ??= []);
      let aux = at + r.u32(at + 8, 'a version need');
      for (let j = 0; j < cnt; j++) {
        const other = r.u16(aux + 6, 'a version need entry'), name = dynString(r.u32(aux + 8, 'a version need entry'), 'a version name');
        versions.set(other, { name, file });
        list.push(name);
        const next = r.u32(aux + 12, 'a version need entry');
        if (next === 0) break;
        aux += next;
      }
      const next = r.u32(at + 12, 'a version need');
      if (next === 0) break;
      at += next;
    }
  }
  let maxGlibc = null;
  for (const { name } of versions.values()) {
    const match = /^GLIBC_(\d+(?:\.\d+)+)$/.exec(name);
    if (match && (maxGlibc === null || compareVersions(match[1], maxGlibc) > 0)) maxGlibc = match[1];
  }

  // Dynamic symbols.
  const undefinedSymbols = [], weakUndefined = [], exports = [];
  if (dyn.has(DT.SYMTAB)) {
    const symtab = fileOffset(dyn.get(DT.SYMTAB), 'DT_SYMTAB');
    const symsize = is64 ? 24 : 16;
    const dynsym = sections.find((s) => s.type === SHT_DYNSYM);
    let count;
    if (dynsym) count = Math.floor(dynsym.size / (dynsym.entsize || symsize));
    else if (dyn.has(DT.HASH)) count = r.u32(fileOffset(dyn.get(DT.HASH), 'DT_HASH') + 4, 'the hash table');
    else if (dyn.has(DT.GNU_HASH)) count = gnuHashCount(r, fileOffset(dyn.get(DT.GNU_HASH), 'DT_GNU_HASH'), w);
    else r.fail('is a corrupt ELF file (DT_SYMTAB without a hash table or .dynsym)');
    r.table(symtab, count, symsize, 'the dynamic symbol table');
    const versym = dyn.has(DT.VERSYM) ? fileOffset(dyn.get(DT.VERSYM), 'DT_VERSYM') : null;
    for (let i = 1; i < count; i++) {
      const at = symtab + i * symsize;
      const name = dynString(r.u32(at, 'a symbol'), 'a symbol name');
      const info = r.u8(at + (is64 ? 4 : 12)), other = r.u8(at + (is64 ? 5 : 13)), shndx = r.u16(at + (is64 ? 6 : 14));
      const bind = info >> 4, symType = info & 0xf, visibility = other & 3;
      if (!name || bind === STB_LOCAL) continue;
      if (shndx === 0) {
        const version = versym === null ? undefined : versions.get(r.u16(versym + 2 * i, 'the symbol versions') & 0x7fff);
        const full = version ? `${name}@${version.name}` : name;
        undefinedSymbols.push(full);
        if (bind === STB_WEAK) weakUndefined.push(full);
      } else if (visibility !== STV_HIDDEN && visibility !== STV_INTERNAL && symType !== STT_SECTION && symType !== STT_FILE) {
        exports.push(name);
      }
    }
  }

  const musl = needed.some((n) => n === 'libc.so' || /^(libc\.musl-|ld-musl-)/.test(n)) || /\/ld-musl-/.test(interpreter ?? '');
  const glibc = needed.some((n) => n === 'libc.so.6' || /^ld-linux/.test(n)) || maxGlibc !== null;
  return {
    format: 'elf',
    arch: MACHINES[machine] ?? `machine-${machine}`,
    bits,
    endian: data === 1 ? 'little' : 'big',
    type: TYPES[type] ?? `0x${type.toString(16)}`,
    interpreter,
    soname: dyn.has(DT.SONAME) ? dynString(dyn.get(DT.SONAME), 'DT_SONAME') : null,
    runpath: dyn.has(DT.RUNPATH) ? dynString(dyn.get(DT.RUNPATH), 'DT_RUNPATH') : null,
    needed,
    versionNeeds,
    maxGlibc,
    libc: musl ? 'musl' : glibc ? 'glibc' : null,
    undefined: undefinedSymbols,
    weakUndefined,
    exports,
    stripped: !sections.some((s) => s.type === SHT_SYMTAB || s.name.startsWith('.debug_')),
  };
}

/** The number of dynamic symbols, from a DT_GNU_HASH table: past the last bucket's chain end. */
function gnuHashCount(r, at, wordSize) {
  const nbuckets = r.u32(at, 'the GNU hash table'), symoffset = r.u32(at + 4, 'the GNU hash table');
  const buckets = at + 16 + r.u32(at + 8, 'the GNU hash table') * wordSize;
  r.table(buckets, nbuckets, 4, 'the GNU hash buckets');
  let last = 0;
  for (let i = 0; i < nbuckets; i++) last = Math.max(last, r.u32(buckets + 4 * i));
  if (last < symoffset) return symoffset;
  const chains = buckets + 4 * nbuckets;
  while (!(r.u32(chains + 4 * (last - symoffset), 'the GNU hash chains') & 1)) last++;
  return last + 1;
}
