// Usage statistics and live host metadata in Redis (leader only; the keys
// are in usage-keys.ts): GPU-seconds and utilization per pool and per
// workload per minute, and `gpumesh:host:<id>`. A GPU held by a placement
// counts for its workload and its host's pool. Its utilization is the one
// its agent reports at each tick, standing for the time since the last tick:
// from this coordinator's sessions, else from `gpumesh:host:<id>:gpus` that
// the coordinator holding the host's session writes. What is counted while
// Redis is away is kept and added on recovery (without the utilization of
// hosts reporting to other coordinators, which is read from Redis).
import type { Redis } from 'ioredis'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Pool } from '../store/db.js'
import type { LiveTelemetry } from '../telemetry/live-gpus.js'
import { addUtilization, utilizationFromStored } from './live-gpus-publisher.js'
import { HOST_GPUS_KEY, HOST_KEY, USAGE_TTL_S, type UsageScope, usageKey } from './usage-keys.js'

const MAX_BACKLOG = 100_000

export class UsageRecorder implements Startable {
  private readonly loop: Loop
  private last = Date.now()
  /** "<Redis key>\t<minute>" -> seconds not yet in Redis. */
  private readonly backlog = new Map<string, number>()
  private failing = false

  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    private readonly log: Logger,
    intervalMs = 10_000,
    private readonly hostTtlS = 30,
    /** This coordinator's agents' GPU tables (the others' are read from Redis). */
    private readonly live: LiveTelemetry = () => []
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
      const { rows } = await this.pool.query<{ host: string; gpu: number; workload: string; pool: string }>(
        `select a.host_id as host, a.gpu_index as gpu, p.workload_id as workload, h.pool_key as pool
         from gpu_allocations a join placements p on p.id = a.placement_id join hosts h on h.id = a.host_id where a.active`
      )
      const utilization = await this.utilization(new Set(rows.map((r) => r.host)))
      const spans = minutes(since, now)
      for (const r of rows) {
        const pct = utilization.get(`${r.host}/${r.gpu}`)
        for (const scope of [{ pool: r.pool }, { workload: r.workload }] satisfies UsageScope[])
          for (const [minute, seconds] of spans) {
            this.add(usageKey('gpu-seconds', scope), minute, seconds)
            if (pct === undefined) continue
            this.add(usageKey('sampled-seconds', scope), minute, seconds)
            this.add(usageKey('busy-seconds', scope), minute, (pct / 100) * seconds)
          }
      }
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
      for (const [entry, seconds] of this.backlog) {
        const [key, minute] = entry.split('\t') as [string, string]
        p.hincrbyfloat(key, minute, seconds)
        p.expire(key, USAGE_TTL_S)
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

  private add(key: string, minute: string, seconds: number): void {
    const entry = `${key}\t${minute}`
    if (!this.backlog.has(entry) && this.backlog.size >= MAX_BACKLOG) return
    this.backlog.set(entry, (this.backlog.get(entry) ?? 0) + seconds)
  }

  /** Utilization (%) now per "<host>/<gpu index>" of `hosts`: this coordinator's tables first, then Redis. */
  private async utilization(hosts: ReadonlySet<string>): Promise<Map<string, number>> {
    const out = new Map<string, number>()
    const local = new Set<string>()
    for (const [hostId, gpus] of this.live()) {
      if (!hosts.has(hostId)) continue
      local.add(hostId)
      addUtilization(out, hostId, gpus)
    }
    const remote = [...hosts].filter((h) => !local.has(h))
    if (remote.length === 0) return out
    // Redis away: those GPU-seconds count without a utilization (the tick's MULTI reports the outage).
    const stored = await this.redis.mget(remote.map(HOST_GPUS_KEY)).catch(() => [])
    for (const [key, pct] of utilizationFromStored(stored)) out.set(key, pct)
    return out
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
