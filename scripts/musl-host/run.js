// `node scripts/musl-host/run.js <threadleak.musl.node> [--arch x64|arm64]`: the musl prebuild,
// loaded and called for real. No Node for musl is on the npm registry, so host.c (beside this
// file) plays Node's part: a fake Node-API runtime that dlopens the addon, calls its functions and
// checks what they return. Exit status and output are the host's.
//
// The host is built with the project's pinned zig (scripts/prebuild.js) as a dynamically linked
// musl executable, into .cache/musl-host/host-<arch> (a static musl program cannot dlopen). It
// runs through musl's dynamic loader, which is musl's own libc.so. zig cannot provide that one: the
// libc.so it links against (in its cache) is a stub of symbols with no code, and it ships no
// musl loader source. So the loader comes from Debian's `musl` package, at musl's standard path
// /lib/ld-musl-<cpu>.so.1 (where Alpine has it too). arm64 runs under qemu-user, with the arm64
// build of that package (a second dpkg architecture). Nothing is installed from here: what is
// missing is named with the apt-get command that brings it.
//
// qemu-user (7.2, Debian 12) quirks: it cannot send the guest's two highest real-time signals, which
// the addon's stack probe picks first, so THREADLEAK_STACK_SIGNAL picks a lower one; it does not
// implement process_vm_readv, so the probe cannot copy a stack to scan and the host checks only the
// interrupted PC of another thread there (MUSL_HOST_QEMU tells it).
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureZig, zigEnv } from '../prebuild.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// machine: the ELF e_machine of the addon. loader: musl's libc.so, at the path musl programs name.
const ARCHES = {
  x64: {
    zig: 'x86_64-linux-musl',
    machine: 62,
    loader: '/lib/ld-musl-x86_64.so.1',
    apt: 'apt-get update && apt-get install --no-install-recommends musl',
  },
  arm64: {
    zig: 'aarch64-linux-musl',
    machine: 183,
    loader: '/lib/ld-musl-aarch64.so.1',
    apt: 'dpkg --add-architecture arm64 && apt-get update && apt-get install --no-install-recommends musl:arm64',
    emulator: { names: ['qemu-aarch64', 'qemu-aarch64-static'], apt: 'apt-get update && apt-get install --no-install-recommends qemu-user' },
  },
};
const QEMU_PROBE_SIGNAL = '60'; // qemu-user 7.2 cannot send the guest's 63 and 64

function fail(message, code = 1) {
  console.error(`musl-host: ${message}`);
  process.exit(code);
}

function which(command) {
  const found = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { encoding: 'utf8' }).stdout.trim();
  return found || undefined;
}

/** The ELF e_machine of `path`, or undefined when it is not a 64-bit little-endian ELF file. */
function elfMachine(path) {
  const header = Buffer.alloc(20);
  const fd = openSync(path, 'r');
  try {
    if (readSync(fd, header, 0, 20, 0) < 20) return undefined;
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return undefined;
  return header.readUInt16LE(18);
}

let parsed;
try {
  parsed = parseArgs({ allowPositionals: true, options: { arch: { type: 'string' } } });
} catch (error) {
  fail(`${error.message}\nusage: node scripts/musl-host/run.js <threadleak.musl.node> [--arch x64|arm64]`, 2);
}
const { values, positionals } = parsed;
if (positionals.length !== 1) fail('usage: node scripts/musl-host/run.js <threadleak.musl.node> [--arch x64|arm64]', 2);
const addon = resolve(positionals[0]);
if (!existsSync(addon)) fail(`${addon} does not exist`, 2);
const machine = elfMachine(addon);
const detected = Object.keys(ARCHES).find((name) => ARCHES[name].machine === machine);
const arch = values.arch ?? detected;
if (!(arch in ARCHES)) fail(values.arch ? `--arch ${values.arch}: expected x64 or arm64` : `${addon} is not an x64 or arm64 ELF file`, 2);
if (detected !== arch) fail(`${addon} is not an ${arch} ELF file (e_machine ${machine})`, 2);
const target = ARCHES[arch];

// Checked before building, so that a machine without them fails in a second.
if (!existsSync(target.loader)) {
  fail(`musl's dynamic loader ${target.loader} is missing (zig makes only a link-time stub of libc.so). As root: ${target.apt}`);
}
let emulator;
if (target.emulator && process.arch !== arch) {
  emulator = target.emulator.names.map(which).find(Boolean);
  if (!emulator) fail(`${target.emulator.names[0]} is missing, to run ${arch} code on this machine. As root: ${target.emulator.apt}`);
}

const dir = join(root, '.cache', 'musl-host');
const host = join(dir, `host-${arch}`);
mkdirSync(dir, { recursive: true });
const headers = join(dirname(require.resolve('node-api-headers/package.json')), 'include');
const started = Date.now();
// -dynamic: zig links musl targets statically otherwise. -Werror: zig shows a C warning only as an error.
const build = spawnSync(
  ensureZig(),
  ['build-exe', '-target', target.zig, '-dynamic', '-lc', '-rdynamic', '-O', 'ReleaseFast', '-fno-omit-frame-pointer',
    '-I', headers, '-cflags', '-std=c11', '-Wall', '-Wextra', '-Werror', '--', join(here, 'host.c'), `-femit-bin=${host}`],
  { cwd: dir, env: zigEnv(), stdio: ['ignore', 'inherit', 'inherit'] },
);
if (build.error || build.status !== 0) {
  fail(`building ${relative(root, host)} failed: ${build.error?.message ?? `zig exited with ${build.status ?? build.signal}`}`);
}

const command = emulator ? [emulator, target.loader, host, addon] : [target.loader, host, addon];
const env = { ...process.env };
if (emulator) {
  delete env.QEMU_LD_PREFIX; // the loader path is the real one: nothing to look up under a guest prefix
  env.MUSL_HOST_QEMU = '1';
  env.THREADLEAK_STACK_SIGNAL ??= QEMU_PROBE_SIGNAL;
}
console.log(`musl-host: built ${relative(root, host)} for ${target.zig} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
console.log(`musl-host: ${command.join(' ')}`);
const result = spawnSync(command[0], command.slice(1), { env, stdio: ['ignore', 'inherit', 'inherit'] });
if (result.error) fail(`${command[0]}: ${result.error.message}`);
if (result.status === null) fail(`the host was killed by ${result.signal}`);
process.exit(result.status);
