// Scaling and rolling updates of endpoints, as the database records them.
// PATCH /v1/workloads/:id changes the spec (and, for run/serve, raises the
// generation and opens a roll); the leader's roll loop (rollout/loop.ts)
// reads endpointsToReconcile and applies one action at a time with the
// functions below, each a transaction that writes its events.
import { isDeepStrictEqual } from 'node:util'
import type { WorkloadPatch } from '../../protocol/api.js'
import type { EndpointSpec, WorkloadSpec } from '../../protocol/workload.js'
import { transaction, type Client, type Pool } from './db.js'
import { StoreError } from './errors.js'
import { stopPlacements } from './lifecycle.js'
import { appendEvents, type NewEvent } from './outbox.js'
import { pruneEnded } from './restarts.js'
import { ACTIVE_PLACEMENT_STATES } from './sql.js'

/** How long a roll's new replica may take to become ready when its spec sets no serve.startupSeconds. */
export const DEFAULT_STARTUP_SECONDS = 600

interface Locked {
  id: string
  name: string
  kind: WorkloadSpec['kind']
  spec: WorkloadSpec
  state: string
  generation: number
}

async function lockWorkload(c: Client, id: string): Promise<Locked | null> {
  const { rows } = await c.query<Locked>(
    'select id, name, kind, spec, state, generation from workloads where id = $1 for update',
    [id]
  )
  const w = rows[0]
  return w === undefined || w.state === 'deleted' ? null : w
}

const workloadEvent = (type: string, id: string, data: Record<string, unknown>): NewEvent => ({
  type: `workload.${type}`,
  subjectKind: 'workload',
  subjectId: id,
  data
})

/**
 * Scales (`replicas`) and/or rolls (`run`, `serve`) an endpoint. A run or serve equal to the current one
 * changes nothing. The workload goes back to pending so the scheduler places what is missing (new replicas,
 * or the roll's first new one); the roll loop removes what is too many.
 */
export async function patchWorkload(pool: Pool, id: string, patch: WorkloadPatch): Promise<void> {
  await transaction(pool, async (c) => {
    const w = await lockWorkload(c, id)
    if (w === null) throw new StoreError('not-found', `no workload ${id}`)
    if (w.spec.kind !== 'endpoint')
      throw new StoreError(
        'not-an-endpoint',
        `${w.name} is a ${w.kind}: only endpoints scale and roll; delete it and create it again to change it`
      )
    const spec: EndpointSpec = w.spec
    const next: EndpointSpec = { ...spec }
    const events: NewEvent[] = []
    if (patch.replicas !== undefined && patch.replicas !== spec.replicas) {
      next.replicas = patch.replicas
      events.push(workloadEvent('scaled', id, { from: spec.replicas, to: patch.replicas }))
    }
    const rolls =
      (patch.run !== undefined && !isDeepStrictEqual(patch.run, spec.run)) ||
      (patch.serve !== undefined && !isDeepStrictEqual(patch.serve, spec.serve))
    let generation = w.generation
    if (rolls) {
      if (patch.run !== undefined) next.run = patch.run
      if (patch.serve !== undefined) next.serve = patch.serve
      // A stopped roll went back to an older generation; its number is not handed out twice.
      const { rows } = await c.query<{ generation: number; ready: number }>(
        `select greatest($2::int, (select generation from rollouts where workload_id = $1)) + 1 as generation,
           (select count(*)::int from placements where workload_id = $1 and ready and state = any($3::text[])) as ready`,
        [id, w.generation, ACTIVE_PLACEMENT_STATES]
      )
      const row = rows[0] as { generation: number; ready: number }
      generation = row.generation
      // A roll started over mid-way keeps at most `replicas` ready ones (its surge may be ready too).
      const readyBefore = Math.min(row.ready, next.replicas)
      await c.query(
        `insert into rollouts (workload_id, generation, state, ready_before) values ($1, $2, 'rolling', $3)
         on conflict (workload_id) do update set generation = excluded.generation, state = 'rolling',
           ready_before = excluded.ready_before, step_started_at = now(), new_ready_since = null, reason = null,
           started_at = now(), updated_at = now()`,
        [id, generation, readyBefore]
      )
      events.push(workloadEvent('rollout-started', id, { generation, from: w.generation, readyBefore }))
    }
    if (events.length === 0) return
    await c.query(
      `update workloads set spec = $2, generation = $3, surge = case when $4 then 1 else surge end,
         state = 'pending', reason = 'waiting for the scheduler', updated_at = now() where id = $1`,
      [id, JSON.stringify(next), generation, rolls]
    )
    await appendEvents(c, events)
  })
}

export interface ActiveRow {
  id: string
  replica: number
  generation: number
  ready: boolean
  /** ms since the epoch */
  createdAt: number
}

export interface EndpointRow {
  id: string
  spec: EndpointSpec
  state: string
  surge: number
  active: ActiveRow[]
  /** The roll in progress: its generation, the ready floor, when its step began (ms since the epoch). */
  roll: { generation: number; readyBefore: number; stepStartedAt: number; readySince: number | null } | null
  /** A replica of the rolled-to generation that ended badly during the current step. */
  failed: { replica: number; state: string; exitCode: number | null; reason: string | null } | null
  /** The database's clock (ms since the epoch): step times are judged against it. */
  now: number
}

const EPOCH_MS = (column: string) => `(extract(epoch from ${column}) * 1000)::float8`

/** Endpoints with a roll in progress or more active replicas than they want. */
export async function endpointsToReconcile(pool: Pool): Promise<EndpointRow[]> {
  const { rows } = await pool.query<EndpointRow>(
    `select w.id, w.spec, w.state, w.surge, ${EPOCH_MS('now()')} as now,
       coalesce((select jsonb_agg(jsonb_build_object('id', p.id, 'replica', p.replica, 'generation', p.generation,
           'ready', p.ready, 'createdAt', ${EPOCH_MS('p.created_at')}))
         from placements p where p.workload_id = w.id and p.state = any($1::text[])), '[]') as active,
       case when r.workload_id is null then null else jsonb_build_object('generation', r.generation,
         'readyBefore', r.ready_before, 'stepStartedAt', ${EPOCH_MS('r.step_started_at')},
         'readySince', ${EPOCH_MS('r.new_ready_since')}) end as roll,
       (select jsonb_build_object('replica', p.replica, 'state', p.state, 'exitCode', p.exit_code, 'reason', p.reason)
         from placements p where p.workload_id = w.id and p.generation = r.generation
           and p.state in ('failed', 'exited') and p.ended_at >= r.step_started_at
         order by p.ended_at limit 1) as failed
     from workloads w left join rollouts r on r.workload_id = w.id and r.state = 'rolling'
     where w.kind = 'endpoint' and w.state <> 'deleted' and (r.workload_id is not null
       or (select count(*) from placements p where p.workload_id = w.id and p.state = any($1::text[]))
          > (w.spec->>'replicas')::int + w.surge)`,
    [ACTIVE_PLACEMENT_STATES]
  )
  return rows
}

async function rollingGeneration(c: Client, id: string): Promise<number | null> {
  const { rows } = await c.query<{ generation: number }>(
    "select generation from rollouts where workload_id = $1 and state = 'rolling'",
    [id]
  )
  return rows[0]?.generation ?? null
}

/**
 * Stops one replica (already drained by the caller when it was ready). `rolled`: an old replica whose
 * place a ready new one took; the roll then asks for its next new replica, or completes when no old one is
 * left. Returns false when nothing was done (the placement or the workload went meanwhile).
 */
export async function removeReplica(
  pool: Pool,
  workloadId: string,
  placementId: string,
  why: 'scale-down' | 'rolled'
): Promise<boolean> {
  return await transaction(pool, async (c) => {
    if ((await lockWorkload(c, workloadId)) === null) return false
    const generation = await rollingGeneration(c, workloadId)
    const reason = why === 'rolled' ? `replaced by generation ${generation ?? '?'}` : 'scaled down'
    const events = await stopPlacements(c, workloadId, reason, [placementId])
    const stopped = events[0]
    if (stopped === undefined) return false
    await pruneEnded(c, workloadId, [stopped.data?.replica as number])
    if (why === 'rolled' && generation !== null) events.push(...(await nextStep(c, workloadId, generation)))
    await appendEvents(c, events)
    return true
  })
}

/** After an old replica went: the next new replica is asked for, or the roll is done. */
async function nextStep(c: Client, workloadId: string, generation: number): Promise<NewEvent[]> {
  const { rows } = await c.query<{ old: number; fresh: number }>(
    `select count(*) filter (where generation < $2)::int as old, count(*) filter (where generation >= $2)::int as fresh
     from placements where workload_id = $1 and state = any($3::text[])`,
    [workloadId, generation, ACTIVE_PLACEMENT_STATES]
  )
  const { old, fresh } = rows[0] as { old: number; fresh: number }
  if (old === 0) return await complete(c, workloadId, generation)
  return await surge(c, workloadId, generation, { old, new: fresh })
}

async function surge(
  c: Client,
  workloadId: string,
  generation: number,
  counts: Record<string, number>
): Promise<NewEvent[]> {
  await c.query('update rollouts set step_started_at = now(), updated_at = now() where workload_id = $1', [workloadId])
  await c.query(
    "update workloads set state = 'pending', reason = $2, updated_at = now() where id = $1 and state <> 'deleted'",
    [workloadId, `rolling out generation ${generation}: placing a new replica`]
  )
  return [workloadEvent('rollout-progress', workloadId, { generation, ...counts })]
}

async function complete(c: Client, workloadId: string, generation: number): Promise<NewEvent[]> {
  await c.query("update rollouts set state = 'completed', updated_at = now() where workload_id = $1", [workloadId])
  await c.query('update workloads set surge = 0, updated_at = now() where id = $1', [workloadId])
  return [workloadEvent('rollout-completed', workloadId, { generation })]
}

/** Asks the scheduler for the step's new replica again (the roll lost it, e.g. after a restart of its host). */
export async function requestSurge(pool: Pool, workloadId: string): Promise<void> {
  await transaction(pool, async (c) => {
    if ((await lockWorkload(c, workloadId)) === null) return
    const generation = await rollingGeneration(c, workloadId)
    if (generation === null) return
    await appendEvents(c, await surge(c, workloadId, generation, {}))
  })
}

/** The step's new replicas are all ready from now on (the roll waits a moment before an old one goes). */
export async function noteReady(pool: Pool, workloadId: string): Promise<void> {
  await pool.query(
    "update rollouts set new_ready_since = now(), updated_at = now() where workload_id = $1 and state = 'rolling' and new_ready_since is null",
    [workloadId]
  )
}

/** Every replica runs the new generation. */
export async function completeRollout(pool: Pool, workloadId: string): Promise<void> {
  await transaction(pool, async (c) => {
    if ((await lockWorkload(c, workloadId)) === null) return
    const generation = await rollingGeneration(c, workloadId)
    if (generation === null) return
    await appendEvents(c, await complete(c, workloadId, generation))
  })
}

/**
 * The roll's new replica did not become ready: it is removed (`remove`, none of them ready), the roll stops
 * with `reason`, and the workload goes back to the spec of its newest older generation still running, so
 * that a restarted old replica runs what the others run.
 */
export async function stopRollout(pool: Pool, workloadId: string, remove: string[], reason: string): Promise<void> {
  await transaction(pool, async (c) => {
    const w = await lockWorkload(c, workloadId)
    if (w === null || w.spec.kind !== 'endpoint') return
    const generation = await rollingGeneration(c, workloadId)
    if (generation === null) return
    const events = await stopPlacements(c, workloadId, reason, remove)
    const { rows } = await c.query<{ spec: WorkloadSpec | null; generation: number; active: number }>(
      `select (select p.spec from placements p where p.workload_id = $1 and p.generation < $2 and p.state = any($3::text[])
           order by p.generation desc limit 1) as spec,
         coalesce((select max(p.generation) from placements p where p.workload_id = $1 and p.generation < $2
           and p.state = any($3::text[])), $4) as generation,
         (select count(*)::int from placements p where p.workload_id = $1 and p.state = any($3::text[])) as active`,
      [workloadId, generation, ACTIVE_PLACEMENT_STATES, w.generation]
    )
    const back = rows[0] as { spec: WorkloadSpec | null; generation: number; active: number }
    const spec: EndpointSpec = { ...w.spec }
    if (back.spec?.kind === 'endpoint') {
      spec.run = back.spec.run
      if (back.spec.serve === undefined) delete spec.serve
      else spec.serve = back.spec.serve
    }
    await c.query("update rollouts set state = 'stopped', reason = $2, updated_at = now() where workload_id = $1", [
      workloadId,
      reason
    ])
    await c.query(
      'update workloads set spec = $2, generation = $3, surge = 0, state = $4, reason = $5, updated_at = now() where id = $1',
      [workloadId, JSON.stringify(spec), back.generation, back.active >= spec.replicas ? 'placed' : 'pending', reason]
    )
    events.push(
      workloadEvent('rollout-stopped', workloadId, { generation, reason, runningGeneration: back.generation })
    )
    await appendEvents(c, events)
  })
}
