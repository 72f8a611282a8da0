// The package as users get it: `npm pack`, then `npm install --ignore-scripts <tarball>` into an
// empty project, then a fresh node process that imports (and requires) 'threadleak'. With install
// scripts off nothing can be compiled, so whatever loads is the prebuild that the tarball carries.
//
// The prebuild is the one `npm run prebuild` made (zig, glibc 2.17) when it is newer than the native
// sources; otherwise one is made here with this machine's own compiler (`--toolchain host`: npm test
// never needs zig), in a staging copy under the temp dir, never in this tree's build/: `prebuildify`
// cleans build/ and moves the addon out of it, which would pull the addon from under the test files
// running beside this one.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const platformDir = `${process.platform}-${process.arch}`;
const prebuild = join(root, 'prebuilds', platformDir, 'threadleak.node');

/** The environment of a child npm or node: nothing of the npm run or vitest run we are inside. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^(npm_package_|npm_lifecycle_|npm_config_(local_)?prefix$|INIT_CWD$|NODE_OPTIONS$|VITEST)/i.test(key)) {
      delete env[key];
    }
  }
  return env;
}

function run(command: string, args: string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  return runIn(command, args, cwd, {});
}

/** `run` with some variables of the child's environment replaced. */
function runIn(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, env: { ...childEnv(), ...env }, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`${command} ${args.join(' ')} (in ${cwd}) failed: ${error.message}\n${stdout}\n${stderr}`));
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

function newestMtime(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...readdirSync(path).map((name) => newestMtime(join(path, name))));
}

/** Runs the package's own `npm run prebuild` in a staging copy and installs the result atomically. */
async function ensurePrebuild(tmp: string): Promise<void> {
  const sources = Math.max(newestMtime(join(root, 'native')), newestMtime(join(root, 'binding.gyp')));
  if (existsSync(prebuild) && statSync(prebuild).mtimeMs >= sources) return;

  const stage = join(tmp, 'stage');
  mkdirSync(join(stage, 'node_modules'), { recursive: true });
  for (const file of ['package.json', 'binding.gyp']) copyFileSync(join(root, file), join(stage, file));
  cpSync(join(root, 'scripts'), join(stage, 'scripts'), { recursive: true });
  cpSync(join(root, 'native'), join(stage, 'native'), { recursive: true });
  // node-addon-api is copied, not linked: gyp places its build files by its path relative to the
  // stage, and a link would resolve to this tree's node_modules and write them there.
  for (const name of readdirSync(join(root, 'node_modules'))) {
    const from = join(root, 'node_modules', name);
    const to = join(stage, 'node_modules', name);
    if (name === 'node-addon-api') cpSync(from, to, { recursive: true });
    else symlinkSync(from, to);
  }
  await run('npm', ['run', 'prebuild', '--', '--only', platformDir, '--toolchain', 'host'], stage);

  const built = join(stage, 'prebuilds', platformDir, 'threadleak.node');
  expect(existsSync(built), `npm run prebuild wrote ${built}`).toBe(true);
  mkdirSync(join(root, 'prebuilds', platformDir), { recursive: true });
  const partial = `${prebuild}.${process.pid}.tmp`;
  copyFileSync(built, partial);
  renameSync(partial, prebuild);
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

// What the fresh process prints: its threads as the package lists them, what the kernel lists,
// and which .node files it has mapped (the addon that was really loaded, not the one we expect).
const probeBody = `
  const list = threadleak.threads();
  const fs = require('node:fs');
  const path = require('node:path');
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
    .filter((line) => line.endsWith('.node')).map((line) => line.slice(line.indexOf('/')));
  const pkgDir = path.dirname(require.resolve('threadleak/package.json'));
  console.log(JSON.stringify({
    pid: process.pid,
    version: process.version,
    comm: fs.readFileSync('/proc/self/comm', 'utf8').trim(),
    tasks: fs.readdirSync('/proc/self/task').map(Number),
    threads: list,
    mapped: [...new Set(maps)],
    resolved: require('node-gyp-build').resolve(pkgDir),
    pkgDir,
  }));
`;
const probes = {
  import: `import * as threadleak from 'threadleak';
    import { createRequire } from 'node:module';
    const require = createRequire(import.meta.url);
    ${probeBody}`,
  require: `const threadleak = require('threadleak');
    ${probeBody}`,
};

interface Probe {
  pid: number;
  version: string;
  comm: string;
  tasks: number[];
  threads: { id: number; key: string; name: string; state: string; rawState: string }[];
  mapped: string[];
  resolved: string;
  pkgDir: string;
}

// The Linux tarball (npm pack, the linux-x64 prebuild, /proc probes); Windows has its own package test.
describe.runIf(process.platform === 'linux')('the packed package', () => {
  let tmp: string;
  let app: string;
  let packed: { filename: string; files: { path: string }[] };

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'threadleak-package-'));
    await ensurePrebuild(tmp);
    // What `prepare` does on a real `npm pack`; done apart so that its output stays out of the JSON.
    await run('npm', ['run', 'compile'], root);
    const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], root);
    [packed] = JSON.parse(stdout);
    app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    await run(
      'npm',
      ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--prefix', app, join(tmp, packed.filename)],
      app,
    );
  }, 180_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('ships dist, the prebuild, native/ and binding.gyp, and no build output, tests or dependencies', () => {
    const paths = packed.files.map((f) => f.path);
    for (const required of [
      'package.json',
      'binding.gyp',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/index.mjs',
      'dist/index.d.mts',
      'dist/package.json',
      'scripts/install.js',
      'native/addon.cc',
      'native/threads.h',
      'native/linux/threads_linux.cc',
      `prebuilds/${platformDir}/threadleak.node`,
    ]) {
      expect(paths).toContain(required);
    }
    for (const path of paths) expect(path).not.toMatch(/^(build|test|node_modules|\.cache)\//);
    // The TypeScript sources are shipped, for the source maps; nothing else of src/.
    expect(paths).toContain('src/index.ts');
    for (const path of paths.filter((p) => p.startsWith('src/'))) expect(path).toMatch(/\.m?ts$/);
  });

  it("every source map's sources resolve to files in the installed package, so a stack opens", async () => {
    const pkgDir = join(app, 'node_modules', 'threadleak');
    const maps = readdirSync(join(pkgDir, 'dist')).filter((name) => name.endsWith('.map'));
    expect(maps).toEqual(expect.arrayContaining(['index.js.map', 'index.mjs.map', 'snapshot.js.map']));
    for (const name of maps) {
      const map = JSON.parse(readFileSync(join(pkgDir, 'dist', name), 'utf8')) as { sourceRoot?: string; sources: string[] };
      expect(map.sources.length).toBeGreaterThan(0);
      for (const source of map.sources) {
        const file = join(pkgDir, 'dist', map.sourceRoot ?? '', source);
        expect({ map: name, source, exists: existsSync(file) }).toEqual({ map: name, source, exists: true });
      }
    }
    // What a user sees: a stack through the package, with source maps on, names a .ts file that is there.
    const { stdout } = await run(process.execPath, ['--enable-source-maps', '-e', `
      try { require('threadleak').threads({ pdi: 1 }); } catch (error) { console.log(error.stack); }
    `], app);
    const frame = /\((\/[^():]+\.ts):(\d+):\d+\)/.exec(stdout);
    expect(frame, stdout).not.toBeNull();
    expect(frame![1]!.startsWith(join(pkgDir, 'src'))).toBe(true);
    // The innermost frame is where the TypeError for the unknown option is made.
    const line = readFileSync(frame![1]!, 'utf8').split('\n')[Number(frame![2]) - 1];
    expect(line).toMatch(/TypeError|throw|invalidOption/);
  }, 30_000);

  it('installs without scripts: no build/, the declared entry points and types present', () => {
    const pkgDir = join(app, 'node_modules', 'threadleak');
    expect(existsSync(join(pkgDir, 'build'))).toBe(false);
    const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    expect(Object.keys(manifest.exports['.'])).toEqual(['import', 'require']);
    expect(Object.keys(manifest.exports)).toEqual(['.', './vitest', './jest', './node-test', './register', './package.json']);
    for (const [subpath, entry] of Object.entries(manifest.exports)) {
      if (subpath === './package.json') continue;
      // Each entry: types first, then the module, for each condition it has (vitest's is ES only).
      const targets = 'default' in (entry as object) ? [entry] : Object.values(entry as object);
      for (const target of targets as { types: string; default: string }[]) {
        expect({ subpath, keys: Object.keys(target) }).toEqual({ subpath, keys: ['types', 'default'] });
        expect(existsSync(join(pkgDir, target.types))).toBe(true);
        expect(existsSync(join(pkgDir, target.default))).toBe(true);
      }
    }
    // The prebuild that was installed is the one this tree holds, byte for byte.
    expect(sha256(join(pkgDir, 'prebuilds', platformDir, 'threadleak.node'))).toBe(sha256(prebuild));
  });

  it('install script: uses the prebuild on Linux, and builds nothing where there is no backend yet', async () => {
    const pkgDir = join(app, 'node_modules', 'threadleak');
    // node-gyp-build first asks node-gyp-build-test whether a binary loads:
    // seen through a stand-in that records the call and answers yes.
    const bin = join(tmp, 'bin');
    mkdirSync(bin, { recursive: true });
    const marker = join(tmp, 'asked');
    writeFileSync(join(bin, 'node-gyp-build-test'), `#!/bin/sh\necho "$PWD" > '${marker}'\n`, { mode: 0o755 });
    await runIn(process.execPath, ['scripts/install.js'], pkgDir, { PATH: `${bin}:${process.env.PATH}` });
    expect(readFileSync(marker, 'utf8').trim()).toBe(pkgDir);
    expect(existsSync(join(pkgDir, 'build'))).toBe(false);
    // As on FreeBSD (no backend): nothing compiled, nothing failed.
    const elsewhere = join(tmp, 'elsewhere.mjs');
    writeFileSync(elsewhere, "Object.defineProperty(process, 'platform', { value: 'freebsd' });\n");
    const { stdout } = await runIn(process.execPath, ['--import', pathToFileURL(elsewhere).href, 'scripts/install.js'], pkgDir, {
      PATH: '/nonexistent', // no node-gyp, no compiler: must not be needed
    });
    expect(stdout).toMatch(/no native backend for freebsd, nothing to build/);
    expect(existsSync(join(pkgDir, 'build'))).toBe(false);
  }, 60_000);

  it('gives import and require one module instance with the same exports, on Node versions without require(esm) too', async () => {
    // Jest's module system and Node before 20.19/22.12 cannot require an ES
    // module: the package is CommonJS, its ES entry re-exports it.
    const source = `
      import { createRequire } from 'node:module';
      import * as imported from 'threadleak';
      const required = createRequire(import.meta.url)('threadleak');
      const names = (m) => Object.keys(m).filter((k) => k !== '__esModule' && k !== 'default').sort();
      console.log(JSON.stringify({
        imported: Object.keys(imported).filter((k) => k !== 'default').sort(),
        required: names(required),
        same: names(required).every((k) => imported[k] === required[k]),
        kind: typeof required.noThreadLeaks,
      }));
    `;
    // Where Node can require() an ES module, turn that off (Node 21 never could).
    const flag = process.allowedNodeEnvironmentFlags.has('--no-experimental-require-module') ? ['--no-experimental-require-module'] : [];
    const { stdout } = await run(process.execPath, [...flag, '--input-type=module', '-e', source], app);
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(result.imported).toEqual(result.required);
    expect(result.required).toEqual(expect.arrayContaining(['LeakTracker', 'ThreadLeakError', 'noThreadLeaks', 'threadStack', 'threads']));
    expect(result.same).toBe(true);
    expect(result.kind).toBe('function');
  }, 30_000);

  it('type-checks for an ES module and a CommonJS consumer (TypeScript, module nodenext)', async () => {
    const use = `
      const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 10 });
      const leaked: readonly LeakedThread[] = [];
      const stack: NativeStack = threadStack(threads()[0]!.id);
      export const all = [scope, leaked, stack, new LeakTracker(), ThreadLeakError] as const;
    `;
    const names = '{ LeakTracker, noThreadLeaks, ThreadLeakError, threads, threadStack, type LeakedThread, type NativeStack }';
    // The integrations' configure(), typed: a predicate on the leaked thread, and scope.
    const integrations = `
      import { configure as jest, type TestRunnerOptions } from 'threadleak/jest';
      import { configure as nodeTest } from 'threadleak/node-test';
      import 'threadleak/register';
      const options: TestRunnerOptions = { scope: 'file', nameFilter: (t) => t.origin.kind === 'native' && !t.origin.module?.includes('pool') };
      jest(options);
      nodeTest({ scope: 'test', action: 'warn' });
    `;
    writeFileSync(join(app, 'esm.mts'), `import ${names} from 'threadleak';\n${integrations}\n${use}`);
    writeFileSync(join(app, 'cjs.cts'), `import ${names} from 'threadleak';\n${integrations}\n${use}`);
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--target', 'es2022', '--types', 'node',
      '--typeRoots', join(root, 'node_modules', '@types'), 'esm.mts', 'cjs.cts'];
    await run(process.execPath, args, app);
    // And it does catch a mistake: an option that does not exist.
    writeFileSync(join(app, 'bad.mts'), `import { noThreadLeaks } from 'threadleak';\nnoThreadLeaks({ acton: 'raise' });\n`);
    await expect(run(process.execPath, [...args.slice(0, -2), 'bad.mts'], app)).rejects.toThrow(/acton/);
    writeFileSync(join(app, 'bad-scope.mts'), `import { configure } from 'threadleak/node-test';\nconfigure({ scope: 'suite' });\n`);
    await expect(run(process.execPath, [...args.slice(0, -2), 'bad-scope.mts'], app)).rejects.toThrow(/suite/);
  }, 60_000);

  for (const [how, source] of Object.entries(probes)) {
    it(`loads with ${how} in a fresh node process and lists its threads from the prebuild`, async () => {
      const args = how === 'import' ? ['--input-type=module', '-e', source] : ['-e', source];
      const { stdout } = await run(process.execPath, args, app);
      const probe = JSON.parse(stdout.trim().split('\n').at(-1)!) as Probe;
      expect(probe.version).toBe(process.version);

      const expected = join(probe.pkgDir, 'prebuilds', platformDir, 'threadleak.node');
      expect(probe.pkgDir).toBe(join(app, 'node_modules', 'threadleak'));
      expect(probe.resolved).toBe(expected);
      expect(probe.mapped).toEqual([expected]);

      const main = probe.threads.find((t) => t.id === probe.pid);
      expect(main).toMatchObject({ name: probe.comm, state: 'running', rawState: 'R' });
      expect(probe.threads.length).toBeGreaterThan(1);
      expect(new Set(probe.threads.map((t) => t.key)).size).toBe(probe.threads.length);
      // Node's own threads (V8 platform workers) were listed by the kernel just after the snapshot.
      const tasks = new Set(probe.tasks);
      expect(probe.threads.filter((t) => tasks.has(t.id)).length).toBeGreaterThan(1);
    }, 30_000);
  }
});
