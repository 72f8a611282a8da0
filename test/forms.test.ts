// The forms that need a compiler (TC39 decorators, `using`) and the ones that
// need a fresh process (the first use of the libuv threadpool).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
// The compiled fixture imports the built package, so this file does too.
import { ResourceLeakError, ThreadLeakError } from 'threadleak';
import { fixtureThreads, runNode } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = fixtureThreads();
const leakOne = () => void fixture.start({ count: 1, name: 'tl-forms' });
const noop = () => {};

describe('tsc-compiled decorators and using declarations', () => {
  let compiled: typeof import('./fixtures/decorated/decorated.js');
  beforeAll(async () => {
    execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', 'test/fixtures/decorated'], {
      cwd: root,
      stdio: 'pipe',
    });
    compiled = await import(`${root}test/fixtures/decorated/build/decorated.js`);
  });

  it('@noThreadLeaks(options) checks each call of a method', async () => {
    const service = new compiled.Service(leakOne);
    expect(() => service.leaky(2)).toThrow(ThreadLeakError);
    const quiet = new compiled.Service(noop);
    expect(quiet.leaky(21)).toBe(42);
    await expect(quiet.clean(1)).resolves.toBe(2);
    expect(quiet.calls).toBe(2);
  });

  it('bare @noThreadLeaks keeps this, arguments and result', () => {
    const service = new compiled.Service(noop);
    expect(service.bare('a', 'b')).toBe('ab0');
    expect(compiled.Service.prototype.bare.name).toBe('bare');
  });

  it('@noResourceLeaks(tracker, options) checks each call of a method', () => {
    const repository = new compiled.Repository();
    expect(repository.open('released', true)).toBe('released');
    expect(() => repository.open('kept', false)).toThrow(ResourceLeakError);
    expect(compiled.tracked.live().map((entry) => entry.name)).toEqual(['kept']);
  });

  it('using checks synchronously at the end of the block', () => {
    expect(compiled.syncUsing(noop)).toBe('body done');
    expect(() => compiled.syncUsing(leakOne)).toThrow(ThreadLeakError);
  });

  it('await using checks at the end of the block', async () => {
    await expect(compiled.asyncUsing(noop)).resolves.toBe('body done');
    await expect(compiled.asyncUsing(leakOne)).rejects.toBeInstanceOf(ThreadLeakError);
  });

  it('await using surfaces both the body error and the leak', async () => {
    const body = new Error('body');
    const caught: any = await compiled.asyncUsingBodyError(leakOne, body).catch((e: unknown) => e);
    expect(caught.name).toBe('SuppressedError');
    expect(caught.error).toBeInstanceOf(ThreadLeakError);
    expect(caught.suppressed).toBe(body);
  });
});

// Each case runs in a fresh process: the libuv pool is created by the first
// async fs/zlib/crypto/dns call, which must not be reported as a leak.
const FIRST_USES: Record<string, string> = {
  fs: "await require('node:fs/promises').readFile('package.json')",
  zlib: "await require('node:util').promisify(require('node:zlib').gzip)('x')",
  crypto: "await require('node:util').promisify(require('node:crypto').pbkdf2)('p', 's', 1, 8, 'sha256')",
  dns: "await require('node:dns/promises').lookup('localhost')",
};

function runFresh(body: string, env: Record<string, string> = {}, type: 'commonjs' | 'module' = 'commonjs') {
  const prelude =
    type === 'module'
      ? `import { createRequire } from 'node:module'; const require = createRequire(${JSON.stringify(`${root}package.json`)});`
      : '';
  const script = `${prelude}
    const { noThreadLeaks } = require(${JSON.stringify(`${root}dist/index.js`)});
    // How many threads there were, for the failure message only (Linux: /proc; elsewhere not counted).
    const taskCount = () => process.platform === 'linux' ? require('node:fs').readdirSync('/proc/self/task').length : null;
    const before = taskCount();
    (async () => {
      const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0 });
      ${body};
      const inside = taskCount();
      await scope.close();
      console.log(JSON.stringify({ clean: true, before, inside }));
    })().catch((error) => {
      console.log(JSON.stringify({ clean: false, code: error.code, message: error.message }));
    });`;
  const result = runNode(['--input-type=' + type, '-e', script], {
    cwd: root,
    env: { ...process.env, ...env },
  });
  expect(result.stderr).not.toMatch(/Error/);
  return JSON.parse(result.stdout.trim().split('\n').pop()!);
}

describe('the first threadpool use inside a scope (fresh process)', () => {
  for (const [what, body] of Object.entries(FIRST_USES)) {
    it(`is clean for ${what}`, () => {
      expect(runFresh(body)).toMatchObject({ clean: true });
    });
  }

  it('is clean from an ES module entry point', () => {
    expect(runFresh(FIRST_USES.fs!, {}, 'module')).toMatchObject({ clean: true });
  });

  for (const size of ['1', '8']) {
    it(`is clean with UV_THREADPOOL_SIZE=${size}`, () => {
      expect(runFresh(FIRST_USES.crypto!, { UV_THREADPOOL_SIZE: size })).toMatchObject({ clean: true });
    });
  }

  it('reports the pool threads when THREADLEAK_NO_PREWARM=1 turns pre-warming off', () => {
    const result = runFresh(FIRST_USES.fs!, { THREADLEAK_NO_PREWARM: '1', UV_THREADPOOL_SIZE: '3' });
    expect(result).toMatchObject({ clean: false, code: 'ERR_THREAD_LEAK' });
    expect(result.message).toMatch(/^3 threads leaked/);
  });
});
