// The one kind of error a user of the `threadleak` command can cause: a
// mistake in the command line, said in one line on stderr with exit code 2
// (src/cli.ts prints it; the commands throw it).
export const USAGE_EXIT_CODE = 2;

export class UsageError extends Error {}
