// The settings threadleak/register reads from its environment, in a module of
// their own: `threadleak run` (src/cli-run.ts) sets them for the command it
// runs, and cannot import register.ts (loading it installs the register).
export const ACTION_ENV = 'THREADLEAK_ACTION';
export const EXIT_TIMEOUT_ENV = 'THREADLEAK_EXIT_TIMEOUT_MS';
/** Under `threadleak run`: the file to which each process appends `exit <pid> <leaked threads>`. */
export const RUN_STATUS_ENV = 'THREADLEAK_RUN_STATUS';
export const EXIT_ACTIONS = ['warn', 'raise'] as const;
export type ExitAction = (typeof EXIT_ACTIONS)[number];
export const DEFAULT_EXIT_TIMEOUT_MS = 5000;
export const MAX_EXIT_TIMEOUT_MS = 86_400_000;
