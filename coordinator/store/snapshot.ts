// What the scheduler's fleet picture (scheduler/cache.ts) is read from:
// live hosts with their topology, free GPUs and GPU health, and the outbox
// after a point.
import type { Topology } from '../../protocol/host-facts.js'
import type { HostState } from '../../protocol/api.js'
import type { FleetEvent, PoolKind, SchedGpu, SchedHost, SnapshotSource } from '../scheduler/types.js'
import type { Pool } from './db.js'
import { lastEventId } from './events.js'

interface HostRow {
  id: string
  name: string
  pool_key: string
  kind: PoolKind
  state: HostState
  gpus: SchedGpu[] | null
  topology: Topology | null
  allocated: number[]
  failed: number[]
  degraded: number[]
}

const SELECT_HOSTS = `
  select h.id, h.name, h.pool_key, p.kind, h.state, h.facts->'topology' as topology,
    (select jsonb_agg(jsonb_build_object('index', g->'index', 'numaNode', g->'numaNode')) from jsonb_array_elements(h.facts->'gpus') g) as gpus,
    coalesce((select array_agg(a.gpu_index) from gpu_allocations a where a.host_id = h.id and a.active), '{}') as allocated,
    coalesce((select array_agg(gh.gpu_index) from gpu_health gh where gh.host_id = h.id and gh.state = 'failed'), '{}') as failed,
    coalesce((select array_agg(gh.gpu_index) from gpu_health gh where gh.host_id = h.id and gh.state = 'degraded'), '{}') as degraded
  from hosts h join pools p on p.key = h.pool_key where h.revoked_at is null`

export function snapshotSource(pool: Pool): SnapshotSource {
  return {
    async hosts(ids) {
      const { rows } =
        ids === undefined
          ? await pool.query<HostRow>(SELECT_HOSTS)
          : await pool.query<HostRow>(`${SELECT_HOSTS} and h.id = any($1::uuid[])`, [ids])
      return rows.map(toSchedHost)
    },
    async eventsAfter(id, limit) {
      const { rows } = await pool.query<{ id: number; type: string; subject_id: string; data: { host?: unknown } }>(
        'select id, type, subject_id, data from events where id > $1 order by id limit $2',
        [id, limit]
      )
      return rows.map(
        (r): FleetEvent => ({
          id: r.id,
          type: r.type,
          subjectId: r.subject_id,
          host: typeof r.data.host === 'string' ? r.data.host : undefined
        })
      )
    },
    lastEventId: async () => await lastEventId(pool)
  }
}

function toSchedHost(r: HostRow): SchedHost {
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
    failed: new Set(r.failed),
    degraded: new Set(r.degraded),
    topology: {
      labels: r.topology?.labels ?? [],
      matrix: r.topology?.matrix ?? [],
      nvlinkDomains: r.topology?.nvlinkDomains ?? []
    }
  }
}
