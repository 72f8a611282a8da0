// The one place that turns data into text: every message threadleak prints or
// throws is formatted here, so wording and layout stay consistent.
import { inspect } from 'node:util';

/** A short, unambiguous rendering of a user-supplied value for messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  return inspect(value, { depth: 1, breakLength: Infinity, maxStringLength: 60, maxArrayLength: 5 });
}

export function formatInvalidOption(where: string, option: string, value: unknown, expected: string): string {
  return `${where}: ${option} must be ${expected}, got ${describeValue(value)}`;
}

export function formatOsError(
  what: string,
  detail: { code: string; syscall: string; message: string },
  pid?: number,
): string {
  const target = pid === undefined ? 'this process' : `pid ${pid}`;
  const reason =
    detail.code === 'ESRCH'
      ? 'no such process'
      : detail.code === 'EACCES' || detail.code === 'EPERM'
        ? 'permission denied'
        : detail.code;
  return `${what}: cannot read the threads of ${target}: ${reason} (${detail.code}: ${detail.message})`;
}

export function formatUnsupportedPlatform(platform: string): string {
  return `threadleak is not yet supported on ${platform}: its native thread backend exists for linux only`;
}
