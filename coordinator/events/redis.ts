// The Redis client as the coordinator uses it: commands fail fast while Redis
// is away (callers keep their own backlog and retry), reconnection is automatic.
import { Redis } from 'ioredis'

export function createRedis (url: string): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 5000)
  })
}

/** Exponential backoff with jitter, capped: 100 ms, 200 ms, ... 30 s. */
export function backoff (attempt: number, capMs = 30_000): number {
  return Math.min(capMs, 100 * 2 ** attempt) * (0.5 + Math.random() / 2)
}
