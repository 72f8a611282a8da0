// Shared by the benches: order statistics of a list of samples.

/** The q-quantile (0..1) of an ascending list, nearest rank. */
export function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Median and p90 of the samples (any order). */
export function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { n: sorted.length, median: quantile(sorted, 0.5), p90: quantile(sorted, 0.9) };
}
