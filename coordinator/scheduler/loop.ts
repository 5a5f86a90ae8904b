// The leader's scheduling loop: wake on new events (or every second), bring
// the fleet picture up to date, decide for pending workloads, persist. New
// workloads are decided as their events arrive; the whole pending queue is
// walked again (a page per pass) only when capacity may have changed, so a
// queue of unplaceable work costs nothing between changes. Replicas in
// restart backoff (store/restarts.ts) are left out until their time, when the
// queue is walked again.
import { Periodic } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import type { WorkloadSpec } from '../../protocol/workload.js'
import type { Notifier } from '../events/notifier.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { persistDecisions, type DecisionToPersist } from '../store/placements.js'
import { backoffReason, type ReplicaBackoff } from '../store/restarts.js'
import { snapshotSource } from '../store/snapshot.js'
import { ACTIVE_PLACEMENT_STATES, sortTs } from '../store/sql.js'
import { SnapshotCache } from './cache.js'
import { placeOn } from './place.js'
import type { Decision, SchedWorkload } from './types.js'

const PAGE = 2000
const IDLE_WAIT_MS = 1000

interface PendingRow {
  id: string
  spec: WorkloadSpec
  /** Replicas wanted on top of the spec's (a rolling update's new replica). */
  surge: number
  reason: string | null
  replicas: number[]
  hosts: string[]
  /** Replicas waiting out a restart backoff. */
  backoff: Array<Omit<ReplicaBackoff, 'notBefore'> & { notBefore: string }>
  sort_ts: string
}

const SELECT_PENDING = `
  select w.id, w.spec, w.surge, w.reason, ${sortTs('w.created_at')},
    coalesce(array_agg(p.replica) filter (where p.id is not null), '{}') as replicas,
    coalesce(array_agg(p.host_id::text) filter (where p.id is not null), '{}') as hosts,
    (select coalesce(jsonb_agg(jsonb_build_object('replica', r.replica, 'failures', r.failures,
       'notBefore', r.not_before, 'lastReason', r.last_reason)), '[]')
     from replica_restarts r where r.workload_id = w.id and r.not_before > now()) as backoff
  from workloads w left join placements p on p.workload_id = w.id and p.state = any($1::text[])
  where w.state = 'pending'`

export function replicasNeeded(spec: WorkloadSpec): number {
  return spec.kind === 'endpoint' ? spec.replicas : spec.kind === 'recipe' ? spec.hosts : 1
}

export class SchedulerLoop extends Periodic {
  private readonly cache: SnapshotCache
  /** The run the cache belongs to: a new leadership term starts from the database. */
  private term: AbortSignal | null = null
  /** Where the walk of the pending queue has got to; null when there is no walk. */
  private scan: { after: [string, string] | null } | null = null
  /** When the earliest restart backoff seen ends (ms since the epoch): the queue is walked again then. */
  private wakeAt: number | null = null

  constructor(
    private readonly pool: Pool,
    notifier: Notifier,
    private readonly log: Logger,
    private readonly metrics: Metrics
  ) {
    super({ name: 'scheduling', everyMs: IDLE_WAIT_MS, wait: notifier.wait.bind(notifier), log })
    this.cache = new SnapshotCache(snapshotSource(pool))
  }

  /** Passes back to back while there is work; otherwise wait for an event (or a second). */
  protected async tick(term: AbortSignal): Promise<number | undefined> {
    if (this.term !== term) {
      this.term = term
      this.cache.invalidate()
      this.scan = null
    }
    try {
      return (await this.pass()) ? 0 : undefined
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'scheduling pass failed; retrying')
      this.cache.invalidate()
      return undefined
    }
  }

  /** One pass; true when more work may be waiting (something placed, or the walk goes on). */
  async pass(): Promise<boolean> {
    const started = performance.now()
    const { capacityChanged, newWorkloads } = await this.cache.refresh()
    if (capacityChanged || (this.wakeAt !== null && Date.now() >= this.wakeAt)) {
      this.scan = { after: null }
      this.wakeAt = null
    }
    const todo = new Map<string, PendingRow>()
    if (this.scan !== null) {
      const after = this.scan.after
      const { rows } = await this.pool.query<PendingRow>(
        `${SELECT_PENDING} and ($2::timestamptz is null or (w.created_at, w.id) > ($2::timestamptz, $3::uuid))
         group by w.id order by w.created_at, w.id limit $4`,
        [ACTIVE_PLACEMENT_STATES, after?.[0] ?? null, after?.[1] ?? null, PAGE]
      )
      for (const r of rows) todo.set(r.id, r)
      const last = rows[rows.length - 1]
      this.scan = rows.length < PAGE || last === undefined ? null : { after: [last.sort_ts, last.id] }
    }
    if (newWorkloads.length > 0) {
      const { rows } = await this.pool.query<PendingRow>(
        `${SELECT_PENDING} and w.id = any($2::uuid[]) group by w.id order by w.created_at, w.id`,
        [ACTIVE_PLACEMENT_STATES, newWorkloads]
      )
      for (const r of rows) todo.set(r.id, r)
    }
    if (todo.size === 0) return this.scan !== null
    const rows = [...todo.values()]
    const decisions = rows.map((r) => this.decide(r))
    const items: DecisionToPersist[] = decisions.map((decision, i) => {
      const row = rows[i] as PendingRow
      return {
        decision,
        needed: replicasNeeded(row.spec) + row.surge,
        placedBefore: row.replicas.length,
        previousReason: row.reason
      }
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
      this.metrics.schedulerDecisions.inc({
        result: d.assignments.length === 0 ? 'pending' : d.reason === null ? 'placed' : 'partial'
      })
      if (d.assignments.length > 0) anyPlaced = true
    }
    this.metrics.schedulerPass.observe((performance.now() - started) / 1000)
    return anyPlaced || this.scan !== null
  }

  /** Places what may be placed now: replicas in backoff wait (a gang waits whole), and the reason says until when. */
  private decide(r: PendingRow): Decision {
    const waiting = r.backoff.map((b) => ({ ...b, notBefore: new Date(b.notBefore) }))
    for (const b of waiting) this.wakeAt = Math.min(this.wakeAt ?? Number.POSITIVE_INFINITY, b.notBefore.getTime())
    if (waiting.length > 0 && r.spec.kind !== 'endpoint')
      return { workloadId: r.id, assignments: [], reason: backoffReason(waiting) }
    const decision = placeOn(this.cache.index, {
      id: r.id,
      spec: r.spec.kind === 'endpoint' ? { ...r.spec, replicas: r.spec.replicas + r.surge } : r.spec,
      placedReplicas: [...r.replicas, ...waiting.map((b) => b.replica)],
      usedHosts: r.hosts
    } as SchedWorkload)
    if (waiting.length === 0) return decision
    const reason = backoffReason(waiting)
    return { ...decision, reason: decision.reason === null ? reason : `${reason}; ${decision.reason}` }
  }
}
