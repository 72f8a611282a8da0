// PE images (Windows DLLs): the COFF header, the import and delay-import
// directories (what the loader must find) and the export directory.
import { Reader } from './reader.js';

const MACHINES = {
  0x14c: ['IMAGE_FILE_MACHINE_I386', 'ia32'],
  0x1c4: ['IMAGE_FILE_MACHINE_ARMNT', 'arm'],
  0x8664: ['IMAGE_FILE_MACHINE_AMD64', 'x64'],
  0xaa64: ['IMAGE_FILE_MACHINE_ARM64', 'arm64'],
  0xa641: ['IMAGE_FILE_MACHINE_ARM64EC', 'arm64ec'],
  0xa64e: ['IMAGE_FILE_MACHINE_ARM64X', 'arm64x'],
};
const IMAGE_FILE_DLL = 0x2000;
const EXPORT = 0, IMPORT = 1, DELAY_IMPORT = 13;

export function parsePe(buffer, path) {
  const r = new Reader(buffer, path);
  const pe = r.u32(0x3c, 'the DOS header');
  if (r.fixed(pe, 4, 'the PE signature') !== 'PE') r.fail(`is an MZ file without a PE header (at offset ${pe})`);
  const coff = pe + 4;
  const machine = r.u16(coff, 'the COFF header'), sectionCount = r.u16(coff + 2, 'the COFF header');
  const symbolTable = r.u32(coff + 8, 'the COFF header'), symbolCount = r.u32(coff + 12, 'the COFF header');
  const optionalSize = r.u16(coff + 16, 'the COFF header'), characteristics = r.u16(coff + 18, 'the COFF header');
  const opt = coff + 20;
  const magic = r.u16(opt, 'the optional header');
  if (magic !== 0x10b && magic !== 0x20b) r.fail(`is a corrupt PE file (optional header magic 0x${magic.toString(16)})`);
  const bits = magic === 0x20b ? 64 : 32;
  const dirCount = r.u32(opt + (bits === 64 ? 108 : 92), 'the optional header');
  const dirs = opt + (bits === 64 ? 112 : 96);
  const directory = (index) => {
    if (index >= dirCount || dirs + 8 * index + 8 > opt + optionalSize) return null;
    const rva = r.u32(dirs + 8 * index, 'a data directory'), size = r.u32(dirs + 8 * index + 4, 'a data directory');
    return rva === 0 ? null : { rva, size };
  };

  const sectionTable = opt + optionalSize;
  r.table(sectionTable, sectionCount, 40, 'the section table');
  const sections = [];
  for (let i = 0; i < sectionCount; i++) {
    const at = sectionTable + 40 * i;
    sections.push({
      name: r.fixed(at, 8, 'a section header'),
      vsize: r.u32(at + 8), va: r.u32(at + 12), rawSize: r.u32(at + 16), raw: r.u32(at + 20),
    });
  }
  /** The file offset of a relative virtual address, through the section table. */
  const offset = (rva, what) => {
    const section = sections.find((s) => rva >= s.va && rva - s.va < Math.max(s.vsize, s.rawSize));
    if (!section || rva - section.va >= section.rawSize) r.fail(`is a corrupt PE file (${what} at RVA 0x${rva.toString(16)} is in no section's file data)`);
    return section.raw + (rva - section.va);
  };
  const string = (rva, what) => r.cstr(offset(rva, what), what);

  /** The names a lookup table imports (ordinals as '#N'), up to its zero entry. */
  const importNames = (rva) => {
    const names = [];
    for (let at = offset(rva, 'an import lookup table'); ; at += bits / 8) {
      const low = r.u32(at, 'an import lookup table'), high = bits === 64 ? r.u32(at + 4, 'an import lookup table') : 0;
      if (low === 0 && high === 0) return names;
      const byOrdinal = bits === 64 ? high & 0x80000000 : low & 0x80000000;
      names.push(byOrdinal ? `#${low & 0xffff}` : string((low & 0x7fffffff) + 2, 'an imported name'));
    }
  };

  const imports = [], delayImports = [], importedSymbols = {};
  const imp = directory(IMPORT);
  if (imp) {
    for (let at = offset(imp.rva, 'the import directory'); ; at += 20) {
      const lookup = r.u32(at, 'an import descriptor'), name = r.u32(at + 12, 'an import descriptor'), iat = r.u32(at + 16, 'an import descriptor');
      if (lookup === 0 && name === 0 && iat === 0) break;
      const dll = string(name, 'an imported DLL name');
      imports.push(dll);
      importedSymbols[dll] = [...(importedSymbols[dll] ?? []), ...importNames(lookup || iat)];
    }
  }
  const delay = directory(DELAY_IMPORT);
  if (delay) {
    for (let at = offset(delay.rva, 'the delay import directory'); ; at += 32) {
      const name = r.u32(at + 4, 'a delay import descriptor'), names = r.u32(at + 16, 'a delay import descriptor');
      if (name === 0) break;
      const dll = string(name, 'a delay-loaded DLL name');
      delayImports.push(dll);
      importedSymbols[dll] = [...(importedSymbols[dll] ?? []), ...(names ? importNames(names) : [])];
    }
  }

  let dllName = null;
  const exports = [];
  const exp = directory(EXPORT);
  if (exp) {
    const at = offset(exp.rva, 'the export directory');
    dllName = r.u32(at + 12, 'the export directory') ? string(r.u32(at + 12), 'the export DLL name') : null;
    const count = r.u32(at + 24, 'the export directory'), namesRva = r.u32(at + 32, 'the export directory');
    if (count > 0) {
      const names = offset(namesRva, 'the export name table');
      r.table(names, count, 4, 'the export name table');
      for (let i = 0; i < count; i++) exports.push(string(r.u32(names + 4 * i), 'an exported name'));
    }
  }

  const [machineName, arch] = MACHINES[machine] ?? [`0x${machine.toString(16)}`, `machine-0x${machine.toString(16)}`];
  return {
    format: 'pe',
    arch,
    bits,
    machine: machineName,
    dll: Boolean(characteristics & IMAGE_FILE_DLL),
    dllName,
    sections: sections.map((s) => s.name),
    imports: [...imports, ...delayImports],
    delayImports,
    importedSymbols,
    exports,
    stripped: symbolTable === 0 && symbolCount === 0,
  };
}
