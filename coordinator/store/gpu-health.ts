// Per-GPU health in PostgreSQL (docs/health.md "Coordinator"). A host's rows
// follow its agent's table: a change of state or reasons is written with a
// `gpu.health-changed` event, and the placements on a GPU that failed are
// lost in the same transaction (their workloads follow their policies). The
// rows of a host are locked in index order here and by persistDecisions, so
// a placement is never committed on a GPU that failed meanwhile.
import type { GpuHealth, GpuHealthState, GpuTelemetry } from '../../protocol/telemetry.js'
import type { Client, Pool } from './db.js'
import { transaction } from './db.js'
import { loseGpuPlacements } from './lifecycle.js'
import { appendEvents, type NewEvent } from './outbox.js'

export interface GpuHealthRow {
  gpu_index: number
  uuid: string | null
  pci_bus_id: string | null
  state: GpuHealthState
  reasons: string[]
  since: Date
}

export const toGpuHealth = (r: Pick<GpuHealthRow, 'state' | 'reasons' | 'since'>): GpuHealth => ({
  state: r.state,
  reasons: r.reasons,
  since: r.since.toISOString()
})

const sameReasons = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((r, i) => r === b[i])

/**
 * Makes a host's rows match its agent's whole GPU table: inserts and updates what differs
 * (state or reasons: a new usage sample writes nothing), deletes GPUs no longer reported, and
 * loses the placements of GPUs that are failed now. Returns the events it appended.
 */
export async function reconcileGpuHealth(
  pool: Pool,
  hostId: string,
  gpus: readonly GpuTelemetry[]
): Promise<NewEvent[]> {
  return await transaction(pool, async (c) => {
    const { rows: host } = await c.query<{ name: string }>(
      'select name from hosts where id = $1 and revoked_at is null',
      [hostId]
    )
    const hostName = host[0]?.name
    if (hostName === undefined) return []
    const { rows } = await c.query<GpuHealthRow>(
      'select * from gpu_health where host_id = $1 order by gpu_index for update',
      [hostId]
    )
    const stored = new Map(rows.map((r) => [r.gpu_index, r]))
    const events: NewEvent[] = []
    const writes = [...gpus].sort((a, b) => a.index - b.index).filter((g) => changed(stored.get(g.index), g))
    for (const g of writes)
      await c.query(
        `insert into gpu_health (host_id, gpu_index, uuid, pci_bus_id, state, reasons, since)
         values ($1, $2, $3, $4, $5, $6::text[], $7)
         on conflict (host_id, gpu_index) do update set uuid = excluded.uuid, pci_bus_id = excluded.pci_bus_id,
           state = excluded.state, reasons = excluded.reasons, since = excluded.since, updated_at = now()`,
        [hostId, g.index, g.uuid, g.pciBusId, g.health.state, g.health.reasons, g.health.since]
      )
    for (const g of writes) {
      const before = stored.get(g.index)
      // A GPU first seen healthy is no change worth an event; one first seen unhealthy is.
      const from: GpuHealthState = before?.state ?? 'healthy'
      if (before === undefined && g.health.state === 'healthy') continue
      events.push({
        type: 'gpu.health-changed',
        subjectKind: 'host',
        subjectId: hostId,
        data: {
          host: hostId,
          hostName,
          gpu: g.index,
          uuid: g.uuid,
          from,
          to: g.health.state,
          reasons: g.health.reasons
        }
      })
    }
    const reported = new Set(gpus.map((g) => g.index))
    const gone = rows.filter((r) => !reported.has(r.gpu_index)).map((r) => r.gpu_index)
    if (gone.length > 0)
      await c.query('delete from gpu_health where host_id = $1 and gpu_index = any($2::int[])', [hostId, gone])
    events.push(...(await loseFailed(c, hostId, gpus)))
    await appendEvents(c, events)
    return events
  })
}

function changed(before: GpuHealthRow | undefined, g: GpuTelemetry): boolean {
  return (
    before === undefined ||
    before.state !== g.health.state ||
    !sameReasons(before.reasons, g.health.reasons) ||
    before.uuid !== g.uuid ||
    before.pci_bus_id !== g.pciBusId
  )
}

/** The placements still active on failed GPUs end as lost, with the GPU and its reasons as the reason. */
async function loseFailed(c: Client, hostId: string, gpus: readonly GpuTelemetry[]): Promise<NewEvent[]> {
  const failed = gpus.filter((g) => g.health.state === 'failed')
  if (failed.length === 0) return []
  const reason = failed
    .map((g) => `GPU ${g.index} failed${g.health.reasons.length === 0 ? '' : ` (${g.health.reasons.join(', ')})`}`)
    .join('; ')
  return await loseGpuPlacements(
    c,
    hostId,
    failed.map((g) => g.index),
    reason
  )
}

/**
 * Refuses (throws GpuFailedError) when any of these GPUs is failed, holding their rows (share lock)
 * until the transaction ends, so that a health change cannot slip in between. Locks in (host, index)
 * order, as reconcileGpuHealth does.
 */
export async function assertGpusUsable(c: Client, gpus: ReadonlyArray<{ hostId: string; gpu: number }>): Promise<void> {
  if (gpus.length === 0) return
  const { rows } = await c.query<{ host_id: string; gpu_index: number; state: GpuHealthState }>(
    `select host_id, gpu_index, state from gpu_health
     where (host_id, gpu_index) in (select * from unnest($1::uuid[], $2::int[]))
     order by host_id, gpu_index for share`,
    [gpus.map((g) => g.hostId), gpus.map((g) => g.gpu)]
  )
  const failed = rows.filter((r) => r.state === 'failed')
  if (failed.length > 0)
    throw new GpuFailedError(failed.map((r) => `GPU ${r.gpu_index} of host ${r.host_id} failed`).join('; '))
}

export class GpuFailedError extends Error {
  override name = 'GpuFailedError'
}

/** Health rows of these hosts, by host id, each list by GPU index. */
export async function gpuHealthOf(db: Pool | Client, hostIds: string[]): Promise<Map<string, GpuHealthRow[]>> {
  const out = new Map<string, GpuHealthRow[]>()
  if (hostIds.length === 0) return out
  const { rows } = await db.query<GpuHealthRow & { host_id: string }>(
    'select * from gpu_health where host_id = any($1::uuid[]) order by host_id, gpu_index',
    [hostIds]
  )
  for (const r of rows) {
    const list = out.get(r.host_id) ?? []
    list.push(r)
    out.set(r.host_id, list)
  }
  return out
}
