// The Redis client as the coordinator uses it: commands fail fast while Redis
// is away (callers keep their own backlog and retry), reconnection is automatic.
import { Redis } from 'ioredis'
import { backoff } from '../../common/daemon/backoff.js'

export function createRedis(url: string): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => backoff(times, { capMs: 5000 })
  })
}
