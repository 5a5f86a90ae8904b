// Hosts: registration (the function the mesh calls when an agent enrolls or
// reconnects), listing, and operator state changes.
import type { HostFacts } from '../../protocol/host-facts.js'
import type { Host, HostGpu, HostState } from '../../protocol/api.js'
import type { GpuHealthState } from '../../protocol/telemetry.js'
import { StoreError } from './errors.js'
import { appendEvents, type NewEvent } from './outbox.js'
import { decodeCursor, page } from './cursor.js'
import { transaction, type Client, type Pool } from './db.js'
import { loseHostPlacements } from './lifecycle.js'
import { FREE_GPUS, sortTs } from './sql.js'

export interface HostRow {
  id: string
  name: string
  peer_id: string
  pool_key: string
  state: HostState
  state_reason: string | null
  gpu_count: number
  facts: HostFacts
  agent_version: string | null
  registered_at: Date
  last_seen_at: Date
  conditions: Record<string, { detail: string; since: string }>
  free_gpus: number[]
  gpu_health: Array<{ index: number; state: GpuHealthState; reasons: string[]; since: string }>
}

/** gpu_health: the stored health of each GPU of a host row aliased `h` (store/gpu-health.ts). */
const GPU_HEALTH = `(select coalesce(jsonb_agg(jsonb_build_object('index', gh.gpu_index, 'state', gh.state,
    'reasons', to_jsonb(gh.reasons), 'since', gh.since) order by gh.gpu_index), '[]')
  from gpu_health gh where gh.host_id = h.id) as gpu_health`

const SELECT_HOST = `select h.*, ${FREE_GPUS}, ${GPU_HEALTH} from hosts h`
const LIVE = 'h.revoked_at is null'

export function toHost(r: HostRow): Host {
  return {
    id: r.id,
    name: r.name,
    peerId: r.peer_id,
    pool: r.pool_key,
    state: r.state,
    stateReason: r.state_reason,
    gpuCount: r.gpu_count,
    freeGpus: r.free_gpus,
    agentVersion: r.agent_version,
    registeredAt: r.registered_at.toISOString(),
    lastSeenAt: r.last_seen_at.toISOString(),
    conditions: Object.entries(r.conditions ?? {}).map(([type, c]) => ({ type, detail: c.detail, since: c.since })),
    gpus: hostGpus(r),
    facts: r.facts
  }
}

/** The host's GPUs from its facts with their stored health; live usage is the API's to add (it is in memory). */
function hostGpus(r: HostRow): HostGpu[] {
  const health = new Map((r.gpu_health ?? []).map((g) => [g.index, g]))
  return r.facts.gpus.map((g) => {
    const h = health.get(g.index)
    return {
      index: g.index,
      model: g.name,
      uuid: g.uuid,
      pciBusId: g.pciBusId,
      health: h === undefined ? null : { state: h.state, reasons: h.reasons, since: new Date(h.since).toISOString() },
      usage: null
    }
  })
}

export interface Registration {
  peerId: string
  facts: HostFacts
  name?: string
  address?: string | null
}

export interface Upserted {
  id: string
  inserted: boolean
  epoch: number
  events: NewEvent[]
}

/**
 * Records a host's facts under its peer id inside a transaction: a new host
 * joins its pool (the pool appears with it), a known one is updated and its
 * epoch raised. The caller appends the returned events.
 */
export async function upsertHost(c: Client, { peerId, facts, name, address }: Registration): Promise<Upserted> {
  const events: NewEvent[] = []
  const poolKey = facts.pool.key
  const created = await c.query('insert into pools (key) values ($1) on conflict (key) do nothing returning key', [
    poolKey
  ])
  if (created.rowCount === 1)
    events.push({ type: 'pool.created', subjectKind: 'pool', subjectId: poolKey, data: { kind: 'static' } })
  const { rows } = await c.query<{ id: string; inserted: boolean; epoch: number }>(
    `insert into hosts (peer_id, name, pool_key, gpu_count, facts, agent_version, address, epoch)
     values ($1, $2, $3, $4, $5, $6, $7, 1)
     on conflict (peer_id) do update set name = excluded.name, pool_key = excluded.pool_key, gpu_count = excluded.gpu_count,
       facts = excluded.facts, agent_version = excluded.agent_version, address = coalesce(excluded.address, hosts.address),
       epoch = hosts.epoch + 1, last_seen_at = now(), updated_at = now()
     returning id, (xmax = 0) as inserted, epoch`,
    [
      peerId,
      name ?? facts.hostname,
      poolKey,
      facts.gpus.length,
      JSON.stringify(facts),
      facts.agentVersion,
      address ?? null
    ]
  )
  const row = rows[0] as { id: string; inserted: boolean; epoch: number }
  events.push({
    type: row.inserted ? 'host.registered' : 'host.updated',
    subjectKind: 'host',
    subjectId: row.id,
    data: { name: name ?? facts.hostname, pool: poolKey, gpus: facts.gpus.length }
  })
  return { ...row, events }
}

/** Registers a host in its own transaction (tests and benchmarks; agents enroll through the mesh). Returns the host id. */
export async function registerHost(pool: Pool, registration: Registration): Promise<string> {
  return await transaction(pool, async (c) => {
    const { id, events } = await upsertHost(c, registration)
    await appendEvents(c, events)
    return id
  })
}

/** Heartbeats seen since the last flush: last_seen_at, in one statement. */
export async function touchHosts(pool: Pool, ids: string[]): Promise<void> {
  if (ids.length > 0) await pool.query('update hosts set last_seen_at = now() where id = any($1::uuid[])', [ids])
}

export async function getHost(db: Pool | Client, id: string): Promise<Host> {
  const { rows } = await db.query<HostRow>(`${SELECT_HOST} where h.id = $1 and ${LIVE}`, [id])
  const row = rows[0]
  if (row === undefined) throw new StoreError('not-found', `no host ${id}`)
  return toHost(row)
}

export async function listHosts(
  pool: Pool,
  limit: number,
  cursor?: string
): Promise<{ items: Host[]; nextCursor: string | null }> {
  const after = decodeCursor(cursor, ['string', 'string'])
  const { rows } = await pool.query<HostRow & { sort_ts: string }>(
    `select h.*, ${FREE_GPUS}, ${GPU_HEALTH}, ${sortTs('h.registered_at')} from hosts h where ${LIVE} and ($1::timestamptz is null or (h.registered_at, h.id) > ($1::timestamptz, $2::uuid))
     order by h.registered_at, h.id limit $3`,
    [after?.[0] ?? null, after?.[1] ?? null, limit + 1]
  )
  return page(rows, limit, toHost, (r) => [r.sort_ts, r.id])
}

/** Operator actions: cordon (no new work), uncordon (back to ready), drain (no new work; existing work is stopped by the agent). */
export async function setHostState(
  pool: Pool,
  id: string,
  action: 'cordon' | 'uncordon' | 'drain',
  reason: string | null
): Promise<Host> {
  const state: HostState = action === 'cordon' ? 'cordoned' : action === 'drain' ? 'draining' : 'ready'
  return await transaction(pool, async (c) => {
    const { rows } = await c.query<{ state: HostState }>(
      'select state from hosts where id = $1 and revoked_at is null for update',
      [id]
    )
    const before = rows[0]?.state
    if (before === undefined) throw new StoreError('not-found', `no host ${id}`)
    // Uncordon lifts an operator's hold only; it does not revive a down host.
    const change = before !== state && (action !== 'uncordon' || before === 'cordoned' || before === 'draining')
    if (change) {
      await c.query('update hosts set state = $2, state_reason = $3, updated_at = now() where id = $1', [
        id,
        state,
        reason
      ])
      const events: NewEvent[] = [
        { type: 'host.state-changed', subjectKind: 'host', subjectId: id, data: { from: before, to: state, reason } }
      ]
      // Draining moves the host's work elsewhere; the agent is told to stop it.
      if (state === 'draining')
        events.push(...(await loseHostPlacements(c, id, `host drained${reason === null ? '' : `: ${reason}`}`)))
      await appendEvents(c, events)
    }
    return await getHost(c, id)
  })
}

/** A host's registration epoch (0 when unknown): it rises with every session. */
export async function hostEpoch(pool: Pool, id: string): Promise<number> {
  const { rows } = await pool.query<{ epoch: string }>('select epoch from hosts where id = $1', [id])
  return Number(rows[0]?.epoch ?? 0)
}

/** A condition the host's agent reported begins or ends; an event `host.condition` when that changes anything. */
export async function setHostCondition(
  pool: Pool,
  id: string,
  condition: string,
  active: boolean,
  detail: string
): Promise<void> {
  await transaction(pool, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      active
        ? `update hosts set conditions = conditions || jsonb_build_object($2::text, jsonb_build_object('detail', $3::text, 'since', now()))
           where id = $1 and not conditions ? $2 returning id`
        : 'update hosts set conditions = conditions - $2::text where id = $1 and conditions ? $2 and $3::text is not null returning id',
      [id, condition, detail]
    )
    if (rows.length === 0) return
    await appendEvents(c, [
      { type: 'host.condition', subjectKind: 'host', subjectId: id, data: { condition, active, detail } }
    ])
  })
}
