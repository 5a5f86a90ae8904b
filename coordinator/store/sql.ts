// SQL fragments shared by several queries.

/** free_gpus: int[] of a host row aliased `h`: its GPU indices without an active allocation, failed ones left out. */
export const FREE_GPUS = `coalesce((
    select array_agg(g order by g) from generate_series(0, h.gpu_count - 1) g
    where not exists (select 1 from gpu_allocations a where a.host_id = h.id and a.gpu_index = g and a.active)
      and not exists (select 1 from gpu_health gh where gh.host_id = h.id and gh.gpu_index = g and gh.state = 'failed')
  ), '{}') as free_gpus`

/** Placement states that hold GPUs. */
export const ACTIVE_PLACEMENT_STATES = ['assigned', 'starting', 'running', 'stopping']

/** A timestamp column as text with microseconds, for exact keyset cursors (a JS Date keeps milliseconds). */
export const sortTs = (column: string) =>
  `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as sort_ts`
