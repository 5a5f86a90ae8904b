// The leader's scheduling loop: wake on new events (or every second), bring
// the fleet picture up to date, decide for pending workloads, persist. A
// workload that could not be placed is looked at again only when capacity
// changed, so a queue of unplaceable work costs nothing between changes.
import type { Logger } from '../../common/log.js'
import type { WorkloadSpec } from '../../protocol/workload.js'
import type { Notifier } from '../events/notifier.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { persistDecisions, type DecisionToPersist } from '../store/placements.js'
import { ACTIVE_PLACEMENT_STATES } from '../store/sql.js'
import { SnapshotCache } from './cache.js'
import { scheduleAll } from './place.js'
import type { SchedWorkload } from './types.js'

const PENDING_BATCH = 2000
const IDLE_WAIT_MS = 1000

interface PendingRow { id: string, spec: WorkloadSpec, reason: string | null, replicas: number[], hosts: string[] }

export function replicasNeeded (spec: WorkloadSpec): number {
  return spec.kind === 'endpoint' ? spec.replicas : spec.kind === 'recipe' ? spec.hosts : 1
}

export class SchedulerLoop {
  private readonly cache: SnapshotCache
  private running = false
  private abort = new AbortController()
  private loop: Promise<void> | null = null
  /** Pending workloads already tried against the current capacity. */
  private readonly tried = new Set<string>()

  constructor (private readonly pool: Pool, private readonly notifier: Notifier, private readonly log: Logger, private readonly metrics: Metrics) {
    this.cache = new SnapshotCache(pool)
  }

  start (): void {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    this.cache.invalidate()
    this.tried.clear()
    this.loop = this.run()
  }

  async stop (): Promise<void> {
    this.running = false
    this.abort.abort()
    await this.loop
  }

  private async run (): Promise<void> {
    while (this.running) {
      try {
        const busy = await this.pass()
        if (!busy) await this.notifier.wait(IDLE_WAIT_MS, this.abort.signal)
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'scheduling pass failed; retrying')
        this.cache.invalidate()
        await this.notifier.wait(IDLE_WAIT_MS, this.abort.signal)
      }
    }
  }

  /** One pass; true when it placed something and more may follow at once. */
  async pass (): Promise<boolean> {
    const started = performance.now()
    const { capacityChanged } = await this.cache.refresh()
    if (capacityChanged) this.tried.clear()
    const { rows } = await this.pool.query<PendingRow>(
      `select w.id, w.spec, w.reason,
         coalesce(array_agg(p.replica) filter (where p.id is not null), '{}') as replicas,
         coalesce(array_agg(p.host_id::text) filter (where p.id is not null), '{}') as hosts
       from workloads w left join placements p on p.workload_id = w.id and p.state = any($1::text[])
       where w.state = 'pending' group by w.id order by w.created_at, w.id limit $2`, [ACTIVE_PLACEMENT_STATES, PENDING_BATCH])
    const todo = rows.filter((r) => !this.tried.has(r.id))
    if (todo.length === 0) return false
    const workloads = todo.map((r): SchedWorkload => ({ id: r.id, spec: r.spec, placedReplicas: r.replicas, usedHosts: r.hosts } as SchedWorkload))
    const decisions = scheduleAll(workloads, this.cache.snapshot())
    const items: DecisionToPersist[] = decisions.map((decision, i) => {
      const row = todo[i] as PendingRow
      return { decision, needed: replicasNeeded(row.spec), placedBefore: row.replicas.length, previousReason: row.reason }
    })
    const { placed, refused } = await persistDecisions(this.pool, items)
    for (const d of decisions) {
      const ids = placed.get(d.workloadId)
      if (ids !== undefined) this.cache.take(d.assignments, ids)
    }
    if (refused.length > 0) {
      this.log.warn({ workloads: refused.length }, 'decisions refused by the database (stale picture); reloading')
      this.cache.invalidate()
    }
    let anyPlaced = false
    for (const d of decisions) {
      const result = d.assignments.length === 0 ? 'pending' : d.reason === null ? 'placed' : 'partial'
      this.metrics.schedulerDecisions.inc({ result })
      if (d.assignments.length > 0) anyPlaced = true
      if (d.reason !== null && !refused.includes(d.workloadId)) this.tried.add(d.workloadId)
    }
    this.metrics.schedulerPass.observe((performance.now() - started) / 1000)
    return anyPlaced || rows.length >= PENDING_BATCH
  }
}
