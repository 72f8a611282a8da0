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

/**
 * Prints one right-aligned row per result: `columns` is a list of
 * [heading, (result) => cell text].
 */
export function printColumns(columns, results) {
  const rows = results.map((r) => columns.map(([, cell]) => cell(r)));
  const widths = columns.map(([heading], i) => Math.max(heading.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  console.log(line(columns.map(([heading]) => heading)));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}
