// Pools: created when their first host registers; operators set kind and labels.
import type { HostState, Pool as PoolResource, PoolKind, PoolPatch } from '../../protocol/api.js'
import { StoreError } from './errors.js'
import { appendEvents } from './outbox.js'
import { transaction, type Pool } from './db.js'
import { FREE_GPUS } from './sql.js'

interface PoolRow {
  key: string
  kind: PoolKind
  labels: Record<string, string>
  host_count: number
  ready_hosts: number
  gpus_total: number
  gpus_free: number
  largest_free_block: number
}

const SELECT_POOLS = `
  with free as (
    select h.id, h.pool_key, h.state, h.gpu_count,
      h.gpu_count - (select count(*) from gpu_allocations a where a.host_id = h.id and a.active)::int
        - (select count(*) from gpu_health gh where gh.host_id = h.id and gh.state = 'failed'
             and not exists (select 1 from gpu_allocations a where a.host_id = h.id and a.gpu_index = gh.gpu_index and a.active))::int as free
    from hosts h where h.revoked_at is null
  )
  select p.key, p.kind, p.labels,
    count(f.id)::int as host_count,
    count(f.id) filter (where f.state = 'ready')::int as ready_hosts,
    coalesce(sum(f.gpu_count), 0)::int as gpus_total,
    coalesce(sum(f.free) filter (where f.state = 'ready'), 0)::int as gpus_free,
    coalesce(max(f.free) filter (where f.state = 'ready'), 0)::int as largest_free_block
  from pools p left join free f on f.pool_key = p.key`

function toPool(r: PoolRow): PoolResource {
  return {
    key: r.key,
    kind: r.kind,
    labels: r.labels,
    hostCount: r.host_count,
    readyHosts: r.ready_hosts,
    gpus: { total: r.gpus_total, free: r.gpus_free },
    largestFreeBlock: r.largest_free_block
  }
}

export async function listPools(pool: Pool): Promise<PoolResource[]> {
  const { rows } = await pool.query<PoolRow>(`${SELECT_POOLS} group by p.key order by p.key`)
  return rows.map(toPool)
}

export async function getPool(pool: Pool, key: string): Promise<PoolResource> {
  const { rows } = await pool.query<PoolRow>(`${SELECT_POOLS} where p.key = $1 group by p.key`, [key])
  const row = rows[0]
  if (row === undefined) throw new StoreError('not-found', `no pool ${key}`)
  const hosts = await pool.query<{
    id: string
    name: string
    state: HostState
    gpu_count: number
    free_gpus: number[]
  }>(
    `select h.id, h.name, h.state, h.gpu_count, ${FREE_GPUS} from hosts h where h.pool_key = $1 and h.revoked_at is null order by h.name, h.id`,
    [key]
  )
  return {
    ...toPool(row),
    hosts: hosts.rows.map((h) => ({
      id: h.id,
      name: h.name,
      state: h.state,
      gpuCount: h.gpu_count,
      freeGpus: h.free_gpus
    }))
  }
}

export async function updatePool(pool: Pool, key: string, patch: PoolPatch): Promise<PoolResource> {
  await transaction(pool, async (c) => {
    const { rowCount } = await c.query(
      `update pools set kind = coalesce($2, kind), labels = coalesce($3, labels), updated_at = now() where key = $1`,
      [key, patch.kind ?? null, patch.labels === undefined ? null : JSON.stringify(patch.labels)]
    )
    if (rowCount === 0) throw new StoreError('not-found', `no pool ${key}`)
    await appendEvents(c, [{ type: 'pool.updated', subjectKind: 'pool', subjectId: key, data: { ...patch } }])
  })
  return await getPool(pool, key)
}
