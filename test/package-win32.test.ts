// The package as a Windows user gets it, on Windows (or wine): the tarball made on Linux by `npm pack`
// after `npm run prebuild -- --only linux-x64,win32-x64`, installed for win32 into an empty project.
// npm's install script (scripts/install.js) must take the prebuild with no compiler on PATH, build
// nothing, and a fresh node must load that prebuild with import and require.
//
// Packing and installing happen on Linux (scripts/test-wine.sh does both) and the project comes in
// THREADLEAK_PACKED_APP. Without it these tests fail, they do not skip: on Windows the tarball cannot
// be made (the prebuilds are cross-built on Linux). The Linux twin is test/package.test.ts.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const appFromEnv = process.env.THREADLEAK_PACKED_APP;

/** The environment of a child: nothing of the vitest run we are inside, and exactly `path` as PATH. */
function childEnv(path: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    // Windows names are case-insensitive: Path and PATH are one variable.
    if (/^(path|node_options|threadleak|vitest.*|npm_.*)$/i.test(key)) continue;
    env[key] = value;
  }
  env.PATH = path;
  return env;
}

function run(command: string, args: string[], cwd: string, path: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((done, reject) => {
    execFile(command, args, { cwd, env: childEnv(path), maxBuffer: 64 << 20, windowsHide: true }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')} (in ${cwd}) failed: ${error.message}\n${stdout}\n${stderr}`));
      else done({ stdout, stderr });
    });
  });
}

const sameFile = (a: string, b: string) => resolve(a).toLowerCase() === resolve(b).toLowerCase();

// What the fresh process prints: the addon node-gyp-build resolves, the .node files really loaded
// (the diagnostic report lists the process's modules), and its threads as the package lists them.
const probeBody = `
  const path = require('node:path');
  const pkgDir = path.dirname(require.resolve('threadleak/package.json'));
  let threads = null, error = null;
  try { threads = threadleak.threads(); } catch (e) { error = { code: e.code, message: e.message }; }
  const loaded = process.report.getReport().sharedObjects.filter((file) => /\\.node$/i.test(file));
  console.log(JSON.stringify({
    pid: process.pid,
    version: process.version,
    pkgDir,
    resolved: require('node-gyp-build').resolve(pkgDir),
    loaded,
    exported: typeof threadleak.threads,
    threads,
    error,
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
  pkgDir: string;
  resolved: string;
  loaded: string[];
  exported: string;
  threads: { id: number; key: string; name: string }[] | null;
  error: { code: string; message: string } | null;
}

describe.runIf(process.platform === 'win32')('the packed package on Windows', () => {
  let app: string;
  let pkgDir: string;
  let tmp: string;
  // No compiler, no node-gyp, no Visual Studio: Windows' own directory for cmd.exe, and the stand-in
  // for what npm puts on PATH during an install (node_modules/.bin, here only node-gyp-build-test).
  let path: string;

  beforeAll(() => {
    if (!appFromEnv) return;
    app = resolve(appFromEnv);
    pkgDir = join(app, 'node_modules', 'threadleak');
    tmp = mkdtempSync(join(tmpdir(), 'threadleak-win32-package-'));
    const bin = join(tmp, 'bin');
    mkdirSync(bin);
    // What npm writes on Windows as node_modules/.bin/node-gyp-build-test.cmd, plus a marker that it ran.
    const buildTest = join(app, 'node_modules', 'node-gyp-build', 'build-test.js');
    writeFileSync(
      join(bin, 'node-gyp-build-test.cmd'),
      `@echo %CD%> "${join(tmp, 'asked')}"\r\n@"${process.execPath}" "${buildTest}" %*\r\n`,
    );
    const systemRoot = process.env.SystemRoot ?? process.env.SYSTEMROOT ?? 'C:\\windows';
    path = [bin, join(systemRoot, 'system32'), systemRoot].join(';');
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('has the project with the packed package (THREADLEAK_PACKED_APP, made by scripts/test-wine.sh)', () => {
    expect(appFromEnv, 'THREADLEAK_PACKED_APP: run this file through scripts/test-wine.sh').toBeTruthy();
    expect(existsSync(join(pkgDir, 'package.json')), `${pkgDir}/package.json`).toBe(true);
  });

  it('carries both prebuilds, the Windows one a 64-bit PE file, and no build/', () => {
    expect(appFromEnv).toBeTruthy();
    const win32 = readFileSync(join(pkgDir, 'prebuilds', 'win32-x64', 'threadleak.node'));
    expect(win32.subarray(0, 2).toString('latin1')).toBe('MZ');
    const pe = win32.readUInt32LE(0x3c);
    expect(win32.subarray(pe, pe + 4).toString('latin1')).toBe('PE\0\0');
    expect(win32.readUInt16LE(pe + 4)).toBe(0x8664); // IMAGE_FILE_MACHINE_AMD64
    const linux = readFileSync(join(pkgDir, 'prebuilds', 'linux-x64', 'threadleak.node'));
    expect(linux.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(existsSync(join(pkgDir, 'build'))).toBe(false);
    // The node-gyp-build the package depends on was installed beside it.
    expect(existsSync(join(app, 'node_modules', 'node-gyp-build', 'package.json'))).toBe(true);
  });

  it('install script: takes the prebuild with no compiler on PATH and builds nothing', async () => {
    expect(appFromEnv).toBeTruthy();
    const before = createHash('sha256').update(readFileSync(join(pkgDir, 'prebuilds', 'win32-x64', 'threadleak.node'))).digest('hex');
    await run(process.execPath, ['scripts/install.js'], pkgDir, path);
    // node-gyp-build asked node-gyp-build-test, in the package, whether the prebuild loads: it did,
    // so nothing was compiled (without a compiler, a build would have failed the script).
    expect(readFileSync(join(tmp, 'asked'), 'utf8').trim().toLowerCase()).toBe(pkgDir.toLowerCase());
    expect(existsSync(join(pkgDir, 'build'))).toBe(false);
    const after = createHash('sha256').update(readFileSync(join(pkgDir, 'prebuilds', 'win32-x64', 'threadleak.node'))).digest('hex');
    expect(after).toBe(before);
  }, 120_000);

  for (const [how, source] of Object.entries(probes)) {
    describe(`a fresh node that loads it with ${how}`, () => {
      let probe: Probe;
      beforeAll(async () => {
        if (!appFromEnv) return;
        // The probe runs from the project, as a user's code would: its node_modules resolve 'threadleak'.
        const inApp = join(app, how === 'import' ? 'probe.mjs' : 'probe.cjs');
        writeFileSync(inApp, source);
        const { stdout } = await run(process.execPath, [inApp], app, path);
        probe = JSON.parse(stdout.trim().split('\n').at(-1)!) as Probe;
      }, 120_000);

      it('loads the win32-x64 prebuild and nothing else', () => {
        expect(appFromEnv).toBeTruthy();
        expect(probe.version).toBe(process.version);
        expect(sameFile(probe.pkgDir, pkgDir)).toBe(true);
        const expected = join(pkgDir, 'prebuilds', 'win32-x64', 'threadleak.node');
        expect(sameFile(probe.resolved, expected), `resolved ${probe.resolved}`).toBe(true);
        expect(probe.loaded.length, JSON.stringify(probe.loaded)).toBe(1);
        expect(sameFile(probe.loaded[0]!, expected), `loaded ${probe.loaded[0]}`).toBe(true);
        expect(probe.exported).toBe('function');
        expect(existsSync(join(pkgDir, 'build'))).toBe(false);
      });

      it('lists its threads', () => {
        expect(appFromEnv).toBeTruthy();
        expect(probe.error).toBeNull();
        expect(probe.threads!.length).toBeGreaterThan(1);
        expect(new Set(probe.threads!.map((t) => t.key)).size).toBe(probe.threads!.length);
        // The main thread's id is not the process id on Windows: the list holds threads of this process,
        // each with a distinct id.
        expect(new Set(probe.threads!.map((t) => t.id)).size).toBe(probe.threads!.length);
      });
    });
  }
});
