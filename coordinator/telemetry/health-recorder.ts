// Writes GPU health changes from the agents' telemetry (LiveGpus) to
// PostgreSQL (store/gpu-health.ts). Only changes of health, or a GPU this
// coordinator had not seen yet (a session's first, whole table: the database
// is reconciled with it, across coordinator restarts) cost a write; usage
// samples do not. Writes are serialised per host, each with the host's whole
// table as it is when the write starts, so the last one wins; a write the
// database refused is tried again shortly.
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { GpuHealth } from '../../protocol/telemetry.js'
import type { Pool } from '../store/db.js'
import { reconcileGpuHealth } from '../store/gpu-health.js'
import type { GpuChange, LiveGpus } from './live-gpus.js'

const RETRY_MS = 1000

const sameHealth = (a: GpuHealth, b: GpuHealth) =>
  a.state === b.state && a.reasons.length === b.reasons.length && a.reasons.every((r, i) => r === b.reasons[i])

/** Whether a change may change the stored health (usage and XID counts alone do not). */
export function healthMayHaveChanged(c: GpuChange): boolean {
  if (c.before === null || c.after === null) return true
  return !sameHealth(c.before.health, c.after.health) || c.before.uuid !== c.after.uuid
}

export class HealthRecorder implements Startable {
  private unsubscribe: (() => void) | null = null
  /** Per host: the write in flight, and whether another must follow it. */
  private readonly writing = new Map<string, { again: boolean }>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private stopped = false
  /** Settles when no write is in flight (tests and benches wait on it). */
  private idle: Promise<void> = Promise.resolve()

  constructor(
    private readonly pool: Pool,
    private readonly live: LiveGpus,
    private readonly log: Logger,
    /** Told after each write that appended events (the scheduler's own coordinator may wake sooner). */
    private readonly onWritten?: (hostId: string) => void
  ) {}

  start(): void {
    this.stopped = false
    this.unsubscribe = this.live.onChange((changes) => {
      const hosts = new Set(changes.filter(healthMayHaveChanged).map((c) => c.hostId))
      for (const hostId of hosts) this.schedule(hostId)
    })
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    await this.idle
  }

  /** The host's first whole table of a session: the database is made to match it, whatever this coordinator knew. */
  reconcile(hostId: string): void {
    this.schedule(hostId)
  }

  private schedule(hostId: string): void {
    if (this.stopped) return
    const inFlight = this.writing.get(hostId)
    if (inFlight !== undefined) {
      inFlight.again = true
      return
    }
    const state = { again: false }
    this.writing.set(hostId, state)
    const write = this.write(hostId, state)
    const before = this.idle
    this.idle = Promise.all([before, write]).then(() => {})
  }

  private async write(hostId: string, state: { again: boolean }): Promise<void> {
    let failed = false
    do {
      state.again = false
      try {
        const events = await reconcileGpuHealth(this.pool, hostId, this.live.gpus(hostId))
        if (events.length > 0) this.onWritten?.(hostId)
      } catch (err) {
        this.log.warn({ host: hostId, err: (err as Error).message }, 'cannot record GPU health; retrying')
        failed = true
        break
      }
    } while (state.again && !this.stopped)
    this.writing.delete(hostId)
    if (failed && !this.stopped) {
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        this.schedule(hostId)
      }, RETRY_MS)
      timer.unref()
      this.timers.add(timer)
    }
  }
}
