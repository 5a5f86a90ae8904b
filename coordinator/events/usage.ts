// Usage statistics and live host metadata in Redis (leader only):
//   gpumesh:usage:gpu-seconds:<pool>  hash  minute (ISO, UTC) -> GPU-seconds allocated
//   gpumesh:host:<id>                 JSON of a host heard from recently, expiring
// GPU-seconds counted while Redis is away are kept and added on recovery.
import type { Redis } from 'ioredis'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Pool } from '../store/db.js'

export const USAGE_KEY = (pool: string) => `gpumesh:usage:gpu-seconds:${pool}`
export const HOST_KEY = (id: string) => `gpumesh:host:${id}`
const USAGE_TTL_S = 8 * 86400
const MAX_BACKLOG = 100_000

export class UsageRecorder implements Startable {
  private readonly loop: Loop
  private last = Date.now()
  /** "<pool>\t<minute>" -> GPU-seconds not yet in Redis. */
  private readonly backlog = new Map<string, number>()
  private failing = false

  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    private readonly log: Logger,
    intervalMs = 10_000,
    private readonly hostTtlS = 30
  ) {
    this.loop = new Loop(
      async () => {
        await this.tick()
      },
      { name: 'usage statistics', everyMs: intervalMs, immediate: false, log }
    )
  }

  start(): void {
    if (this.loop.running) return
    this.last = Date.now()
    this.loop.start()
  }

  /** After the tick in flight, one more: the time up to now is counted too. */
  async stop(): Promise<void> {
    const wasRunning = this.loop.running
    await this.loop.stop()
    if (wasRunning) await this.tick()
  }

  async tick(): Promise<void> {
    const now = Date.now()
    const since = this.last
    this.last = now
    try {
      const { rows } = await this.pool.query<{ pool: string; gpus: number }>(
        'select h.pool_key as pool, count(*)::int as gpus from gpu_allocations a join hosts h on h.id = a.host_id where a.active group by h.pool_key'
      )
      for (const r of rows)
        for (const [minute, seconds] of minutes(since, now)) this.add(r.pool, minute, r.gpus * seconds)
      const hosts = await this.pool.query<{
        id: string
        name: string
        pool: string
        state: string
        gpu_count: number
        last_seen_at: Date
      }>(
        `select id, name, pool_key as pool, state, gpu_count, last_seen_at from hosts where last_seen_at > now() - make_interval(secs => $1)`,
        [this.hostTtlS]
      )
      // MULTI: the increments land all together or not at all, so a retry never counts twice.
      const p = this.redis.multi()
      for (const [key, seconds] of this.backlog) {
        const [pool, minute] = key.split('\t') as [string, string]
        p.hincrbyfloat(USAGE_KEY(pool), minute, seconds)
        p.expire(USAGE_KEY(pool), USAGE_TTL_S)
      }
      for (const h of hosts.rows) {
        p.set(
          HOST_KEY(h.id),
          JSON.stringify({
            id: h.id,
            name: h.name,
            pool: h.pool,
            state: h.state,
            gpus: h.gpu_count,
            lastSeenAt: h.last_seen_at.toISOString()
          }),
          'EX',
          this.hostTtlS
        )
      }
      const results = await p.exec()
      const err = (results ?? []).find(([e]) => e !== null)?.[0]
      if (err != null) throw err
      this.backlog.clear()
      if (this.failing) this.log.info('usage statistics reach Redis again')
      this.failing = false
    } catch (err) {
      if (!this.failing)
        this.log.warn(
          { err: (err as Error).message },
          'usage statistics: Redis or PostgreSQL unavailable; keeping them for later'
        )
      this.failing = true
    }
  }

  private add(pool: string, minute: string, seconds: number): void {
    const key = `${pool}\t${minute}`
    if (!this.backlog.has(key) && this.backlog.size >= MAX_BACKLOG) return
    this.backlog.set(key, (this.backlog.get(key) ?? 0) + seconds)
  }
}

/** Splits [from, to) ms into UTC minutes: [["2026-11-27T10:04", seconds], ...]. */
export function minutes(from: number, to: number): Array<[string, number]> {
  const out: Array<[string, number]> = []
  for (let t = from; t < to; ) {
    const end = Math.min(to, (Math.floor(t / 60_000) + 1) * 60_000)
    out.push([new Date(t).toISOString().slice(0, 16), (end - t) / 1000])
    t = end
  }
  return out
}
