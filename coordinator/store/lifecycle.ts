// What happens when placements end or hosts fail, in one place: GPUs are
// released and each workload kind follows its policy.
//   endpoint  a lost or ended replica is placed again (back to pending)
//   recipe    all ranks exited 0 -> completed; a rank failed, exited non-zero
//             or was lost -> the other ranks stop; restart "never" -> failed,
//             "on-failure" -> the gang is placed again
//   session   its command ended -> completed (exit 0) or failed; host lost -> failed;
//             its GPU failed -> placed again (the host is fine: the session starts anew elsewhere)
import type { HostState, PlacementState } from '../../protocol/api.js'
import type { RunningPlacement } from '../../protocol/control.js'
import type { WorkloadSpec } from '../../protocol/workload.js'
import { appendEvents, type NewEvent } from './outbox.js'
import { transaction, type Client, type Pool } from './db.js'
import { backoffReason, pruneEnded, recordCrash, type ReplicaBackoff } from './restarts.js'
import { ACTIVE_PLACEMENT_STATES } from './sql.js'

const TERMINAL: PlacementState[] = ['exited', 'failed', 'stopped', 'lost']

interface Ending {
  id: string
  workload_id: string
  host_id: string
  replica: number
  gpus: number[]
  state: PlacementState
  exit_code: number | null
  started_at: Date | null
}

/**
 * Ends placements (with `state`), releases their GPUs, applies each workload's policy. Returns the events to append.
 * `crashed`: the agent reported the end (the workload's own doing), so a restart waits (restarts.ts); a host
 * that went away is not the workload's fault and its replicas are placed again at once.
 */
async function endPlacements(
  c: Client,
  ended: Ending[],
  reason: string | null,
  crashed: boolean,
  /** Lost sessions go back to pending instead of failing (their GPU failed, not their command). */
  replaceSessions = false
): Promise<NewEvent[]> {
  if (ended.length === 0) return []
  const events: NewEvent[] = []
  await c.query(
    'update gpu_allocations set active = false, released_at = now() where placement_id = any($1::uuid[]) and active',
    [ended.map((p) => p.id)]
  )
  for (const p of ended) {
    events.push({
      type: `placement.${p.state}`,
      subjectKind: 'placement',
      subjectId: p.id,
      data: {
        workload: p.workload_id,
        host: p.host_id,
        replica: p.replica,
        gpus: p.gpus,
        exitCode: p.exit_code,
        reason
      }
    })
  }
  const workloads = [...new Set(ended.map((p) => p.workload_id))]
  const { rows } = await c.query<{ id: string; spec: WorkloadSpec; state: string }>(
    'select id, spec, state from workloads where id = any($1::uuid[]) for update',
    [workloads]
  )
  for (const w of rows) {
    const mine = ended.filter((p) => p.workload_id === w.id)
    await pruneEnded(
      c,
      w.id,
      mine.map((p) => p.replica)
    )
    if (w.state === 'deleted' || w.state === 'completed' || w.state === 'failed') continue
    const bad = mine.filter(
      (p) => p.state === 'lost' || p.state === 'failed' || (p.state === 'exited' && p.exit_code !== 0)
    )
    const why = bad[0] === undefined ? reason : describe(bad[0], reason)
    const waiting: ReplicaBackoff[] = []
    const restarts = w.spec.kind === 'endpoint' || (w.spec.kind === 'recipe' && w.spec.restart === 'on-failure')
    if (crashed && restarts)
      for (const p of w.spec.kind === 'endpoint' ? mine.filter((p) => p.state !== 'stopped') : bad)
        waiting.push(
          await recordCrash(c, {
            workloadId: w.id,
            replica: p.replica,
            startedAt: p.started_at,
            why: describe(p, reason)
          })
        )
    if (w.spec.kind === 'endpoint') {
      if (mine.some((p) => p.state !== 'stopped'))
        events.push(
          ...(await setWorkload(
            c,
            w.id,
            'pending',
            waiting.length > 0
              ? backoffReason(waiting)
              : `replica ${mine.map((p) => p.replica).join(', ')} ${why ?? 'ended'}; placing it again`
          ))
        )
    } else if (w.spec.kind === 'session' && replaceSessions && mine.some((p) => p.state === 'lost')) {
      events.push(...(await setWorkload(c, w.id, 'pending', `${why ?? 'lost'}; placing the session again`)))
    } else if (w.spec.kind === 'session') {
      if (mine.some((p) => p.state !== 'stopped'))
        events.push(...(await setWorkload(c, w.id, bad.length === 0 ? 'completed' : 'failed', why)))
    } else if (bad.length > 0) {
      events.push(...(await stopPlacements(c, w.id, `rank ${bad[0]?.replica ?? '?'} ${why ?? 'failed'}`)))
      events.push(
        ...(await setWorkload(
          c,
          w.id,
          w.spec.restart === 'on-failure' ? 'pending' : 'failed',
          w.spec.restart !== 'on-failure'
            ? why
            : waiting.length > 0
              ? backoffReason(waiting)
              : `${why ?? 'a rank failed'}; restarting the gang`
        ))
      )
    } else if (mine.some((p) => p.state === 'exited')) {
      const { rows: left } = await c.query<{ n: number }>(
        'select count(*)::int as n from placements where workload_id = $1 and state = any($2::text[])',
        [w.id, ACTIVE_PLACEMENT_STATES]
      )
      if ((left[0]?.n ?? 0) === 0) events.push(...(await setWorkload(c, w.id, 'completed', null)))
    }
  }
  return events
}

function describe(p: Ending, reason: string | null): string {
  if (p.state === 'lost') return `lost (${reason ?? 'host down'})`
  if (p.state === 'exited') return `exited with code ${p.exit_code ?? '?'}`
  return `failed${reason === null ? '' : `: ${reason}`}`
}

async function setWorkload(
  c: Client,
  id: string,
  state: 'pending' | 'completed' | 'failed',
  reason: string | null
): Promise<NewEvent[]> {
  await c.query('update workloads set state = $2, reason = $3, updated_at = now() where id = $1', [id, state, reason])
  return [{ type: `workload.${state}`, subjectKind: 'workload', subjectId: id, data: { reason } }]
}

/**
 * Stops a workload's active placements (only those of `ids`, when given: a gang member failed and the
 * others stop; a replica scaled down or rolled) and releases their GPUs at once: the dispatcher turns
 * each placement.stopped event into a stop frame (SIGTERM, the grace period, SIGKILL), and an agent
 * starts nothing on GPUs a stopping placement still holds.
 */
export async function stopPlacements(
  c: Client,
  workloadId: string,
  reason: string,
  ids: string[] | null = null
): Promise<NewEvent[]> {
  const { rows } = await c.query<Ending>(
    `update placements set state = 'stopped', ready = false, reason = $2, ended_at = now(), updated_at = now()
     where workload_id = $1 and state = any($3::text[]) and ($4::uuid[] is null or id = any($4::uuid[])) returning *`,
    [workloadId, reason, ACTIVE_PLACEMENT_STATES, ids]
  )
  await c.query(
    'update gpu_allocations set active = false, released_at = now() where placement_id = any($1::uuid[]) and active',
    [rows.map((p) => p.id)]
  )
  return rows.map((p) => ({
    type: 'placement.stopped',
    subjectKind: 'placement' as const,
    subjectId: p.id,
    data: { workload: workloadId, host: p.host_id, replica: p.replica, gpus: p.gpus, reason }
  }))
}

/**
 * Whether a report makes a placement ready: its readiness probe passed (the agent says so), or, for a
 * placement without a probe (no `serve.readiness`, a recipe, a session), its process runs.
 */
export function readyFrom(report: RunningPlacement, spec: WorkloadSpec | null): boolean {
  if (report.state !== 'running') return false
  const probed = spec?.kind === 'endpoint' && spec.serve?.readiness !== undefined
  return report.ready ?? !probed
}

/** An agent's report on one placement. Reports about placements not active on that host are ignored (stale). */
export async function recordStatus(pool: Pool, hostId: string, report: RunningPlacement): Promise<void> {
  await transaction(pool, async (c) => {
    const { rows } = await c.query<Ending & { ready: boolean; spec: WorkloadSpec | null }>(
      `select p.*, coalesce(p.spec, w.spec) as spec from placements p join workloads w on w.id = p.workload_id
       where p.id = $1 and p.host_id = $2 and p.state = any($3::text[]) for update of p`,
      [report.placementId, hostId, ACTIVE_PLACEMENT_STATES]
    )
    const current = rows[0]
    if (current === undefined) return
    const state: PlacementState = report.state
    const ready = readyFrom(report, current.spec)
    if (state === current.state && ready === current.ready) return
    await c.query(
      `update placements set state = $2, exit_code = $3, reason = coalesce($4, reason), updated_at = now(), ready = $6,
         started_at = case when $2 = 'running' then coalesce(started_at, now()) else started_at end,
         ended_at = case when $2 = any($5::text[]) then now() else ended_at end
       where id = $1`,
      [current.id, state, report.exitCode, report.reason, TERMINAL, ready]
    )
    const data = { workload: current.workload_id, host: hostId, replica: current.replica }
    const events: NewEvent[] = TERMINAL.includes(state)
      ? await endPlacements(c, [{ ...current, state, exit_code: report.exitCode }], report.reason, true)
      : state === current.state
        ? []
        : [{ type: `placement.${state}`, subjectKind: 'placement', subjectId: current.id, data }]
    if (ready !== current.ready && !TERMINAL.includes(state))
      events.push({
        type: ready ? 'placement.ready' : 'placement.unready',
        subjectKind: 'placement',
        subjectId: current.id,
        data
      })
    await appendEvents(c, events)
  })
}

/** Host state changes by the failure detector; operator states (cordoned, draining) are kept when a host comes back. */
export async function setLiveness(
  pool: Pool,
  hostId: string,
  to: 'ready' | 'suspect' | 'down',
  reason: string | null
): Promise<HostState | null> {
  return await transaction(pool, async (c) => {
    const { rows } = await c.query<{ state: HostState }>(
      'select state from hosts where id = $1 and revoked_at is null for update',
      [hostId]
    )
    const from = rows[0]?.state
    if (from === undefined) return null
    if (from === 'cordoned' || from === 'draining' || from === 'quarantined') {
      if (to !== 'down') return from
    }
    if (from === to) return from
    await c.query('update hosts set state = $2, state_reason = $3, updated_at = now() where id = $1', [
      hostId,
      to,
      reason
    ])
    const events: NewEvent[] = [
      { type: 'host.state-changed', subjectKind: 'host', subjectId: hostId, data: { from, to, reason } }
    ]
    if (to === 'down') events.push(...(await loseHostPlacements(c, hostId, reason ?? 'host down')))
    await appendEvents(c, events)
    return to
  })
}

/** Ends every active placement of a host as lost (host down, revoked or drained); their workloads follow their policies. */
export async function loseHostPlacements(c: Client, hostId: string, reason: string): Promise<NewEvent[]> {
  const { rows } = await c.query<Ending>(
    `update placements set state = 'lost', ready = false, reason = $2, ended_at = now(), updated_at = now()
     where host_id = $1 and state = any($3::text[]) returning *`,
    [hostId, reason, ACTIVE_PLACEMENT_STATES]
  )
  return await endPlacements(c, rows, reason, false)
}

/**
 * Ends the active placements of a host that hold any of `gpus` as lost (those GPUs failed): endpoint
 * replicas and sessions are placed again at once, recipes follow their restart policy (the whole gang).
 */
export async function loseGpuPlacements(
  c: Client,
  hostId: string,
  gpus: number[],
  reason: string
): Promise<NewEvent[]> {
  if (gpus.length === 0) return []
  const { rows } = await c.query<Ending>(
    `update placements set state = 'lost', ready = false, reason = $2, ended_at = now(), updated_at = now()
     where host_id = $1 and state = any($3::text[]) and gpus && $4::int[] returning *`,
    [hostId, reason, ACTIVE_PLACEMENT_STATES, gpus]
  )
  return await endPlacements(c, rows, reason, false, true)
}

/** DELETE /v1/hosts/:id: the peer id stops being a credential; its work is placed elsewhere. */
export async function revokeHost(pool: Pool, hostId: string): Promise<{ peerId: string } | null> {
  return await transaction(pool, async (c) => {
    const { rows } = await c.query<{ peer_id: string }>(
      "update hosts set revoked_at = now(), state = 'down', state_reason = 'revoked', updated_at = now() where id = $1 and revoked_at is null returning peer_id",
      [hostId]
    )
    const row = rows[0]
    if (row === undefined) return null
    const events: NewEvent[] = [
      { type: 'host.revoked', subjectKind: 'host', subjectId: hostId, data: { peerId: row.peer_id } }
    ]
    events.push(...(await loseHostPlacements(c, hostId, 'host revoked')))
    await appendEvents(c, events)
    return { peerId: row.peer_id }
  })
}

/** Changed GPUs (count or model) after registration: no new work until an operator looks. */
export async function quarantine(c: Client, hostId: string, reason: string): Promise<NewEvent[]> {
  const { rows } = await c.query<{ state: HostState }>(
    "update hosts h set state = 'quarantined', state_reason = $2, updated_at = now() from (select state from hosts where id = $1) old where h.id = $1 and old.state <> 'quarantined' returning old.state",
    [hostId, reason]
  )
  const from = rows[0]?.state
  return from === undefined
    ? []
    : [{ type: 'host.quarantined', subjectKind: 'host', subjectId: hostId, data: { from, reason } }]
}
