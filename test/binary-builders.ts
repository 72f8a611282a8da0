// Minimal but well-formed ELF, Mach-O and PE shared libraries, written byte by byte, so the tests
// of scripts/check-binary.js can cover every format and rule without a cross toolchain. Each holds
// only what a loader (and that script) reads: llvm-readelf, llvm-otool and llvm-readobj read them too.

/** A growing little-endian byte buffer. */
class Bytes {
  chunks: Buffer[] = [];
  length = 0;
  put(buffer: Buffer): number {
    const at = this.length;
    this.chunks.push(buffer);
    this.length += buffer.length;
    return at;
  }
  align(n: number): void {
    if (this.length % n) this.put(Buffer.alloc(n - (this.length % n)));
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function fields(layout: [number, number | bigint][]): Buffer {
  const size = layout.reduce((sum, [width]) => sum + width, 0);
  const b = Buffer.alloc(size);
  let at = 0;
  for (const [width, value] of layout) {
    if (width === 1) b.writeUInt8(Number(value), at);
    else if (width === 2) b.writeUInt16LE(Number(value), at);
    else if (width === 4) b.writeUInt32LE(Number(value), at);
    else b.writeBigUInt64LE(BigInt(value), at);
    at += width;
  }
  return b;
}

/** A string table: offset 0 is the empty string. */
class Strings {
  bytes = Buffer.from([0]);
  add(s: string): number {
    const at = this.bytes.length;
    this.bytes = Buffer.concat([this.bytes, Buffer.from(`${s}\0`, 'latin1')]);
    return at;
  }
}

export interface ElfSymbol {
  name: string;
  /** A version need, e.g. GLIBC_2.17 from libc.so.6. */
  version?: string;
  file?: string;
  weak?: boolean;
}

export interface ElfOptions {
  machine?: number; // 62 x86-64, 183 AArch64
  type?: number; // 3 ET_DYN
  needed?: string[];
  undefined?: ElfSymbol[];
  exports?: string[];
  symtab?: boolean; // a .symtab section (not stripped)
  sections?: boolean; // section headers at all (the symbol count then comes from DT_HASH)
}

/** An ELF64 little-endian shared object: one PT_LOAD mapping the whole file at address 0, and PT_DYNAMIC. */
export function buildElf(options: ElfOptions = {}): Buffer {
  const { machine = 62, type = 3, needed = ['libc.so.6'], undefined: undef = [], exports = ['napi_register_module_v1'], symtab = false, sections = true } = options;
  const dynstr = new Strings();
  const neededOffsets = needed.map((n) => dynstr.add(n));
  // Version indexes from 2, per (file, version).
  const versionIndex = new Map<string, number>();
  const byFile = new Map<string, string[]>();
  for (const s of undef) {
    if (!s.version) continue;
    const key = `${s.file ?? 'libc.so.6'}\0${s.version}`;
    if (versionIndex.has(key)) continue;
    versionIndex.set(key, versionIndex.size + 2);
    byFile.set(s.file ?? 'libc.so.6', [...(byFile.get(s.file ?? 'libc.so.6') ?? []), s.version]);
  }
  const symbols = [
    ...undef.map((s) => ({ name: dynstr.add(s.name), info: ((s.weak ? 2 : 1) << 4) | 2, shndx: 0, value: 0, version: s.version ? versionIndex.get(`${s.file ?? 'libc.so.6'}\0${s.version}`)! : 1 })),
    ...exports.map((name, i) => ({ name: dynstr.add(name), info: (1 << 4) | 2, shndx: 4, value: 0x1000 + 16 * i, version: 1 })),
  ];
  const verneed: Buffer[] = [];
  const files = [...byFile];
  files.forEach(([file, versions], i) => {
    verneed.push(fields([[2, 1], [2, versions.length], [4, dynstr.add(file)], [4, 16], [4, i === files.length - 1 ? 0 : 16 + 16 * versions.length]]));
    versions.forEach((v, j) => {
      verneed.push(fields([[4, 0], [2, 0], [2, versionIndex.get(`${file}\0${v}`)!], [4, dynstr.add(v)], [4, j === versions.length - 1 ? 0 : 16]]));
    });
  });

  const out = new Bytes();
  const headerSize = 64, phSize = 56;
  out.put(Buffer.alloc(headerSize + 2 * phSize)); // filled in last
  const strOff = out.put(dynstr.bytes);
  out.align(8);
  const symOff = out.put(Buffer.concat([Buffer.alloc(24), ...symbols.map((s) => fields([[4, s.name], [1, s.info], [1, 0], [2, s.shndx], [8, s.value], [8, 0]]))]));
  const count = symbols.length + 1;
  const versymOff = out.put(Buffer.concat([fields([[2, 0]]), ...symbols.map((s) => fields([[2, s.version]]))]));
  out.align(8);
  const hashOff = out.put(Buffer.concat([fields([[4, 1], [4, count], [4, 0]]), Buffer.alloc(4 * count)]));
  out.align(8);
  const verneedOff = out.put(Buffer.concat(verneed));
  out.align(8);
  const dynamic = [
    ...neededOffsets.map((o): [number, number] => [1, o]),
    [4, hashOff], [5, strOff], [6, symOff], [10, dynstr.bytes.length], [11, 24],
    [0x6ffffff0, versymOff], ...(files.length ? [[0x6ffffffe, verneedOff], [0x6fffffff, files.length]] : []),
    [0, 0],
  ] as [number, number][];
  const dynOff = out.put(Buffer.concat(dynamic.map(([tag, value]) => fields([[8, tag], [8, value]]))));
  const shstr = new Strings();
  const shstrOff = out.put(Buffer.alloc(0));
  const sectionList: { name: number; type: number; offset: number; size: number; link: number; entsize: number; info?: number }[] = [
    { name: 0, type: 0, offset: 0, size: 0, link: 0, entsize: 0 },
    { name: shstr.add('.dynstr'), type: 3, offset: strOff, size: dynstr.bytes.length, link: 0, entsize: 0 },
    { name: shstr.add('.dynsym'), type: 11, offset: symOff, size: 24 * count, link: 1, entsize: 24 },
    { name: shstr.add('.dynamic'), type: 6, offset: dynOff, size: 16 * dynamic.length, link: 1, entsize: 16 },
    { name: shstr.add('.text'), type: 1, offset: 0, size: 0, link: 0, entsize: 0 },
    { name: shstr.add('.gnu.version'), type: 0x6fffffff, offset: versymOff, size: 2 * count, link: 2, entsize: 2 },
    ...(files.length ? [{ name: shstr.add('.gnu.version_r'), type: 0x6ffffffe, offset: verneedOff, size: 16 * (verneed.length), link: 1, entsize: 0, info: files.length }] : []),
    ...(symtab ? [{ name: shstr.add('.symtab'), type: 2, offset: symOff, size: 24, link: 1, entsize: 24 }] : []),
  ];
  const shstrtab = { name: shstr.add('.shstrtab'), type: 3, offset: shstrOff, size: shstr.bytes.length, link: 0, entsize: 0 };
  sectionList.push(shstrtab);
  out.put(shstr.bytes);
  out.align(8);
  const shOff = out.put(Buffer.concat(sectionList.map((s) => fields([[4, s.name], [4, s.type], [8, s.type === 0 ? 0 : 2], [8, s.offset], [8, s.offset], [8, s.size], [4, s.link], [4, s.info ?? 0], [8, 8], [8, s.entsize]]))));
  const file = out.toBuffer();
  const header = Buffer.concat([
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    fields([[2, type], [2, machine], [4, 1], [8, 0], [8, headerSize], [8, sections ? shOff : 0], [4, 0], [2, headerSize], [2, phSize], [2, 2], [2, 64], [2, sections ? sectionList.length : 0], [2, sections ? sectionList.length - 1 : 0]]),
    fields([[4, 1], [4, 5], [8, 0], [8, 0], [8, 0], [8, file.length], [8, file.length], [8, 0x1000]]), // PT_LOAD
    fields([[4, 2], [4, 6], [8, dynOff], [8, dynOff], [8, dynOff], [8, 16 * dynamic.length], [8, 16 * dynamic.length], [8, 8]]), // PT_DYNAMIC
  ]);
  header.copy(file, 0);
  return file;
}

export interface MachOOptions {
  arch?: 'x64' | 'arm64';
  filetype?: number; // 6 MH_DYLIB, 8 MH_BUNDLE
  dylibs?: string[];
  minOs?: [number, number]; // LC_BUILD_VERSION minos
  signature?: boolean; // an ad-hoc LC_CODE_SIGNATURE
  /** Undefined symbols (C names); `ordinal` 0xfe is dynamic lookup, 1.. a dylib of `dylibs`. */
  undefined?: { name: string; ordinal: number }[];
  exports?: string[];
  stabs?: number; // debug (N_STAB) entries
}

/** A 64-bit little-endian Mach-O dylib with a two-level namespace. */
export function buildMachO(options: MachOOptions = {}): Buffer {
  const { arch = 'arm64', filetype = 6, dylibs = ['/usr/lib/libSystem.B.dylib'], minOs = [11, 0], signature = arch === 'arm64', undefined: undef = [{ name: 'napi_create_object', ordinal: 0xfe }], exports = ['napi_register_module_v1'], stabs = 0 } = options;
  const strings = new Strings();
  const nlist = (name: string, type: number, sect: number, desc: number) => fields([[4, strings.add(`_${name}`)], [1, type], [1, sect], [2, desc], [8, 0]]);
  const symbols = [
    ...Array.from({ length: stabs }, (_, i) => nlist(`debug${i}`, 0x24, 1, 0)),
    ...exports.map((name) => nlist(name, 0x0f, 1, 0)),
    ...undef.map(({ name, ordinal }) => nlist(name, 0x01, 0, ordinal << 8)),
  ];
  const dylibCommand = (cmd: number, path: string) => {
    const name = Buffer.from(`${path}\0`, 'latin1');
    const size = Math.ceil((24 + name.length) / 8) * 8;
    const command = Buffer.alloc(size);
    fields([[4, cmd], [4, size], [4, 24], [4, 2], [4, 0x10000], [4, 0x10000]]).copy(command);
    name.copy(command, 24);
    return command;
  };
  const commands: Buffer[] = [
    ...(filetype === 6 ? [dylibCommand(0xd, '@rpath/addon.node')] : []), // LC_ID_DYLIB
    ...dylibs.map((path) => dylibCommand(0xc, path)), // LC_LOAD_DYLIB
  ];
  commands.push(fields([[4, 0x32], [4, 24], [4, 1], [4, (minOs[0] << 16) | (minOs[1] << 8)], [4, 14 << 16], [4, 0]]));
  const symtabAt = commands.length;
  commands.push(Buffer.alloc(24)); // LC_SYMTAB, filled below
  if (signature) commands.push(Buffer.alloc(16)); // LC_CODE_SIGNATURE, filled below
  const sizeofcmds = commands.reduce((sum, c) => sum + c.length, 0);
  const symoff = 32 + sizeofcmds;
  const stroff = symoff + 16 * symbols.length;
  const strEnd = stroff + strings.bytes.length;
  const sigoff = Math.ceil(strEnd / 16) * 16;
  commands[symtabAt] = fields([[4, 0x2], [4, 24], [4, symoff], [4, symbols.length], [4, stroff], [4, strings.bytes.length]]);
  // SuperBlob { magic, length, count: 1, index: [{ type 0 (CodeDirectory), offset 20 }] } + a CodeDirectory header start (flags: adhoc | linker-signed).
  const be = (values: number[]) => Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; }));
  const blob = Buffer.concat([be([0xfade0cc0, 20 + 44, 1, 0, 20]), be([0xfade0c02, 44, 0x20400, 0x20002, 0, 0, 0, 0, 0, 0, 0])]);
  if (signature) commands[symtabAt + 1] = fields([[4, 0x1d], [4, 16], [4, sigoff], [4, blob.length]]);
  const cputype = arch === 'arm64' ? 0x0100000c : 0x01000007;
  const header = fields([[4, 0xfeedfacf], [4, cputype], [4, arch === 'arm64' ? 0 : 3], [4, filetype], [4, commands.length], [4, sizeofcmds], [4, 0x80 | 0x100000 /* TWOLEVEL | NO_REEXPORTED_DYLIBS */], [4, 0]]);
  const body = Buffer.concat([header, ...commands, ...symbols, strings.bytes]);
  return signature ? Buffer.concat([body, Buffer.alloc(sigoff - strEnd), blob]) : body;
}

/** A universal file of `slices`. */
export function buildFat(slices: { cputype: number; data: Buffer }[]): Buffer {
  const be = (values: number[]) => Buffer.concat(values.map((v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; }));
  let offset = 4096;
  const entries: Buffer[] = [], datas: Buffer[] = [];
  for (const { cputype, data } of slices) {
    entries.push(be([cputype, cputype === 0x01000007 ? 3 : 0, offset, data.length, 14]));
    const padded = Buffer.alloc(Math.ceil(data.length / 4096) * 4096);
    data.copy(padded);
    datas.push(padded);
    offset += padded.length;
  }
  const head = Buffer.concat([be([0xcafebabe, slices.length]), ...entries]);
  return Buffer.concat([head, Buffer.alloc(4096 - head.length), ...datas]);
}

export interface PeOptions {
  machine?: number; // 0x8664 x64, 0xaa64 arm64
  dll?: boolean;
  imports?: Record<string, string[]>;
  exports?: string[];
  symbols?: boolean; // a COFF symbol table (not stripped)
}

/** A PE32+ image with one section (.rdata) holding the import and export directories. */
export function buildPe(options: PeOptions = {}): Buffer {
  const { machine = 0x8664, dll = true, imports = { 'node.exe': ['napi_create_object'], 'KERNEL32.dll': ['GetLastError'] }, exports = ['napi_register_module_v1'], symbols = false } = options;
  const VA = 0x1000, RAW = 0x200;
  const sec = new Bytes();
  const rva = (at: number) => VA + at;
  // Import descriptors first (their size is known), then what they point to.
  const dlls = Object.entries(imports);
  const descAt = sec.put(Buffer.alloc(20 * (dlls.length + 1)));
  const descriptors: Buffer[] = [];
  for (const [dll, names] of dlls) {
    const hints = names.map((name) => { sec.align(2); return sec.put(Buffer.concat([fields([[2, 0]]), Buffer.from(`${name}\0`, 'latin1')])); });
    const dllName = sec.put(Buffer.from(`${dll}\0`, 'latin1'));
    sec.align(8);
    const ilt = sec.put(Buffer.concat([...hints.map((h) => fields([[8, rva(h)]])), Buffer.alloc(8)]));
    const iat = sec.put(Buffer.concat([...hints.map((h) => fields([[8, rva(h)]])), Buffer.alloc(8)]));
    descriptors.push(fields([[4, rva(ilt)], [4, 0], [4, 0], [4, rva(dllName)], [4, rva(iat)]]));
  }
  const sorted = [...exports].sort();
  const nameAts = sorted.map((name) => sec.put(Buffer.from(`${name}\0`, 'latin1')));
  const dllNameAt = sec.put(Buffer.from('addon.node\0', 'latin1'));
  sec.align(4);
  const functions = sec.put(Buffer.concat(sorted.map(() => fields([[4, 0x2000]]))));
  const names = sec.put(Buffer.concat(nameAts.map((at) => fields([[4, rva(at)]]))));
  const ordinals = sec.put(Buffer.concat(sorted.map((_, i) => fields([[2, i]]))));
  sec.align(4);
  const exportAt = sec.put(fields([[4, 0], [4, 0], [2, 0], [2, 0], [4, rva(dllNameAt)], [4, 1], [4, sorted.length], [4, sorted.length], [4, rva(functions)], [4, rva(names)], [4, rva(ordinals)]]));
  sec.align(RAW);
  const section = sec.toBuffer();
  Buffer.concat(descriptors).copy(section, descAt);

  const dirs = Array.from({ length: 16 }, () => [0, 0]);
  dirs[0] = [rva(exportAt), 40];
  dirs[1] = [rva(descAt), 20 * (dlls.length + 1)];
  const optional = Buffer.concat([
    fields([[2, 0x20b], [1, 14], [1, 0], [4, section.length], [4, 0], [4, 0], [4, 0], [4, VA], [8, 0x180000000n], [4, 0x1000], [4, RAW], [2, 6], [2, 0], [2, 0], [2, 0], [2, 6], [2, 0], [4, 0]]),
    fields([[4, VA + Math.ceil(section.length / 0x1000) * 0x1000], [4, RAW], [4, 0], [2, 3], [2, 0x160], [8, 0x100000], [8, 0x1000], [8, 0x100000], [8, 0x1000], [4, 0], [4, 16]]),
    ...dirs.map(([r, s]) => fields([[4, r!], [4, s!]])),
  ]);
  const symbolTable = symbols ? RAW + section.length : 0;
  const coff = fields([[2, machine], [2, 1], [4, 0], [4, symbolTable], [4, symbols ? 1 : 0], [2, optional.length], [2, 0x22 | (dll ? 0x2000 : 0)]]);
  const sectionHeader = Buffer.concat([Buffer.from('.rdata\0\0', 'latin1'), fields([[4, section.length], [4, VA], [4, section.length], [4, RAW], [4, 0], [4, 0], [2, 0], [2, 0], [4, 0x40000040]])]);
  const dos = Buffer.alloc(64);
  dos.write('MZ', 0, 'latin1');
  dos.writeUInt32LE(64, 0x3c);
  const headers = Buffer.concat([dos, Buffer.from('PE\0\0', 'latin1'), coff, optional, sectionHeader]);
  const padded = Buffer.concat([headers, Buffer.alloc(RAW - headers.length)]);
  // One symbol record (18 bytes) and an empty string table (its 4-byte size).
  return Buffer.concat([padded, section, ...(symbols ? [Buffer.concat([Buffer.from('.file\0\0\0', 'latin1'), Buffer.alloc(10), fields([[4, 4]])])] : [])]);
}
