// Placement decisions. Hosts are compared by best fit (fewest free GPUs left
// afterwards, so large blocks stay whole elsewhere), then by the GPU choice
// score (topology), then by id. Endpoint replicas prefer, in this order: a
// host holding none of the workload's replicas (spread beats everything, it
// is what keeps an endpoint up when a host dies), an earlier pool of
// `spec.pools` (the user's order of preference), then best fit.
import type { EndpointSpec, RecipeSpec, SessionSpec } from '../../protocol/workload.js'
import { SnapshotIndex, type Candidate, type PoolIndex } from './host-index.js'
import { capacityReason, gangReason, poolProblem } from './reasons.js'
import type { Assignment, Decision, SchedWorkload, Snapshot } from './types.js'

type Placed = Pick<SchedWorkload, 'id' | 'placedReplicas' | 'usedHosts'>

/**
 * Decides for one workload without changing anything. On a plain Snapshot it
 * first indexes the hosts of the workload's pools, O(those hosts · GPUs); a
 * caller deciding many workloads should pass one SnapshotIndex (and apply
 * each decision to it) or use scheduleAll.
 */
export function decide(workload: SchedWorkload, target: Snapshot | SnapshotIndex): Decision {
  const index = target instanceof SnapshotIndex ? target : new SnapshotIndex(target, new Set(poolsOf(workload)))
  const decision = placeOn(index, workload)
  for (const a of decision.assignments) index.give(a.hostId, a.gpus)
  return decision
}

/**
 * Removes the decision's GPUs from the free sets (of the index, or of the
 * snapshot's hosts, which are then changed in place). Throws, changing
 * nothing, when a GPU is no longer free: the decision is stale.
 */
export function applyDecision(target: Snapshot | SnapshotIndex, decision: Decision): void {
  const freeOf = (hostId: string): Set<number> | ReadonlySet<number> | undefined =>
    target instanceof SnapshotIndex ? target.free(hostId) : target.hosts.find((h) => h.id === hostId)?.free
  const taking = new Set<string>()
  for (const a of decision.assignments) {
    const free = freeOf(a.hostId)
    if (free === undefined) throw new Error(`host ${a.hostId} is not in the snapshot or not schedulable`)
    for (const g of a.gpus) {
      if (!free.has(g) || taking.has(`${a.hostId}/${g}`)) throw new Error(`GPU ${g} of host ${a.hostId} is not free`)
      taking.add(`${a.hostId}/${g}`)
    }
  }
  for (const a of decision.assignments) {
    if (target instanceof SnapshotIndex) target.take(a.hostId, a.gpus)
    else for (const g of a.gpus) (freeOf(a.hostId) as Set<number>).delete(g)
  }
}

/** Decides in order, each decision applied before the next; the snapshot is not changed. */
export function scheduleAll(workloads: SchedWorkload[], snapshot: Snapshot): Decision[] {
  const index = new SnapshotIndex(snapshot)
  return workloads.map((w) => placeOn(index, w))
}

/** Decides and leaves the decision applied to the index (the leader keeps one index between passes). */
export function placeOn(index: SnapshotIndex, workload: SchedWorkload): Decision {
  const { spec } = workload
  switch (spec.kind) {
    case 'endpoint':
      return placeEndpoint(index, workload, spec)
    case 'recipe':
      return placeGang(index, workload, spec, spec.hosts)
    case 'session':
      return placeGang(index, workload, spec, 1)
  }
}

function poolsOf({ spec }: SchedWorkload): string[] {
  return spec.kind === 'endpoint' ? spec.pools : [spec.pool]
}

function placeEndpoint(index: SnapshotIndex, workload: Placed, spec: EndpointSpec): Decision {
  // Replica indices are labels: what is missing is a count, placed at the lowest indices no replica holds
  // (after a scale-down or a rolling update the holes may be anywhere; see rollout/plan.ts).
  const placed = new Set(workload.placedReplicas)
  const missing = freeIndices(placed, spec.replicas - placed.size)
  const problems = new Map<string, string>()
  const usable: PoolIndex[] = []
  for (const key of spec.pools) {
    const pool = index.pool(key)
    const problem = poolProblem(key, pool, 'endpoint', spec.gpus)
    if (problem !== null) problems.set(key, problem)
    else usable.push(pool as PoolIndex)
  }
  const used = new Set(workload.usedHosts)
  const assignments: Assignment[] = []
  for (const replica of missing) {
    const found = firstFit(index, usable, spec.gpus, used) ?? firstFit(index, usable, spec.gpus)
    // Replicas are all the same size: when one does not fit, none after it will.
    if (found === null) break
    index.take(found.hostId, found.gpus)
    used.add(found.hostId)
    assignments.push({ hostId: found.hostId, gpus: found.gpus, replica })
  }
  if (assignments.length === missing.length) return { workloadId: workload.id, assignments, reason: null }
  const why = spec.pools.map(
    (key) => problems.get(key) ?? capacityReason(index, index.pool(key) as PoolIndex, spec.gpus)
  )
  const total = placed.size + assignments.length
  return {
    workloadId: workload.id,
    assignments,
    reason: `${total} of ${spec.replicas} replicas placed; ${why.join('; ')}`
  }
}

function firstFit(
  index: SnapshotIndex,
  pools: PoolIndex[],
  gpus: number,
  exclude?: ReadonlySet<string>
): Candidate | null {
  for (const pool of pools) {
    const found = index.best(pool, gpus, exclude)
    if (found !== null) return found
  }
  return null
}

/** Recipes (a gang of `gang` distinct hosts, ranks as replicas) and sessions (a gang of one): all or nothing. */
function placeGang(index: SnapshotIndex, workload: Placed, spec: RecipeSpec | SessionSpec, gang: number): Decision {
  const pool = index.pool(spec.pool)
  const problem = poolProblem(spec.pool, pool, spec.kind, spec.gpus, gang)
  if (problem !== null || pool === undefined) return { workloadId: workload.id, assignments: [], reason: problem }
  const placed = new Set(workload.placedReplicas)
  const missing = range(gang).filter((r) => !placed.has(r))
  const used = new Set(workload.usedHosts)
  const assignments: Assignment[] = []
  for (const replica of missing) {
    const found = index.best(pool, spec.gpus, used)
    if (found === null) {
      for (const a of assignments) index.give(a.hostId, a.gpus)
      const fit = index.hostsWithFree(pool, spec.gpus, new Set(workload.usedHosts))
      const reason =
        fit === 0
          ? capacityReason(index, pool, spec.gpus, missing.length)
          : gangReason(pool, fit, spec.gpus, missing.length)
      return { workloadId: workload.id, assignments: [], reason }
    }
    index.take(found.hostId, found.gpus)
    used.add(found.hostId)
    assignments.push({ hostId: found.hostId, gpus: found.gpus, replica })
  }
  return { workloadId: workload.id, assignments, reason: null }
}

/** The `n` lowest indices not in `taken`. */
function freeIndices(taken: ReadonlySet<number>, n: number): number[] {
  const out: number[] = []
  for (let i = 0; out.length < n; i++) if (!taken.has(i)) out.push(i)
  return out
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}
