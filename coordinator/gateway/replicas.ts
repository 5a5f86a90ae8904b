// The gateway's view of what it can call: live endpoints by name, and their
// ready replicas (placement running and ready) with where they run. Kept in
// memory so a call costs no query for routing: reloaded (one query) soon
// after an event about a placement, workload or host is committed (the
// notifier's wake-up), and every RESYNC_MS anyway, since a wake-up is a hint
// that can be lost.
//
// A replica the gateway could not connect to is set aside for a moment
// (COOL_MS), so calls do not keep trying a replica whose process died before
// its agent's report arrives.
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Notifier } from '../events/notifier.js'
import type { Pool } from '../store/db.js'

/** A live endpoint that opted in to the OpenAI-compatible front (serve.openai): its name is the `model`. */
export interface OpenAIModel {
  name: string
  createdAt: Date
}

export interface Replica {
  placementId: string
  endpoint: string
  hostId: string
  peerId: string
  port: number
}

const RESYNC_MS = 10_000
/** Between two looks for events (a wake-up cuts it short). */
const LOOK_MS = 2000
const COOL_MS = 2000

export class ReadyReplicas implements Startable {
  private byEndpoint = new Map<string, Replica[]>()
  private byPlacement = new Map<string, Replica>()
  /** Live endpoints by name: the id of the team that owns each (null: the cluster's). */
  private endpoints = new Map<string, string | null>()
  private openai = new Map<string, OpenAIModel>()
  private readonly cooling = new Map<string, number>()
  private afterEvent = 0
  private loadedAt = 0
  private readonly loop: Loop
  private readonly listeners = new Set<(ids: Set<string>) => void>()

  constructor(
    private readonly pool: Pool,
    notifier: Notifier,
    log: Logger
  ) {
    this.loop = new Loop(async () => await this.tick(), {
      name: 'gateway replica set',
      everyMs: LOOK_MS,
      wait: (ms, signal) => notifier.wait(ms, signal),
      log
    })
  }

  async start(): Promise<void> {
    await this.reload()
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  /** Whether a live endpoint has this name. */
  has(endpoint: string): boolean {
    return this.endpoints.has(endpoint)
  }

  /** The team that owns live endpoint `name` (null: the cluster's); undefined when there is none. */
  teamOf(name: string): string | null | undefined {
    return this.endpoints.get(name)
  }

  /** The endpoint `name` if it opted in to the OpenAI front (as its current spec says). */
  openaiModel(name: string): OpenAIModel | undefined {
    return this.openai.get(name)
  }

  /** Every endpoint that opted in to the OpenAI front, by name. */
  openaiModels(): OpenAIModel[] {
    return [...this.openai.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
  }

  /** Ready replicas of an endpoint now, those set aside after a failed connect excepted. */
  ready(endpoint: string): Replica[] {
    const all = this.byEndpoint.get(endpoint) ?? []
    if (this.cooling.size === 0) return all
    const now = Date.now()
    return all.filter((r) => {
      const until = this.cooling.get(r.placementId)
      if (until === undefined) return true
      if (until > now) return false
      this.cooling.delete(r.placementId)
      return true
    })
  }

  get(placementId: string): Replica | undefined {
    return this.byPlacement.get(placementId)
  }

  /** The gateway could not reach this replica: pass it over for a moment. */
  setAside(placementId: string): void {
    this.cooling.set(placementId, Date.now() + COOL_MS)
  }

  /** Calls `f` after each reload with the placements that are no longer ready. */
  onGone(f: (ids: Set<string>) => void): void {
    this.listeners.add(f)
  }

  /** Reloads now (tests, and a caller that knows the set changed). */
  async reload(): Promise<void> {
    // The last event id first: an event committed while the sets are read is looked at again, never missed.
    const { rows: last } = await this.pool.query<{ id: string | null }>('select max(id) as id from events')
    const [{ rows: replicas }, { rows: endpoints }] = await Promise.all([
      this.pool.query<Replica>(
        `select p.id as "placementId", w.name as endpoint, p.host_id as "hostId", h.peer_id as "peerId", p.port
         from placements p join workloads w on w.id = p.workload_id join hosts h on h.id = p.host_id
         where p.state = 'running' and p.ready and p.port is not null and w.kind = 'endpoint' and w.state <> 'deleted'`
      ),
      this.pool.query<{ name: string; openai: boolean; created_at: Date; team_id: string | null }>(
        `select name, spec->'serve'->'openai' = 'true'::jsonb as openai, created_at, team_id
         from workloads where kind = 'endpoint' and state <> 'deleted'`
      )
    ])
    const lastId = Number(last[0]?.id ?? 0)
    if (lastId > this.afterEvent) this.afterEvent = lastId
    const byEndpoint = new Map<string, Replica[]>()
    const byPlacement = new Map<string, Replica>()
    for (const r of replicas) {
      byPlacement.set(r.placementId, r)
      const list = byEndpoint.get(r.endpoint)
      if (list === undefined) byEndpoint.set(r.endpoint, [r])
      else list.push(r)
    }
    const gone = new Set([...this.byPlacement.keys()].filter((id) => !byPlacement.has(id)))
    this.byEndpoint = byEndpoint
    this.byPlacement = byPlacement
    this.endpoints = new Map(endpoints.map((e) => [e.name, e.team_id]))
    this.openai = new Map(
      endpoints.filter((e) => e.openai).map((e) => [e.name, { name: e.name, createdAt: e.created_at }])
    )
    this.loadedAt = Date.now()
    for (const id of gone) this.cooling.delete(id)
    if (gone.size > 0) for (const f of this.listeners) f(gone)
  }

  private async tick(): Promise<void> {
    if (Date.now() - this.loadedAt >= RESYNC_MS) {
      await this.reload()
      return
    }
    const { rows } = await this.pool.query<{ last: string | null; relevant: boolean | null }>(
      `select max(id) as last, bool_or(subject_kind in ('placement', 'workload', 'host')) as relevant
       from events where id > $1`,
      [this.afterEvent]
    )
    const row = rows[0]
    if (row?.relevant === true) await this.reload()
    else if (row?.last !== null && row?.last !== undefined) this.afterEvent = Number(row.last)
  }
}
