// The ES module entry of threadleak/jest, for a setup file that is an ES module:
// it runs the CommonJS one, so that the events are handled once however it is loaded.
export { configure } from './jest.js';
export type { TestRunnerOptions, TestScopeKind } from './jest.js';
