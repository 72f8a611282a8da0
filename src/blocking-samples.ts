// How the looks at a blocked thread are told apart: blocking.ts merges
// consecutive equal looks into one sample, and report.ts lists a block's
// distinct looks, the most seen first, like a profile of the block.
import type { EventLoopBlockSample } from './types.js';

/**
 * Whether a sample's native stack says what the thread was doing: it was in a
 * native call (its JavaScript stack came late, or not at all). A JavaScript
 * stack read on time was taken while JavaScript ran; the native frames of that
 * moment are the engine's (a GC step, a runtime call) and vary from look to look.
 */
export function nativeStackTells(sample: EventLoopBlockSample): boolean {
  return sample.stack === '' || sample.stackDelayMs !== undefined;
}

/**
 * Looks are the same when their JavaScript stacks are equal and, when the
 * native stack tells, so is the native call the JavaScript made: the outermost
 * named frame of the innermost run of native frames (`Builtin_JsonParse`,
 * `node::fs::ReadFileUtf8`), which stays the same while what runs under it (a
 * GC, an allocation) changes.
 */
export function sampleKey(sample: EventLoopBlockSample): string {
  let call = '';
  for (const frame of nativeStackTells(sample) ? (sample.nativeStack?.frames ?? []) : []) {
    if (frame.symbol === undefined || frame.symbol.startsWith('Builtins_')) {
      if (call !== '') break;
      continue;
    }
    call = frame.symbol;
  }
  return `${sample.stack}\0${call}`;
}

/** A block's looks that saw the same thing: the first of them, and how many there were. */
export interface SampleGroup {
  first: EventLoopBlockSample;
  looks: number;
}

/** The distinct looks of a block, the most seen first (on a tie, the earliest first). */
export function groupSamples(samples: readonly EventLoopBlockSample[]): SampleGroup[] {
  const groups = new Map<string, SampleGroup>();
  for (const sample of samples) {
    const key = sampleKey(sample);
    const group = groups.get(key);
    if (group) group.looks += sample.count;
    else groups.set(key, { first: sample, looks: sample.count });
  }
  // Array.prototype.sort is stable: equal counts keep the order they were seen in.
  return [...groups.values()].sort((a, b) => b.looks - a.looks);
}
