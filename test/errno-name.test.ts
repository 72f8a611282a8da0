// An OS error keeps its real name in `code`, also for an errno that threads()
// does not expect: ENOTDIR here, made real by a private mount namespace in
// which /proc/<pid> of a live process is a tmpfs whose `task` is a file.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CHILD_PRELUDE } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

// Checked by trying it: `unshare -m` and mount need CAP_SYS_ADMIN.
const mountRefused = (() => {
  const probe = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /mnt'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.status === 0) return '';
  return `unshare -m with a tmpfs mount is not permitted here (${(probe.error?.message ?? probe.stderr).trim() || `status ${probe.status}`})`;
})();

// A mount namespace over /proc: Linux's.
describe.runIf(process.platform === 'linux')('an errno outside the usual ones', () => {
  it.skipIf(mountRefused !== '')(
    `keeps its real name as the error's code (ENOTDIR, not EIO)${mountRefused ? ` (skipped: ${mountRefused})` : ''}`,
    () => {
      const script = `${CHILD_PRELUDE}
        const pid = Number(process.argv[1]);
        const { threads } = require(${JSON.stringify(`${ROOT}dist/index.js`)});
        let thrown;
        try { threads({ pid }); } catch (e) { thrown = { code: e.code, errno: e.errno, syscall: e.syscall }; }
        console.log(JSON.stringify({ native: addon.listThreads(pid).error, thrown }));
      `;
      const child = spawnSync(
        'unshare',
        [
          '-m',
          'bash',
          '-c',
          `sleep 60 & P=$!
           mount -t tmpfs none /proc/$P && printf 'Name:\\tsleep\\nTgid:\\t%s\\n' $P > /proc/$P/status && : > /proc/$P/task &&
             "$0" -e "$1" $P; s=$?
           kill $P; exit $s`,
          process.execPath,
          script,
        ],
        { encoding: 'utf8', timeout: 60_000 },
      );
      expect({ stderr: child.stderr, status: child.status }).toEqual({ stderr: '', status: 0 });
      const { native, thrown } = JSON.parse(child.stdout.trim().split('\n').pop()!);
      expect(native).toMatchObject({ code: 'ENOTDIR', errno: 20, syscall: 'open' });
      expect(native.message).toMatch(/^open \/proc\/\d+\/task: Not a directory$/);
      expect(thrown).toEqual({ code: 'ENOTDIR', errno: 20, syscall: 'open' });
    },
  );
});
