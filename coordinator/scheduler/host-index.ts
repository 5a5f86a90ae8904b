// The schedulable hosts of a snapshot, indexed so that one placement costs
// far less than a scan of the fleet. Per pool, hosts sit in buckets by free
// GPU count (best fit = the lowest bucket that holds the request); inside a
// bucket, hosts with the same shape and the same free GPUs form one group,
// whose GPU choice is computed once (memo) and whose hosts are kept sorted by
// id. A lookup walks the buckets from the request size upwards and, within
// the first bucket that has a host, the groups (a handful: at most
// C(gpus, free) per shape). Building costs O(hosts · gpus + hosts · log hosts).
//
// GPU health: failed GPUs are neither free nor counted in a host's size (a
// pool's capacity is its usable GPUs); degraded free GPUs are part of a
// group's state, and within a bucket a choice with fewer of them wins before
// the topology score.
//
// The index copies every free set: it never changes the snapshot it was built from.
import { chooseHealthy, type HealthChoice } from './gpu-choice.js'
import { hostView, type HostView } from './topology-view.js'
import type { PoolKind, SchedHost, Snapshot } from './types.js'

export interface PoolIndex {
  key: string
  kind: PoolKind
  /** Hosts in the pool, schedulable or not. */
  hosts: number
  unschedulable: number
  /** Usable (not failed) GPUs of the largest host, schedulable or not. */
  maxGpus: number
  /** Failed GPUs on the pool's hosts, schedulable or not. */
  failed: number
  /** Hosts by their usable GPU count (maxGpus follows it as hosts come and go). */
  sizes: Map<number, number>
  /** buckets[f]: groups of schedulable hosts with f free GPUs, by state key. */
  buckets: Array<Map<string, Group>>
  /** Hosts in each bucket. */
  counts: number[]
}

interface Group {
  state: string
  view: HostView
  free: number[]
  /** Degraded ones among `free`, ascending positions. */
  degraded: number[]
  /** Host ordinals (rank of the id), ascending. */
  ordinals: number[]
}

interface Entry {
  host: SchedHost
  ordinal: number
  pool: PoolIndex
  view: HostView
  shape: number
  free: Set<number>
  /** Degraded GPU indices (free or not). */
  degraded: ReadonlySet<number>
  group: Group | null
}

export interface Candidate {
  hostId: string
  /** GPU indices, ascending. */
  gpus: number[]
  score: number
  /** Degraded GPUs among them. */
  degraded: number
}

/** What a host counts for in its pool: usable GPUs and failed ones. */
interface Counted {
  pool: PoolIndex
  usable: number
  failed: number
}

const EMPTY: ReadonlySet<number> = new Set()

export class SnapshotIndex {
  private readonly pools = new Map<string, PoolIndex>()
  private readonly entries = new Map<string, Entry>()
  private readonly byOrdinal: Entry[] = []
  private readonly shapes = new Map<string, number>()
  private readonly memo = new Map<string, HealthChoice>()

  /** Hosts counted in a pool, by id (so upsert/remove can undo their counts). */
  private readonly counted = new Map<string, Counted>()

  /** `pools`: index only these pools (a single decision needs no more). */
  constructor(snapshot: Snapshot, pools?: ReadonlySet<string>) {
    const hosts = snapshot.hosts
      .filter((h) => pools === undefined || pools.has(h.pool))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    for (const host of hosts) this.add(host)
  }

  /**
   * Adds a host, or replaces it (new facts, state or free GPUs), keeping the
   * index alive between scheduling passes. A host added later ranks after
   * the others in id tie-breaks until the next full build.
   */
  upsert(host: SchedHost): void {
    this.remove(host.id)
    this.add(host)
  }

  remove(hostId: string): void {
    const counted = this.counted.get(hostId)
    if (counted === undefined) return
    this.counted.delete(hostId)
    const { pool } = counted
    pool.hosts--
    pool.failed -= counted.failed
    const n = (pool.sizes.get(counted.usable) ?? 1) - 1
    if (n === 0) pool.sizes.delete(counted.usable)
    else pool.sizes.set(counted.usable, n)
    pool.maxGpus = Math.max(0, ...pool.sizes.keys())
    const entry = this.entries.get(hostId)
    if (entry !== undefined) {
      this.unplace(entry)
      this.entries.delete(hostId)
    } else pool.unschedulable--
  }

  private add(host: SchedHost): void {
    let pool = this.pools.get(host.pool)
    if (pool === undefined) {
      // A pool's kind is the pool's; hosts only carry a copy, the first (by id) speaks for all.
      pool = {
        key: host.pool,
        kind: host.poolKind,
        hosts: 0,
        unschedulable: 0,
        maxGpus: 0,
        failed: 0,
        sizes: new Map(),
        buckets: [],
        counts: []
      }
      this.pools.set(host.pool, pool)
    }
    const failedSet = host.failed ?? EMPTY
    const failed = host.gpus.filter((g) => failedSet.has(g.index)).length
    const usable = host.gpus.length - failed
    pool.hosts++
    pool.failed += failed
    pool.sizes.set(usable, (pool.sizes.get(usable) ?? 0) + 1)
    pool.maxGpus = Math.max(pool.maxGpus, usable)
    this.counted.set(host.id, { pool, usable, failed })
    if (!host.schedulable) {
      pool.unschedulable++
      return
    }
    const view = hostView(host)
    let shape = this.shapes.get(view.fingerprint)
    if (shape === undefined) {
      shape = this.shapes.size
      this.shapes.set(view.fingerprint, shape)
    }
    const free = new Set(view.index.filter((g) => host.free.has(g) && !failedSet.has(g)))
    const degraded = host.degraded ?? EMPTY
    const entry: Entry = { host, ordinal: this.byOrdinal.length, pool, view, shape, free, degraded, group: null }
    this.byOrdinal.push(entry)
    this.entries.set(host.id, entry)
    this.place(entry)
  }

  pool(key: string): PoolIndex | undefined {
    return this.pools.get(key)
  }

  /** Free GPUs of a schedulable host; undefined for others. */
  free(hostId: string): ReadonlySet<number> | undefined {
    return this.entries.get(hostId)?.free
  }

  /**
   * The best host of `pool` for `count` GPUs, skipping hosts in `exclude`:
   * fewest free GPUs left afterwards, then fewest degraded GPUs chosen, then
   * best GPU choice score, then lowest id.
   */
  best(pool: PoolIndex, count: number, exclude?: ReadonlySet<string>): Candidate | null {
    for (let f = count; f < pool.buckets.length; f++) {
      if ((pool.counts[f] ?? 0) === 0) continue
      let bestGroup: Group | null = null
      let bestChoice: HealthChoice | null = null
      let bestOrdinal = -1
      for (const group of (pool.buckets[f] as Map<string, Group>).values()) {
        const ordinal = this.firstAllowed(group, exclude)
        if (ordinal < 0) continue
        const choice = this.choice(group, count)
        if (
          bestChoice === null ||
          choice.degraded < bestChoice.degraded ||
          (choice.degraded === bestChoice.degraded &&
            (choice.score < bestChoice.score || (choice.score === bestChoice.score && ordinal < bestOrdinal)))
        ) {
          bestGroup = group
          bestChoice = choice
          bestOrdinal = ordinal
        }
      }
      if (bestGroup !== null && bestChoice !== null) {
        const view = bestGroup.view
        return {
          hostId: (this.byOrdinal[bestOrdinal] as Entry).host.id,
          gpus: bestChoice.positions.map((p) => view.index[p] as number),
          score: bestChoice.score,
          degraded: bestChoice.degraded
        }
      }
    }
    return null
  }

  /** Schedulable hosts of `pool` with at least `count` free GPUs, not counting `exclude`. */
  hostsWithFree(pool: PoolIndex, count: number, exclude?: ReadonlySet<string>): number {
    let n = 0
    for (let f = count; f < pool.counts.length; f++) n += pool.counts[f] ?? 0
    for (const id of exclude ?? []) {
      const e = this.entries.get(id)
      if (e !== undefined && e.pool === pool && e.free.size >= count) n--
    }
    return n
  }

  /** Free GPUs of the pool's emptiest schedulable host. */
  largestFree(pool: PoolIndex): number {
    for (let f = pool.counts.length - 1; f > 0; f--) if ((pool.counts[f] ?? 0) > 0) return f
    return 0
  }

  /** Marks GPUs taken; throws when one is not free (a stale decision). */
  take(hostId: string, gpus: number[]): void {
    const entry = this.entry(hostId)
    for (const g of gpus) if (!entry.free.has(g)) throw new Error(`GPU ${g} of host ${hostId} is not free`)
    this.unplace(entry)
    for (const g of gpus) entry.free.delete(g)
    this.place(entry)
  }

  /** Undoes take (a gang that did not fit, a decision only looked at). */
  give(hostId: string, gpus: number[]): void {
    const entry = this.entry(hostId)
    this.unplace(entry)
    for (const g of gpus) entry.free.add(g)
    this.place(entry)
  }

  private entry(hostId: string): Entry {
    const entry = this.entries.get(hostId)
    if (entry === undefined) throw new Error(`host ${hostId} is not schedulable in this snapshot`)
    return entry
  }

  private choice(group: Group, count: number): HealthChoice {
    const key = `${group.state}#${count}`
    let choice = this.memo.get(key)
    if (choice === undefined) {
      // Every group of bucket f >= count can take count GPUs, so this never returns null here.
      choice = chooseHealthy(group.view, group.free, group.degraded, count) as HealthChoice
      this.memo.set(key, choice)
    }
    return choice
  }

  private firstAllowed(group: Group, exclude: ReadonlySet<string> | undefined): number {
    if (exclude === undefined || exclude.size === 0) return group.ordinals[0] ?? -1
    for (const o of group.ordinals) if (!exclude.has((this.byOrdinal[o] as Entry).host.id)) return o
    return -1
  }

  private place(entry: Entry): void {
    const { pool, view } = entry
    const free: number[] = []
    const degraded: number[] = []
    let key = `${entry.shape}:`
    // The free set as a bitmask, 30 bits a word: hosts may have up to 72 GPUs.
    let word = 0
    for (let p = 0; p < view.index.length; p++) {
      const gpu = view.index[p] as number
      if (entry.free.has(gpu)) {
        free.push(p)
        word |= 1 << (p % 30)
        if (entry.degraded.has(gpu)) degraded.push(p)
      }
      if (p % 30 === 29) {
        key += `${word.toString(36)}.`
        word = 0
      }
    }
    key += word.toString(36)
    // Degraded free GPUs change the choice: they are part of the state (rare, so only then).
    if (degraded.length > 0) key += `~${degraded.join('.')}`
    const f = free.length
    while (pool.buckets.length <= f) {
      pool.buckets.push(new Map())
      pool.counts.push(0)
    }
    const bucket = pool.buckets[f] as Map<string, Group>
    let group = bucket.get(key)
    if (group === undefined) {
      group = { state: key, view, free, degraded, ordinals: [] }
      bucket.set(key, group)
    }
    insertSorted(group.ordinals, entry.ordinal)
    pool.counts[f] = (pool.counts[f] as number) + 1
    entry.group = group
  }

  private unplace(entry: Entry): void {
    const group = entry.group
    if (group === null) return
    const f = group.free.length
    removeSorted(group.ordinals, entry.ordinal)
    if (group.ordinals.length === 0) entry.pool.buckets[f]?.delete(group.state)
    entry.pool.counts[f] = (entry.pool.counts[f] as number) - 1
    entry.group = null
  }
}

function lowerBound(xs: number[], x: number): number {
  let lo = 0
  let hi = xs.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((xs[mid] as number) < x) lo = mid + 1
    else hi = mid
  }
  return lo
}

function insertSorted(xs: number[], x: number): void {
  const at = lowerBound(xs, x)
  if (at === xs.length) xs.push(x)
  else xs.splice(at, 0, x)
}

function removeSorted(xs: number[], x: number): void {
  const at = lowerBound(xs, x)
  if (xs[at] === x) xs.splice(at, 1)
}
