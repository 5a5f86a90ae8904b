// Persisting scheduler decisions. A batch goes in with a handful of set-based
// statements; if the database refuses it (a GPU or replica already taken, a
// workload deleted meanwhile), the batch is retried one decision at a time so
// one stale decision does not hold up the rest.
import { assertGpusUsable, GpuFailedError } from './gpu-health.js'
import { appendEvents, type NewEvent } from './outbox.js'
import { allocatePorts } from './ports.js'
import type { Decision } from '../scheduler/types.js'
import type { Client, Pool } from './db.js'
import { transaction } from './db.js'

export interface DecisionToPersist {
  decision: Decision
  /** Replicas the workload needs in all (endpoint replicas, recipe hosts, 1). */
  needed: number
  /** Replicas already placed before this decision. */
  placedBefore: number
  /** The reason stored now, to skip rewriting an unchanged one. */
  previousReason: string | null
}

export interface PersistResult {
  /** Placement ids created, per workload. */
  placed: Map<string, string[]>
  /** Decisions the database refused (stale snapshot); the caller reloads. */
  refused: string[]
}

export async function persistDecisions(pool: Pool, items: DecisionToPersist[]): Promise<PersistResult> {
  const relevant = items.filter((i) => i.decision.assignments.length > 0 || i.decision.reason !== i.previousReason)
  const result: PersistResult = { placed: new Map(), refused: [] }
  if (relevant.length === 0) return result
  try {
    await transaction(pool, async (c) => {
      await writeBatch(c, relevant, result)
    })
    return result
  } catch (err) {
    if (!refusal(err)) throw err
  }
  result.placed.clear()
  for (const item of relevant) {
    try {
      await transaction(pool, async (c) => {
        await writeBatch(c, [item], result)
      })
    } catch (err) {
      if (!refusal(err)) throw err
      result.refused.push(item.decision.workloadId)
    }
  }
  return result
}

class WorkloadGone extends Error {}

/** Unique violations (GPU or replica taken), vanished workloads and failed GPUs: the snapshot was stale. */
function refusal(err: unknown): boolean {
  return err instanceof WorkloadGone || err instanceof GpuFailedError || (err as { code?: string }).code === '23505'
}

async function writeBatch(c: Client, items: DecisionToPersist[], result: PersistResult): Promise<void> {
  // First, before any workload row is locked: a GPU health change locks its rows, then the workloads it ends.
  await assertGpusUsable(
    c,
    items.flatMap((i) => i.decision.assignments.flatMap((a) => a.gpus.map((gpu) => ({ hostId: a.hostId, gpu }))))
  )
  const ids = items.map((i) => i.decision.workloadId)
  const states = items.map((i) => (i.placedBefore + i.decision.assignments.length >= i.needed ? 'placed' : 'pending'))
  const reasons = items.map((i) => i.decision.reason)
  const updated = await c.query<{ id: string; kind: string }>(
    `update workloads w set state = u.state, reason = u.reason, updated_at = now()
     from unnest($1::uuid[], $2::text[], $3::text[]) as u(id, state, reason)
     where w.id = u.id and w.state = 'pending' returning w.id, w.kind`,
    [ids, states, reasons]
  )
  if (updated.rowCount !== items.length) throw new WorkloadGone()

  const endpoints = new Set(updated.rows.filter((r) => r.kind === 'endpoint').map((r) => r.id))
  const rows = items.flatMap((i) => i.decision.assignments.map((a) => ({ workload: i.decision.workloadId, ...a })))
  const events: NewEvent[] = []
  if (rows.length > 0) {
    const ports = await allocatePorts(
      c,
      rows.map((r) => (endpoints.has(r.workload) ? r.hostId : null))
    )
    const placements = await c.query<{
      id: string
      workload_id: string
      host_id: string
      replica: number
      gpus: number[]
    }>(
      // Each placement keeps the spec (and generation) it starts with: a rolling update changes the workload's.
      `insert into placements (workload_id, host_id, replica, gpus, port, spec, generation)
       select u.w, u.h, u.r, u.g::int[], u.port, wl.spec, wl.generation
       from unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::int[]) as u(w, h, r, g, port)
       join workloads wl on wl.id = u.w
       returning id, workload_id, host_id, replica, gpus`,
      [
        rows.map((r) => r.workload),
        rows.map((r) => r.hostId),
        rows.map((r) => r.replica),
        rows.map((r) => `{${r.gpus.join(',')}}`),
        ports
      ]
    )
    const alloc = placements.rows.flatMap((p) => p.gpus.map((g) => [p.host_id, g, p.id] as const))
    await c.query(
      `insert into gpu_allocations (host_id, gpu_index, placement_id) select * from unnest($1::uuid[], $2::int[], $3::uuid[])`,
      [alloc.map((a) => a[0]), alloc.map((a) => a[1]), alloc.map((a) => a[2])]
    )
    for (const p of placements.rows) {
      const list = result.placed.get(p.workload_id) ?? []
      list.push(p.id)
      result.placed.set(p.workload_id, list)
      events.push({
        type: 'placement.created',
        subjectKind: 'placement',
        subjectId: p.id,
        data: { workload: p.workload_id, host: p.host_id, replica: p.replica, gpus: p.gpus }
      })
    }
  }
  items.forEach((i, n) => {
    const state = states[n]
    if (state === 'placed')
      events.push({
        type: 'workload.placed',
        subjectKind: 'workload',
        subjectId: i.decision.workloadId,
        data: { placements: i.placedBefore + i.decision.assignments.length }
      })
    else
      events.push({
        type: 'workload.pending',
        subjectKind: 'workload',
        subjectId: i.decision.workloadId,
        data: { reason: i.decision.reason, placed: i.placedBefore + i.decision.assignments.length, needed: i.needed }
      })
  })
  await appendEvents(c, events)
}
