// Where usage statistics and live metadata live in Redis (docs/coordinator.md
// "Usage statistics and live metadata"), and how to read the statistics back.
// Statistics are hashes of UTC minutes ("2026-11-27T10:04") per pool and per
// workload, one hash per measure; sums, so that every coordinator tick (and a
// backlog replayed after a Redis outage) can add to them with HINCRBYFLOAT:
//   gpu-seconds      GPU-seconds allocated
//   sampled-seconds  of those, GPU-seconds whose utilization was known
//   busy-seconds     Σ utilization/100 × seconds over the sampled ones
// so a minute's mean utilization is 100 × busy / sampled (%).
import type { Redis } from 'ioredis'

export const USAGE_MEASURES = ['gpu-seconds', 'sampled-seconds', 'busy-seconds'] as const
export type UsageMeasure = (typeof USAGE_MEASURES)[number]

/** A pool key, or a workload id (pool keys never hold a colon, so `workload:<id>` is never a pool). */
export type UsageScope = { pool: string } | { workload: string }

export const usageKey = (measure: UsageMeasure, scope: UsageScope): string =>
  `gpumesh:usage:${measure}:${'pool' in scope ? scope.pool : `workload:${scope.workload}`}`

/** GPU-seconds allocated in a pool, per minute (the first of these keys; kept as it was). */
export const USAGE_KEY = (pool: string): string => usageKey('gpu-seconds', { pool })
/** JSON of a host heard from recently (the leader writes it from PostgreSQL), expiring. */
export const HOST_KEY = (id: string): string => `gpumesh:host:${id}`
/** JSON of a host's GPUs as its agent reports them now (the coordinator that holds its session writes it), expiring. */
export const HOST_GPUS_KEY = (id: string): string => `gpumesh:host:${id}:gpus`

/** How long statistics are kept after their last increment. */
export const USAGE_TTL_S = 8 * 86400

export interface UsageMinute {
  minute: string
  gpuSeconds: number
  /** null when no utilization was known for any of those GPU-seconds. */
  meanUtilizationPct: number | null
}

/** One pool's or workload's statistics, minute by minute, oldest first. */
export async function readUsage(redis: Redis, scope: UsageScope): Promise<UsageMinute[]> {
  const [gpu, sampled, busy] = await Promise.all(
    USAGE_MEASURES.map(async (m) => await redis.hgetall(usageKey(m, scope)))
  )
  const n = (h: Record<string, string> | undefined, minute: string) => Number(h?.[minute] ?? 0)
  return Object.keys(gpu ?? {})
    .sort()
    .map((minute) => ({
      minute,
      gpuSeconds: n(gpu, minute),
      meanUtilizationPct: n(sampled, minute) > 0 ? (100 * n(busy, minute)) / n(sampled, minute) : null
    }))
}
