// What an agent is told to run: placements with their workload's run spec
// and, for multi-host recipes, the rank environment torchrun-style launchers read.
import { createHash } from 'node:crypto'
import type { Assignment } from '../../protocol/control.js'
import type { WorkloadSpec } from '../../protocol/workload.js'
import type { Pool } from './db.js'
import { ACTIVE_PLACEMENT_STATES } from './sql.js'

interface Row {
  id: string
  workload_id: string
  name: string
  spec: WorkloadSpec
  replica: number
  gpus: number[]
  port: number | null
  master: string | null
}

const SELECT = `
  select p.id, p.workload_id, w.name, coalesce(p.spec, w.spec) as spec, p.replica, p.gpus, p.port,
    (select h.address from placements p0 join hosts h on h.id = p0.host_id
      where p0.workload_id = p.workload_id and p0.replica = 0 and p0.state = any($2::text[]) limit 1) as master
  from placements p join workloads w on w.id = p.workload_id`

/** The rendezvous port of a gang: fixed per workload, so ranks agree without talking. */
export function masterPort(workloadId: string): number {
  return 20000 + (createHash('sha256').update(workloadId).digest().readUInt16BE(0) % 10000)
}

function toAssignment(r: Row): Assignment {
  const env: Record<string, string> = {}
  if (r.spec.kind === 'recipe' && r.spec.hosts > 1) {
    env.GPUMESH_RANK = String(r.replica)
    env.GPUMESH_WORLD_SIZE = String(r.spec.hosts)
    env.MASTER_PORT = String(masterPort(r.workload_id))
    if (r.master !== null) env.MASTER_ADDR = r.master
  }
  const session =
    r.spec.kind === 'session'
      ? {
          session: {
            idleTimeoutSeconds: r.spec.idleTimeoutSeconds ?? null,
            maxDurationSeconds: r.spec.maxDurationSeconds ?? null
          }
        }
      : {}
  const serving =
    r.spec.kind === 'endpoint' && r.port !== null
      ? { port: r.port, ...(r.spec.serve === undefined ? {} : { serve: r.spec.serve }) }
      : {}
  return {
    placementId: r.id,
    workloadId: r.workload_id,
    workloadName: r.name,
    replica: r.replica,
    gpus: r.gpus,
    run: r.spec.run,
    env,
    ...session,
    ...serving
  }
}

export async function assignmentsByIds(pool: Pool, ids: string[]): Promise<Assignment[]> {
  const { rows } = await pool.query<Row>(`${SELECT} where p.id = any($1::uuid[]) and p.state = any($2::text[])`, [
    ids,
    ACTIVE_PLACEMENT_STATES
  ])
  return rows.map(toAssignment)
}

/** Everything the host should run now: the authoritative list sent at (re)connection. */
export async function assignmentsOfHost(pool: Pool, hostId: string): Promise<Assignment[]> {
  const { rows } = await pool.query<Row>(
    `${SELECT} where p.host_id = $1 and p.state = any($2::text[]) order by p.created_at`,
    [hostId, ACTIVE_PLACEMENT_STATES]
  )
  return rows.map(toAssignment)
}
