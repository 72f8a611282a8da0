export { threads, threadStack } from './snapshot.js';
export type { NativeFrame, NativeStack, ThreadInfo, ThreadState, ThreadsOptions, ThreadStackOptions } from './snapshot.js';
export { DEFAULT_THREAD_NAME_FILTER, noThreadLeaks } from './threads.js';
export type { LeakedThread, ThreadLeakOptions, ThreadLeakScope, ThreadOrigin } from './threads.js';
export type { LeakAction, LeakLogger } from './scope.js';
export { LeakError, ThreadLeakError } from './errors.js';
export type { ThreadleakSystemError } from './errors.js';
export { LeakTracker, noResourceLeaks } from './tracker.js';
export type {
  LeakInfo,
  LeakReport,
  LeakTrackerOptions,
  ReportAtExitOptions,
  ResourceLeakOptions,
  ResourceLeakScope,
  TrackOptions,
} from './tracker.js';
export { ResourceLeakError } from './errors.js';
export { monitorThreads } from './monitor.js';
export type {
  SampledThread,
  ThreadAlert,
  ThreadAlertKind,
  ThreadHeadroom,
  ThreadMonitor,
  ThreadMonitorOptions,
  ThreadSample,
} from './types.js';
export { noEventLoopBlocking } from './blocking.js';
export type { EventLoopBlock, EventLoopBlockingOptions, EventLoopBlockingScope, EventLoopBlockSample } from './blocking.js';
export { EventLoopBlockError } from './errors.js';
