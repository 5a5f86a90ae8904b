// Workloads and their placements: create (checked against live pools),
// read, list, delete. Placing is the scheduler's (store/placements.ts).
import type { Placement, PlacementState, PoolKind, Rollout, Workload, WorkloadState } from '../../protocol/api.js'
import { StoreError } from './errors.js'
import type { WorkloadSpec } from '../../protocol/workload.js'
import { appendEvents } from './outbox.js'
import { decodeCursor, page } from './cursor.js'
import { transaction, type Client, type Pool } from './db.js'
import { POOL_KINDS_FOR } from '../scheduler/reasons.js'
import { ACTIVE_PLACEMENT_STATES, sortTs } from './sql.js'

interface WorkloadRow {
  id: string
  name: string
  kind: WorkloadSpec['kind']
  spec: WorkloadSpec
  state: WorkloadState
  reason: string | null
  generation: number
  rollout: Rollout | null
  team_id: string | null
  team_name: string | null
  created_at: Date
  updated_at: Date
}

/**
 * Whose workloads a caller sees: a team token's team (teamId), or the whole
 * cluster (null). Outside its scope a workload does not exist: the same
 * not-found as an unknown id, so a team cannot learn of another's work.
 */
export interface Scope {
  teamId: string | null
}
export const CLUSTER: Scope = { teamId: null }

/** Workload rows (`w`) with their last rolling update (store/rollouts.ts), as toWorkload reads them. */
const selectWorkload = (
  extra = ''
) => `select w.*,${extra} (select jsonb_build_object('generation', r.generation, 'state', r.state,
    'readyBefore', r.ready_before, 'reason', r.reason,
    'startedAt', to_char(r.started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'updatedAt', to_char(r.updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
  from rollouts r where r.workload_id = w.id) as rollout,
  (select t.name from teams t where t.id = w.team_id) as team_name from workloads w`
const SELECT_WORKLOAD = selectWorkload()

interface PlacementRow {
  id: string
  workload_id: string
  host_id: string
  host_name: string
  replica: number
  gpus: number[]
  state: PlacementState
  exit_code: number | null
  reason: string | null
  port: number | null
  ready: boolean
  generation: number
  created_at: Date
  updated_at: Date
}

export const SELECT_PLACEMENT = 'select p.*, h.name as host_name from placements p join hosts h on h.id = p.host_id'

export function toPlacement(r: PlacementRow): Placement {
  return {
    id: r.id,
    workloadId: r.workload_id,
    hostId: r.host_id,
    hostName: r.host_name,
    replica: r.replica,
    gpus: r.gpus,
    state: r.state,
    exitCode: r.exit_code,
    reason: r.reason,
    port: r.port,
    ready: r.ready,
    generation: r.generation,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString()
  }
}

function toWorkload(r: WorkloadRow, placements: PlacementRow[]): Workload {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    state: r.state,
    reason: r.reason,
    spec: r.spec,
    generation: r.generation,
    placements: placements.filter((p) => p.workload_id === r.id).map(toPlacement),
    rollout: r.rollout ?? null,
    team: r.team_name ?? null,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString()
  }
}

/** Refuses what can never be placed: unknown pools, wrong pool kinds, more GPUs than any host of the pools has. */
async function checkPools(c: Client, spec: WorkloadSpec): Promise<void> {
  const keys = spec.kind === 'endpoint' ? spec.pools : [spec.pool]
  const { rows } = await c.query<{ key: string; kind: PoolKind; max_gpus: number | null }>(
    `select p.key, p.kind, (select max(h.gpu_count) from hosts h where h.pool_key = p.key and h.revoked_at is null) as max_gpus
     from pools p where p.key = any($1::text[])`,
    [keys]
  )
  const missing = keys.filter((k) => !rows.some((r) => r.key === k))
  if (missing.length > 0)
    throw new StoreError('unknown-pool', `no pool ${missing.join(', ')} (pools appear when their first host registers)`)
  const allowed = POOL_KINDS_FOR[spec.kind]
  const wrong = rows.filter((r) => !allowed.includes(r.kind))
  if (wrong.length > 0) {
    throw new StoreError(
      'pool-kind',
      `${wrong.map((r) => `pool ${r.key} is a ${r.kind} pool`).join('; ')}; ${spec.kind}s run on ${allowed.join(' or ')} pools`
    )
  }
  const largest = Math.max(...rows.map((r) => r.max_gpus ?? 0))
  if (spec.gpus > largest) {
    throw new StoreError(
      'not-enough-gpus',
      `${spec.gpus} GPUs per ${spec.kind === 'endpoint' ? 'replica' : 'host'} asked; the largest host in ${keys.join(', ')} has ${largest}`
    )
  }
}

export async function createWorkload(pool: Pool, spec: WorkloadSpec, scope: Scope = CLUSTER): Promise<Workload> {
  return await transaction(pool, async (c) => {
    await checkPools(c, spec)
    let row: WorkloadRow
    try {
      const { rows } = await c.query<WorkloadRow>(
        `insert into workloads (name, kind, spec, reason, team_id) values ($1, $2, $3, $4, $5)
         returning *, null as rollout, (select t.name from teams t where t.id = $5) as team_name`,
        [spec.name, spec.kind, JSON.stringify(spec), 'waiting for the scheduler', scope.teamId]
      )
      row = rows[0] as WorkloadRow
    } catch (err) {
      if ((err as { code?: string }).code === '23505')
        throw new StoreError('name-taken', `a live workload is already named ${spec.name}`)
      throw err
    }
    await appendEvents(c, [
      {
        type: 'workload.created',
        subjectKind: 'workload',
        subjectId: row.id,
        data: { name: spec.name, kind: spec.kind, ...(row.team_name === null ? {} : { team: row.team_name }) }
      }
    ])
    return toWorkload(row, [])
  })
}

export async function getWorkload(db: Pool | Client, id: string, scope: Scope = CLUSTER): Promise<Workload> {
  const { rows } = await db.query<WorkloadRow>(`${SELECT_WORKLOAD} where w.id = $1`, [id])
  const row = rows[0]
  if (row === undefined || !inScope(row, scope)) throw new StoreError('not-found', `no workload ${id}`)
  const placements = await db.query<PlacementRow>(
    `${SELECT_PLACEMENT} where p.workload_id = $1 order by p.replica, p.created_at`,
    [id]
  )
  return toWorkload(row, placements.rows)
}

const inScope = (r: { team_id: string | null }, scope: Scope): boolean =>
  scope.teamId === null || r.team_id === scope.teamId

/** Throws not-found unless workload `id` exists, is not deleted, and is in `scope`. */
export async function checkWorkloadScope(db: Pool | Client, id: string, scope: Scope): Promise<void> {
  if (scope.teamId === null) return
  const { rows } = await db.query<{ team_id: string | null }>(
    "select team_id from workloads where id = $1 and state <> 'deleted'",
    [id]
  )
  const row = rows[0]
  if (row === undefined || !inScope(row, scope)) throw new StoreError('not-found', `no workload ${id}`)
}

export async function listWorkloads(
  pool: Pool,
  limit: number,
  cursor?: string,
  scope: Scope = CLUSTER
): Promise<{ items: Workload[]; nextCursor: string | null }> {
  const after = decodeCursor(cursor, ['string', 'string'])
  const { rows } = await pool.query<WorkloadRow & { sort_ts: string }>(
    `${selectWorkload(` ${sortTs('w.created_at')},`)}
     where w.state <> 'deleted' and ($1::timestamptz is null or (w.created_at, w.id) > ($1::timestamptz, $2::uuid))
       and ($4::uuid is null or w.team_id = $4)
     order by w.created_at, w.id limit $3`,
    [after?.[0] ?? null, after?.[1] ?? null, limit + 1, scope.teamId]
  )
  const ids = rows.slice(0, limit).map((r) => r.id)
  const placements = await pool.query<PlacementRow>(
    `${SELECT_PLACEMENT} where p.workload_id = any($1::uuid[]) order by p.replica, p.created_at`,
    [ids]
  )
  return page(
    rows,
    limit,
    (r) => toWorkload(r, placements.rows),
    (r) => [r.sort_ts, r.id]
  )
}

/** Deletes a workload: its active placements stop and their GPUs are released. */
export async function deleteWorkload(pool: Pool, id: string, scope: Scope = CLUSTER): Promise<Workload> {
  await transaction(pool, async (c) => {
    const { rows } = await c.query<{ state: WorkloadState; team_id: string | null }>(
      'select state, team_id from workloads where id = $1 for update',
      [id]
    )
    const row = rows[0]
    if (row === undefined || row.state === 'deleted' || !inScope(row, scope))
      throw new StoreError('not-found', `no workload ${id}`)
    const stopped = await c.query<{ id: string; host_id: string; gpus: number[] }>(
      `update placements set state = 'stopped', ready = false, reason = 'workload deleted', updated_at = now()
       where workload_id = $1 and state = any($2::text[]) returning id, host_id, gpus`,
      [id, ACTIVE_PLACEMENT_STATES]
    )
    await c.query(
      'update gpu_allocations set active = false, released_at = now() where placement_id = any($1::uuid[]) and active',
      [stopped.rows.map((p) => p.id)]
    )
    await c.query("update workloads set state = 'deleted', reason = null, updated_at = now() where id = $1", [id])
    await appendEvents(c, [
      ...stopped.rows.map((p) => ({
        type: 'placement.stopped',
        subjectKind: 'placement' as const,
        subjectId: p.id,
        data: { workload: id, host: p.host_id, gpus: p.gpus, reason: 'workload deleted' }
      })),
      { type: 'workload.deleted', subjectKind: 'workload', subjectId: id, data: {} }
    ])
  })
  return await getWorkload(pool, id)
}

export async function listPlacements(
  pool: Pool,
  limit: number,
  cursor?: string,
  scope: Scope = CLUSTER
): Promise<{ items: Placement[]; nextCursor: string | null }> {
  const after = decodeCursor(cursor, ['string', 'string'])
  const { rows } = await pool.query<PlacementRow & { sort_ts: string }>(
    `select p.*, h.name as host_name, ${sortTs('p.created_at')} from placements p join hosts h on h.id = p.host_id
     where ($1::timestamptz is null or (p.created_at, p.id) > ($1::timestamptz, $2::uuid))
       and ($4::uuid is null or p.workload_id in (select w.id from workloads w where w.team_id = $4))
     order by p.created_at, p.id limit $3`,
    [after?.[0] ?? null, after?.[1] ?? null, limit + 1, scope.teamId]
  )
  return page(rows, limit, toPlacement, (r) => [r.sort_ts, r.id])
}

export async function getPlacement(db: Pool | Client, id: string, scope: Scope = CLUSTER): Promise<Placement> {
  const { rows } = await db.query<PlacementRow & { team_id: string | null }>(
    `select p.*, h.name as host_name, w.team_id from placements p join hosts h on h.id = p.host_id
     join workloads w on w.id = p.workload_id where p.id = $1`,
    [id]
  )
  const row = rows[0]
  if (row === undefined || !inScope(row, scope)) throw new StoreError('not-found', `no placement ${id}`)
  return toPlacement(row)
}
