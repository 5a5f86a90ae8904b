// The one retry delay: exponential, capped, with jitter so that many clients
// cut off together (a coordinator restart, a Redis failover) do not come back
// in lockstep.

export interface BackoffOptions {
  /** The first delay, before jitter (default 100 ms). */
  baseMs?: number
  /** The largest delay, before jitter (default 30 s). */
  capMs?: number
}

/** The delay before retry number `attempt` (0-based): min(cap, base * 2^attempt) times a factor in [0.5, 1). */
export function backoff(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const { baseMs = 100, capMs = 30_000 } = options
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt)) * (0.5 + random() / 2)
}
