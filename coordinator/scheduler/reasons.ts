// Why (part of) a workload stays pending, in words for the people who read
// `GET /v1/workloads/:id`: always the pool and the numbers behind the refusal.
import type { WorkloadKind } from '../../protocol/workload.js'
import type { PoolIndex, SnapshotIndex } from './host-index.js'
import type { PoolKind } from './types.js'

/** Which pool kinds each workload kind may use; sessions were given no rule, so any. */
export const POOL_KINDS_FOR: Record<WorkloadKind, readonly PoolKind[]> = {
  endpoint: ['inference', 'static'],
  recipe: ['training', 'static'],
  session: ['static', 'inference', 'training']
}

const UNSCHEDULABLE = 'cordoned, draining, suspect, down or quarantined'

/**
 * Why `pool` cannot take this workload whatever frees up on its hosts (null
 * when it could): unknown, wrong kind, hosts too small, every host out of
 * scheduling, or (gangs) fewer hosts than the gang.
 */
export function poolProblem(
  key: string,
  pool: PoolIndex | undefined,
  kind: WorkloadKind,
  gpus: number,
  gang = 1
): string | null {
  if (pool === undefined) return `pool ${key}: no such pool (no host has joined it)`
  const allowed = POOL_KINDS_FOR[kind]
  if (!allowed.includes(pool.kind))
    return `pool ${key} is ${pool.kind === 'inference' ? 'an' : 'a'} ${pool.kind} pool; ${kind}s run on ${allowed.join(' or ')} pools`
  if (pool.maxGpus < gpus)
    return pool.failed === 0
      ? `pool ${key}: its largest host has ${plural(pool.maxGpus, 'GPU')}, need ${gpus}`
      : `pool ${key}: its largest host has ${plural(pool.maxGpus, 'usable GPU')}, need ${gpus}${failedNote(pool)}`
  if (pool.unschedulable === pool.hosts) {
    return `pool ${key}: ${pool.hosts === 1 ? 'its only host is' : `all ${pool.hosts} hosts are`} unschedulable (${UNSCHEDULABLE})`
  }
  if (pool.hosts < gang) return `pool ${key}: ${plural(pool.hosts, 'host')} in all, the gang needs ${gang}`
  return null
}

/** The pool is fine but full: how full, against what was asked. */
export function capacityReason(index: SnapshotIndex, pool: PoolIndex, gpus: number, gang = 1): string {
  const schedulable = pool.hosts - pool.unschedulable
  const others = pool.unschedulable > 0 ? ` (and ${pool.unschedulable} unschedulable)` : ''
  const largest = index.largestFree(pool)
  const block = largest === 0 ? 'no free GPU' : `largest free block ${plural(largest, 'GPU')}`
  return `pool ${pool.key}: ${plural(schedulable, 'host')}${others}, ${block}, need ${gang > 1 ? `${gang} hosts with ${gpus}` : gpus}${failedNote(pool)}`
}

/** Failed GPUs are left out of every count above: the reason says how many. */
function failedNote(pool: PoolIndex): string {
  return pool.failed === 0 ? '' : ` (${plural(pool.failed, 'failed GPU')} excluded)`
}

/** A gang that found some but not enough hosts. */
export function gangReason(pool: PoolIndex, hostsWithFree: number, gpus: number, gang: number): string {
  return `pool ${pool.key}: ${plural(hostsWithFree, 'host')} with ${gpus} free GPUs, need ${gang}${failedNote(pool)}`
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}
