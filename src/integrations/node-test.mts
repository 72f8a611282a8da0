// The ES module entry of threadleak/node-test (`node --test --import threadleak/node-test`):
// it runs the CommonJS one, so that the hooks are added once however it is loaded.
export { configure } from './node-test.js';
export type { TestRunnerOptions, TestScopeKind } from './node-test.js';
