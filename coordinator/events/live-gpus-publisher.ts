// Live per-GPU usage and health in Redis: every coordinator (not only the
// leader) writes the GPU tables of the agents that report to it, since only
// it has them, as `gpumesh:host:<id>:gpus` expiring after a few periods: a
// host whose agent went away drops out by itself. Live values are worth
// nothing late, so nothing is kept while Redis is away.
import type { Redis } from 'ioredis'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { GpuTelemetry } from '../../protocol/telemetry.js'
import type { LiveTelemetry } from '../telemetry/live-gpus.js'
import { HOST_GPUS_KEY } from './usage-keys.js'

/** What `gpumesh:host:<id>:gpus` holds. */
export interface LiveHostGpus {
  hostId: string
  /** When this coordinator wrote it. */
  at: string
  gpus: GpuTelemetry[]
}

export class LiveGpusPublisher implements Startable {
  private readonly loop: Loop
  private failing = false

  constructor(
    private readonly redis: Redis,
    private readonly live: LiveTelemetry,
    private readonly log: Logger,
    intervalMs = 10_000,
    private readonly ttlS = 30
  ) {
    this.loop = new Loop(
      async () => {
        await this.tick()
      },
      { name: 'live GPU usage', everyMs: intervalMs, log }
    )
  }

  start(): void {
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  async tick(): Promise<void> {
    const at = new Date().toISOString()
    const tables = [...this.live()].filter(([, gpus]) => gpus.length > 0)
    if (tables.length === 0) return
    const p = this.redis.multi()
    for (const [hostId, gpus] of tables) {
      const value: LiveHostGpus = { hostId, at, gpus }
      p.set(HOST_GPUS_KEY(hostId), JSON.stringify(value), 'EX', this.ttlS)
    }
    try {
      const results = await p.exec()
      const err = (results ?? []).find(([e]) => e !== null)?.[0]
      if (err != null) throw err
      if (this.failing) this.log.info('live GPU usage reaches Redis again')
      this.failing = false
    } catch (err) {
      if (!this.failing) this.log.warn({ err: (err as Error).message }, 'live GPU usage: Redis unavailable')
      this.failing = true
    }
  }
}

/** Utilization (%) per "<host>/<gpu index>" from stored live tables; what is not JSON of that shape is skipped. */
export function utilizationFromStored(values: ReadonlyArray<string | null>): Map<string, number> {
  const out = new Map<string, number>()
  for (const raw of values) {
    if (raw === null) continue
    let v: Partial<LiveHostGpus>
    try {
      v = JSON.parse(raw) as Partial<LiveHostGpus>
    } catch {
      continue
    }
    if (typeof v.hostId === 'string' && Array.isArray(v.gpus)) addUtilization(out, v.hostId, v.gpus)
  }
  return out
}

/** Adds the GPUs' known utilizations to `out` under "<host>/<gpu index>". */
export function addUtilization(out: Map<string, number>, hostId: string, gpus: readonly GpuTelemetry[]): void {
  for (const g of gpus) {
    const pct = g?.usage?.utilizationPct
    if (typeof g?.index === 'number' && typeof pct === 'number') out.set(`${hostId}/${g.index}`, pct)
  }
}
