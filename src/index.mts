// The ES module entry. It re-exports the CommonJS build, so that
// `import 'threadleak'` and `require('threadleak')` in one process share one
// module instance: one baseline, one Worker map, the same error classes.
// (`export *` would also re-export the build's `__esModule` marker.)
export {
  DEFAULT_THREAD_NAME_FILTER,
  EventLoopBlockError,
  LeakError,
  LeakTracker,
  monitorThreads,
  noEventLoopBlocking,
  noResourceLeaks,
  noThreadLeaks,
  ResourceLeakError,
  ThreadLeakError,
  threads,
  threadStack,
} from './index.js';
export type * from './index.js';
