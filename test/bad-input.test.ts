// Bad input is a TypeError (code ERR_INVALID_ARG_VALUE) that names the value,
// or an error with a stable code that says whose fault it is; never a silent
// no-op, never half-done (issue 8, "Bad input").
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LeakTracker, noResourceLeaks, noThreadLeaks, threads, threadStack } from '../src/index.js';
import { closeCheck, configureTestRunner, openCheck } from '../src/integrations/harness.js';
import { fixtureThreads, mainThreadId, runNode } from './helpers.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = fixtureThreads();

const invalid = (pattern: RegExp) => expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(pattern) });

describe('threads() and threadStack() options', () => {
  it('an unknown option of threads() is a TypeError naming it', () => {
    expect(() => threads({ pdi: process.pid } as never)).toThrow(invalid(/^threads\(\): .*unknown option 'pdi'/));
    expect(threads({ pid: process.pid }).length).toBeGreaterThan(0);
  });

  it('an unknown option of threadStack() is a TypeError naming it', () => {
    expect(() => threadStack(process.pid, { timeout: 5 } as never)).toThrow(invalid(/^threadStack\(\): .*unknown option 'timeout'/));
    expect(() => threadStack(process.pid, null as never)).toThrow(invalid(/options must be an object/));
  });

  it("threadStack() knows the key option: a string, else a TypeError", () => {
    const self = threads().find((t) => t.id === mainThreadId())!;
    expect(threadStack(self.id, { key: self.key, timeoutMs: 0 }).threadId).toBe(self.id);
    expect(() => threadStack(self.id, { key: 42 } as never)).toThrow(invalid(/options\.key must be a string.*got 42/));
  });
});

describe('scope options', () => {
  it('gracePeriodMs has an upper bound of 60000, and the message says so', () => {
    expect(noThreadLeaks({ gracePeriodMs: 60_000 })).toBeTypeOf('function');
    expect(() => noThreadLeaks({ gracePeriodMs: 60_001 })).toThrow(invalid(/gracePeriodMs must be a number from 0 to 60000, got 60001/));
    expect(() => noThreadLeaks({ gracePeriodMs: Infinity })).toThrow(invalid(/from 0 to 60000, got Infinity/));
    const tracker = new LeakTracker();
    expect(() => noResourceLeaks(tracker, { gracePeriodMs: 1e9 })).toThrow(invalid(/from 0 to 60000/));
  });

  it('an async nameFilter predicate is a TypeError at the call', () => {
    expect(() => noThreadLeaks({ nameFilter: async () => true })).toThrow(invalid(/nameFilter must be a predicate that returns a boolean, not a Promise/));
    expect(() => noResourceLeaks(new LeakTracker(), { kindFilter: async () => true })).toThrow(invalid(/kindFilter must be a predicate/));
  });

  it('a nameFilter predicate that returns a Promise is a TypeError when it is called', async () => {
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0, nameFilter: () => Promise.resolve(false) as never });
    fixture.start({ name: 'tl-promise' });
    await expect(scope.close()).rejects.toEqual(invalid(/nameFilter must be a predicate .*; it returned a Promise/));
  });

  it('a predicate that throws: the error says the predicate threw (not a leak) and keeps its cause', async () => {
    const cause = new RangeError('bad lookup');
    const scope = noThreadLeaks({ action: 'raise', gracePeriodMs: 0, nameFilter: () => { throw cause; } });
    fixture.start({ name: 'tl-throws' });
    const error = await scope.close().catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'ERR_THREADLEAK_FILTER_THREW',
      cause,
      message: 'noThreadLeaks(options): the nameFilter predicate threw, so the scope could not tell what leaked (not a leak report): RangeError: bad lookup',
    });
    const tracker = new LeakTracker();
    const resources = noResourceLeaks(tracker, { kindFilter: () => { throw cause; } });
    tracker.track({});
    expect(() => resources.closeSync()).toThrow(expect.objectContaining({ code: 'ERR_THREADLEAK_FILTER_THREW', cause }));
  });

  it('a scope factory used as a class (or field) decorator is a TypeError when it is applied', () => {
    const context = (kind: string) => ({ kind, name: 'Service', addInitializer() {} }) as never;
    class Service {}
    expect(() => noThreadLeaks(Service as never, context('class'))).toThrow(invalid(/^@noThreadLeaks: context\.kind must be 'method' .*got 'class'/));
    expect(() => noThreadLeaks(() => {}, context('field'))).toThrow(invalid(/got 'field'/));
    expect(() => noThreadLeaks({ action: 'raise' })(Service, context('class'))).toThrow(invalid(/context\.kind must be 'method'/));
    // A method is still fine.
    expect(noThreadLeaks(() => 1, context('method'))()).toBe(1);
  });
});

describe("the test-runner integrations' configure()", () => {
  const configure = (options: unknown) => configureTestRunner('threadleak/vitest', options);

  it('validates like noThreadLeaks, plus scope, naming the option and the runner', () => {
    expect(() => configure({ scope: 'suite' })).toThrow(invalid(/^threadleak\/vitest: configure\(options\): scope must be 'test' or 'file', got 'suite'/));
    expect(() => configure({ action: 'explode' })).toThrow(invalid(/action must be one of 'warn', 'log', 'cancel', 'raise', got 'explode'/));
    expect(() => configure({ scopes: 'file' })).toThrow(invalid(/unknown option 'scopes'/));
    expect(() => configure({ nameFilter: 42 })).toThrow(invalid(/nameFilter must be a string, a RegExp, a function or null, got 42/));
    expect(() => configure('file')).toThrow(invalid(/options must be an object, got 'file'/));
  });

  it('threadleak/jest outside Jest says where it belongs', () => {
    const child = runNode(['-e', `require(${JSON.stringify(`${root}dist/integrations/jest.js`)})`]);
    expect(child.status).toBe(1);
    expect(child.stderr).toContain('threadleak/jest must be loaded by Jest, from setupFilesAfterEnv');
  });

  it('a bad call changes nothing: the options set before stay', async () => {
    configure({ scope: 'file', action: 'log', logger: { warn() {} } });
    expect(() => configure({ scope: 'file', gracePeriodMs: -1 })).toThrow(invalid(/gracePeriodMs/));
    expect(openCheck('threadleak/vitest', 'test')).toBeUndefined();
    const check = openCheck('threadleak/vitest', 'file');
    expect(check?.kind).toBe('file');
    fixture.start({ count: 1 }); // a leak, logged (action 'log'), not raised
    expect(await closeCheck(check)).toBeUndefined();
    configure(undefined); // back to the defaults: scope 'test', action 'raise'
    const strict = openCheck('threadleak/vitest', 'test');
    fixture.start({ count: 1 });
    expect(await closeCheck(strict)).toMatchObject({ name: 'ThreadLeakError', code: 'ERR_THREAD_LEAK' });
  });
});

describe('an unsupported platform', () => {
  it('imports, runs LeakTracker and Workers, and throws ERR_THREADLEAK_UNSUPPORTED_PLATFORM from the thread functions', () => {
    const source = `
      Object.defineProperty(process, 'platform', { value: 'freebsd' });
      const { LeakTracker, noThreadLeaks, threads, threadStack } = require('threadleak');
      const { Worker } = require('node:worker_threads');
      const tracker = new LeakTracker();
      tracker.track({});
      const worker = new Worker('1', { eval: true });
      const errors = [() => threads(), () => threadStack(process.pid), () => noThreadLeaks()].map((f) => {
        try { f(); return null; } catch (error) { return { code: error.code, message: error.message }; }
      });
      worker.terminate().then(() => console.log(JSON.stringify({ live: tracker.live().length, errors })));
    `;
    const result = runNode(['-e', source], { cwd: root, timeout: 30_000 });
    expect(result.stderr).toBe('');
    const { live, errors } = JSON.parse(result.stdout);
    expect(live).toBe(1);
    expect(errors).toEqual(Array(3).fill({
      code: 'ERR_THREADLEAK_UNSUPPORTED_PLATFORM',
      message: 'threadleak is not yet supported on freebsd: its native thread backends exist for linux, darwin (macOS) and win32 only',
    }));
  });
});
