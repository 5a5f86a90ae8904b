// The leader's in-memory picture of the fleet for scheduling: hosts with
// their topology and free GPUs, and the scheduler's index over them. Loaded
// in full on election (and every minute), kept current between passes by
// reading the outbox: only hosts named by new events are reloaded. The
// database stays the judge: a decision made on a stale picture is refused
// there and triggers a full reload. What it reads comes through a
// SnapshotSource (store/snapshot.ts): the cache itself does no I/O.
import { SnapshotIndex } from './host-index.js'
import type { Assignment, FleetEvent, SchedHost, Snapshot, SnapshotSource } from './types.js'

const FULL_RELOAD_MS = 60_000
const EVENT_PAGE = 5000
/** Events after which a workload may want replicas placed: it is looked at at once, like a new one. */
const ASK_FOR_REPLICAS = new Set([
  'workload.created',
  'workload.scaled',
  'workload.rollout-started',
  'workload.rollout-progress'
])

export class SnapshotCache {
  readonly hosts = new Map<string, SchedHost>()
  /** Decisions are made on this index; it already counts this leader's own placements. */
  index = new SnapshotIndex({ hosts: [] })
  private lastEventId = 0
  private loadedAt = 0
  private stale = true
  /** Placements this leader created: their events need no reload. */
  private readonly own = new Set<string>()

  constructor(private readonly source: SnapshotSource) {}

  snapshot(): Snapshot {
    return { hosts: [...this.hosts.values()] }
  }

  /** Next refresh reloads everything (after a refused decision). */
  invalidate(): void {
    this.stale = true
  }

  /** Marks a persisted decision's GPUs taken; its placements' events need no reload. */
  take(assignments: Assignment[], placementIds: Iterable<string>): void {
    for (const a of assignments) for (const g of a.gpus) this.hosts.get(a.hostId)?.free.delete(g)
    for (const id of placementIds) this.own.add(id)
  }

  /** Brings the picture up to date; says whether capacity may have changed and which workloads are new. */
  async refresh(): Promise<{ capacityChanged: boolean; newWorkloads: string[] }> {
    if (this.stale || Date.now() - this.loadedAt > FULL_RELOAD_MS) {
      await this.loadAll()
      return { capacityChanged: true, newWorkloads: [] }
    }
    const dirty = new Set<string>()
    let pools = false
    const newWorkloads: string[] = []
    for (const e of await this.eventsSince()) {
      this.lastEventId = e.id
      if (e.type.startsWith('host.')) dirty.add(e.subjectId)
      else if (e.type.startsWith('gpu.') && e.host !== undefined) dirty.add(e.host)
      else if (e.type.startsWith('pool.')) pools = true
      else if (ASK_FOR_REPLICAS.has(e.type)) newWorkloads.push(e.subjectId)
      else if (e.type === 'placement.created' && this.own.delete(e.subjectId)) continue
      else if (e.type.startsWith('placement.') && e.host !== undefined) dirty.add(e.host)
    }
    if (pools) {
      await this.loadAll()
      return { capacityChanged: true, newWorkloads }
    }
    if (dirty.size > 0) {
      const hosts = await this.source.hosts([...dirty])
      for (const id of dirty) {
        this.hosts.delete(id)
        this.index.remove(id)
      }
      for (const host of hosts) {
        this.hosts.set(host.id, host)
        this.index.upsert(host)
      }
    }
    return { capacityChanged: dirty.size > 0, newWorkloads }
  }

  /** Events after the last one seen, in pages (a bounded page also keeps the plan on the primary key). */
  private async eventsSince(): Promise<FleetEvent[]> {
    const out: FleetEvent[] = []
    for (;;) {
      const after = out[out.length - 1]?.id ?? this.lastEventId
      const page = await this.source.eventsAfter(after, EVENT_PAGE)
      out.push(...page)
      if (page.length < EVENT_PAGE) return out
    }
  }

  private async loadAll(): Promise<void> {
    // The event id first: anything after it is replayed by the next refresh.
    const last = await this.source.lastEventId()
    const hosts = await this.source.hosts()
    this.hosts.clear()
    for (const h of hosts) this.hosts.set(h.id, h)
    this.index = new SnapshotIndex(this.snapshot())
    this.lastEventId = last
    this.own.clear()
    this.loadedAt = Date.now()
    this.stale = false
  }
}
