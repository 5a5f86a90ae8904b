// The leader's in-memory picture of the fleet for scheduling: hosts with
// their topology and free GPUs, and the scheduler's index over them. Loaded
// in full on election (and every minute), kept current between passes by
// reading the outbox: only hosts named by new events are reloaded. The
// database stays the judge: a decision made on a stale picture is refused
// there and triggers a full reload.
import type { Topology } from '../../protocol/host-facts.js'
import type { HostState } from '../../protocol/api.js'
import type { Pool } from '../store/db.js'
import { SnapshotIndex } from './host-index.js'
import type { Assignment, PoolKind, SchedGpu, SchedHost, Snapshot } from './types.js'

interface HostRow {
  id: string
  name: string
  pool_key: string
  kind: PoolKind
  state: HostState
  gpus: SchedGpu[] | null
  topology: Topology | null
  allocated: number[]
}

const SELECT_HOSTS = `
  select h.id, h.name, h.pool_key, p.kind, h.state, h.facts->'topology' as topology,
    (select jsonb_agg(jsonb_build_object('index', g->'index', 'numaNode', g->'numaNode')) from jsonb_array_elements(h.facts->'gpus') g) as gpus,
    coalesce((select array_agg(a.gpu_index) from gpu_allocations a where a.host_id = h.id and a.active), '{}') as allocated
  from hosts h join pools p on p.key = h.pool_key where h.revoked_at is null`

const FULL_RELOAD_MS = 60_000
const EVENT_PAGE = 5000

export class SnapshotCache {
  readonly hosts = new Map<string, SchedHost>()
  /** Decisions are made on this index; it already counts this leader's own placements. */
  index = new SnapshotIndex({ hosts: [] })
  private lastEventId = 0
  private loadedAt = 0
  private stale = true
  /** Placements this leader created: their events need no reload. */
  private readonly own = new Set<string>()

  constructor (private readonly pool: Pool) {}

  snapshot (): Snapshot {
    return { hosts: [...this.hosts.values()] }
  }

  /** Next refresh reloads everything (after a refused decision). */
  invalidate (): void {
    this.stale = true
  }

  /** Marks a persisted decision's GPUs taken; its placements' events need no reload. */
  take (assignments: Assignment[], placementIds: Iterable<string>): void {
    for (const a of assignments) for (const g of a.gpus) this.hosts.get(a.hostId)?.free.delete(g)
    for (const id of placementIds) this.own.add(id)
  }

  /** Brings the picture up to date; says whether capacity may have changed and which workloads are new. */
  async refresh (): Promise<{ capacityChanged: boolean, newWorkloads: string[] }> {
    if (this.stale || Date.now() - this.loadedAt > FULL_RELOAD_MS) {
      await this.loadAll()
      return { capacityChanged: true, newWorkloads: [] }
    }
    const dirty = new Set<string>()
    let pools = false
    const newWorkloads: string[] = []
    for (const e of await this.eventsSince()) {
      this.lastEventId = e.id
      if (e.type.startsWith('host.')) dirty.add(e.subject_id)
      else if (e.type.startsWith('pool.')) pools = true
      else if (e.type === 'workload.created') newWorkloads.push(e.subject_id)
      else if (e.type === 'placement.created' && this.own.delete(e.subject_id)) continue
      else if (e.type.startsWith('placement.') && typeof e.data.host === 'string') dirty.add(e.data.host)
    }
    if (pools) {
      await this.loadAll()
      return { capacityChanged: true, newWorkloads }
    }
    if (dirty.size > 0) {
      const { rows: hosts } = await this.pool.query<HostRow>(`${SELECT_HOSTS} and h.id = any($1::uuid[])`, [[...dirty]])
      for (const id of dirty) { this.hosts.delete(id); this.index.remove(id) }
      for (const h of hosts) {
        const host = toSchedHost(h)
        this.hosts.set(h.id, host)
        this.index.upsert(host)
      }
    }
    return { capacityChanged: dirty.size > 0, newWorkloads }
  }

  /** Events after the last one seen, in pages (a bounded page also keeps the plan on the primary key). */
  private async eventsSince (): Promise<Array<{ id: number, type: string, subject_id: string, data: { host?: string } }>> {
    const out: Array<{ id: number, type: string, subject_id: string, data: { host?: string } }> = []
    for (;;) {
      const after = out[out.length - 1]?.id ?? this.lastEventId
      const { rows } = await this.pool.query<{ id: number, type: string, subject_id: string, data: { host?: string } }>(
        'select id, type, subject_id, data from events where id > $1 order by id limit $2', [after, EVENT_PAGE])
      out.push(...rows)
      if (rows.length < EVENT_PAGE) return out
    }
  }

  private async loadAll (): Promise<void> {
    // The event id first: anything after it is replayed by the next refresh.
    const { rows: last } = await this.pool.query<{ id: number | null }>('select max(id) as id from events')
    const { rows } = await this.pool.query<HostRow>(SELECT_HOSTS)
    this.hosts.clear()
    for (const h of rows) this.hosts.set(h.id, toSchedHost(h))
    this.index = new SnapshotIndex(this.snapshot())
    this.lastEventId = last[0]?.id ?? 0
    this.own.clear()
    this.loadedAt = Date.now()
    this.stale = false
  }
}

function toSchedHost (r: HostRow): SchedHost {
  const gpus = r.gpus ?? []
  const allocated = new Set(r.allocated)
  return {
    id: r.id,
    name: r.name,
    pool: r.pool_key,
    poolKind: r.kind,
    schedulable: r.state === 'ready',
    gpus,
    free: new Set(gpus.map((g) => g.index).filter((i) => !allocated.has(i))),
    topology: { labels: r.topology?.labels ?? [], matrix: r.topology?.matrix ?? [], nvlinkDomains: r.topology?.nvlinkDomains ?? [] }
  }
}
