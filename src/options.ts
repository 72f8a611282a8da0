// Checks shared by every function that takes an options object: the object
// itself and the names in it. A leaf module (no other imports of ours but the
// messages), so the snapshot layer and the scopes use the same rules.
import { invalidOption } from './errors.js';
import { describeValue } from './report.js';

/** The options object as given: undefined is `{}`; anything else that is not an object is a TypeError. */
export function checkOptionsObject(where: string, options: unknown): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object') throw invalidOption(where, 'options', options, 'an object');
  return options as Record<string, unknown>;
}

/** Rejects option names the caller did not define, so a typo is never a silent no-op. */
export function rejectUnknownOptions(where: string, options: Record<string, unknown>, known: readonly string[]): void {
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw invalidOption(where, 'options', options, `an object with only ${known.join(', ')} (unknown option ${describeValue(name)})`);
    }
  }
}
