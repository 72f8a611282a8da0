// Rebuilds the addon after a change to native/ without recompiling what did
// not change: `node-gyp build` when build/ is configured, else a full rebuild.
// `npm test` runs it so the suites never test a stale binary.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
const configured = existsSync(new URL('../build/config.gypi', import.meta.url));
const result = spawnSync(process.execPath, [nodeGyp, configured ? 'build' : 'rebuild'], {
  stdio: 'inherit',
  cwd: new URL('..', import.meta.url),
});
process.exit(result.status ?? 1);
