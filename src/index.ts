export { threads } from './snapshot.js';
export type { ThreadInfo, ThreadState, ThreadsOptions } from './snapshot.js';
export { LeakError } from './errors.js';
export type { ThreadleakSystemError } from './errors.js';
