// bench/run.js — `npm run bench`: runs every bench/*.js (but this file), in
// name order, each in its own Node process so one bench's threads, heap and
// JIT state never leak into the next. `npm run bench -- snapshot stack` runs
// only the named ones. Exits non-zero if any bench failed.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const self = basename(fileURLToPath(import.meta.url));
const all = readdirSync(here)
  .filter((f) => f.endsWith('.js') && f !== self)
  .sort();
const wanted = process.argv.slice(2).map((a) => basename(a, '.js'));
const unknown = wanted.filter((w) => !all.includes(`${w}.js`));
if (unknown.length) {
  console.error(`bench/run: no bench named ${unknown.join(', ')} (have: ${all.map((f) => basename(f, '.js')).join(', ')})`);
  process.exit(2);
}
const benches = wanted.length ? all.filter((f) => wanted.includes(basename(f, '.js'))) : all;

const failed = [];
for (const file of benches) {
  console.log(`\n=== bench/${file} ===`);
  const started = Date.now();
  const r = spawnSync(process.execPath, [join(here, file)], { stdio: 'inherit' });
  const status = r.status ?? r.signal ?? r.error?.message;
  console.log(`=== bench/${file}: ${status === 0 ? 'done' : `FAILED (${status})`} in ${((Date.now() - started) / 1000).toFixed(1)} s ===`);
  if (status !== 0) failed.push(file);
}
if (failed.length) {
  console.error(`\nbench/run: failed: ${failed.join(', ')}`);
  process.exit(1);
}
