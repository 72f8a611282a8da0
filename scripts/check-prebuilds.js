// `npm publish` runs this first (prepublishOnly): every prebuild the package promises must be in
// prebuilds/ and pass the same checks as when it was built (scripts/check-binary.js), or nothing is
// published. A package with only this machine's binary would install on every other platform
// without a prebuild and try to compile there.
import { existsSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPrebuild } from './check-binary.js';
import { TARGETS, targetPath } from './prebuild.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const problems = [];
for (const [name, target] of Object.entries(TARGETS)) {
  const path = targetPath(name);
  const shown = relative(root, path);
  if (!existsSync(path)) {
    problems.push(`${shown} is missing (target ${name})`);
    continue;
  }
  try {
    checkPrebuild(path, { platform: target.platform, arch: target.arch, libc: target.libc, name: shown });
  } catch (error) {
    problems.push(error.message);
  }
}
if (problems.length) {
  console.error(`threadleak: not publishing: ${problems.length} prebuild problem${problems.length === 1 ? '' : 's'}:`);
  for (const problem of problems) console.error(`  - ${problem}`);
  console.error('Run `npm run prebuild` on a Linux x64 machine (it fetches zig; mingw-w64 from apt for win32-x64) first.');
  process.exit(1);
}
console.log(`threadleak: all ${Object.keys(TARGETS).length} prebuilds present and checked`);
