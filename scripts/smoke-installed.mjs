// Smoke check of threadleak as a user gets it: `npm install threadleak` (or the
// packed tarball) in a project, then, from that project's directory,
//
//   cp <repo>/scripts/smoke-installed.mjs . && node smoke-installed.mjs
//
// The script must sit in the project: `require` and `import` resolve
// 'threadleak' from the script's own location. It checks that
//   - the install compiled nothing (no build/ in the package: the prebuild was used),
//   - require('threadleak') and import('threadleak') both work and share one
//     module instance,
//   - threads() lists the threads of this process, the calling thread among them,
//   - the addon was loaded from prebuilds/<platform>-<arch>/ (the musl build on musl),
// and exits 1 with the reasons when anything is wrong. Plain JavaScript, no
// dependencies: release.yml runs it on every OS after installing the tarball.
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const target = `${process.platform}-${process.arch}`;
const problems = [];

function problem(message) {
  problems.push(message);
}

function finish() {
  if (problems.length === 0) {
    console.log('smoke-installed: OK');
    process.exit(0);
  }
  console.error(`smoke-installed: FAILED (${target}, Node ${process.version})`);
  for (const message of problems) console.error(`  - ${message}`);
  process.exit(1);
}

let packageDir;
try {
  packageDir = dirname(require.resolve('threadleak/package.json'));
} catch {
  problem(`threadleak is not installed for ${here}: install it in a project, copy this script into that project and run it there`);
  finish();
}
const { version } = require('threadleak/package.json');
console.log(`threadleak ${version} in ${packageDir}`);
console.log(`Node ${process.version} on ${target}`);

// 1. Nothing was compiled at install: node-gyp-build used the prebuild.
const prebuildDir = join(packageDir, 'prebuilds', target);
if (!existsSync(prebuildDir)) {
  problem(`the package has no prebuilds/${target}/`);
} else {
  console.log(`prebuilds/${target}/: ${readdirSync(prebuildDir).join(', ')}`);
}
if (existsSync(join(packageDir, 'build'))) {
  problem(`the package has a build/ directory: the install compiled the addon instead of using prebuilds/${target}/`);
}

// 2. Both entry points, one module instance.
let cjs;
let esm;
try {
  cjs = require('threadleak');
} catch (error) {
  problem(`require('threadleak') threw: ${error.stack}`);
}
try {
  esm = await import('threadleak');
} catch (error) {
  problem(`import('threadleak') threw: ${error.stack}`);
}
for (const [how, api] of [
  ["require('threadleak')", cjs],
  ["import('threadleak')", esm],
]) {
  if (api === undefined) continue;
  for (const name of ['threads', 'threadStack', 'noThreadLeaks', 'LeakTracker']) {
    if (typeof api[name] !== 'function') problem(`${how}.${name} is ${typeof api[name]}, not a function`);
  }
}
if (cjs && esm && cjs.threads !== esm.threads) {
  problem("import('threadleak') and require('threadleak') gave two module instances");
}

// 3. threads() lists this process's threads, the calling one among them.
if (cjs && typeof cjs.threads === 'function') {
  let list;
  try {
    list = cjs.threads();
  } catch (error) {
    problem(`threads() threw: ${error.code ?? ''} ${error.stack}`);
  }
  if (list !== undefined) {
    if (!Array.isArray(list) || list.length === 0) {
      problem(`threads() returned ${JSON.stringify(list)}, not a list of threads`);
    } else {
      console.log(`threads(): ${list.length} threads: ${list.map((t) => `${t.id} "${t.name}" ${t.state}`).join('; ')}`);
      const malformed = list.filter((t) => !Number.isInteger(t.id) || typeof t.key !== 'string' || typeof t.name !== 'string' || typeof t.state !== 'string');
      if (malformed.length > 0) problem(`threads() returned malformed entries: ${JSON.stringify(malformed)}`);
      // The calling thread's OS id, from the addon the package loaded (an
      // internal module: the public API has no "current thread" function).
      let self;
      try {
        self = require(join(packageDir, 'dist', 'binding.js')).currentThreadId();
      } catch (error) {
        problem(`the addon's currentThreadId() threw: ${error.stack}`);
      }
      const mine = list.find((t) => t.id === self);
      if (mine === undefined) {
        problem(`threads() does not list the calling thread (id ${self})`);
      } else {
        console.log(`calling thread: ${JSON.stringify(mine)}`);
      }
      // Linux: the main thread's id is the process id (README, ThreadInfo.id).
      if (process.platform === 'linux' && self !== process.pid) {
        problem(`the calling (main) thread's id is ${self}, not process.pid ${process.pid}`);
      }
    }
  }
}

// 4. The addon came from this platform's prebuild (the musl one on musl).
const loaded = Object.keys(require.cache).filter((file) => file.endsWith('.node'));
console.log(`native modules loaded: ${loaded.join(', ') || 'none'}`);
const musl = process.platform === 'linux' && !process.report.getReport().header.glibcVersionRuntime;
const expected = join(prebuildDir, musl ? 'threadleak.musl.node' : 'threadleak.node');
const same = (a, b) => (process.platform === 'win32' ? a.toLowerCase() === b.toLowerCase() : a === b);
if (!loaded.some((file) => same(file, expected))) {
  problem(`the addon was not loaded from ${expected}${loaded.length > 0 ? ` but from ${loaded.join(', ')}` : ''}`);
}
if (loaded.some((file) => file.includes(`${sep}build${sep}`))) problem('an addon was loaded from a build/ directory');

finish();
