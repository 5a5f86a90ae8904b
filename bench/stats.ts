// Figures the benches share.

/** The p-quantile (nearest rank, 0 < p < 1) of `values`; NaN when there are none. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN
}

/** To one decimal, as the README's tables give milliseconds and percentages. */
export function round1(x: number): number {
  return Math.round(x * 10) / 10
}
