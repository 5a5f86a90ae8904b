// Which free GPUs of one host a placement gets. Tiers, each best-fit so the
// GPUs left behind stay in the largest possible blocks:
//   1. inside one NVLink domain: the smallest domain whose free GPUs suffice;
//   2. inside one NUMA node (within that domain, or among all free GPUs when
//      no domain fits): the smallest node whose free GPUs suffice;
//   3. the best PCIe distance between the chosen GPUs, by a greedy pass from
//      every seed GPU (add the GPU whose worst, then summed, link rank to the
//      chosen ones is lowest): O(m² · count) for m candidates, no subset search.
// Equal scores go to the lower GPU indices, so the result is deterministic.
// Failed GPUs are never chosen; degraded ones only when the healthy free GPUs
// do not suffice (then the tiers above choose among all free ones).
import type { SchedHost } from './types.js'
import { freePositions, hostView, type HostView } from './topology-view.js'

export interface GpuChoice {
  /** GPU indices, ascending. */
  gpus: number[]
  /** Lower is better; 0 = one NVLink domain, one NUMA node (or a single GPU). Compare only choices of the same count. */
  score: number
}

/** A choice in positions (see HostView), what the index memoizes per host shape. */
export interface PositionChoice {
  positions: number[]
  score: number
}

/** A choice that may include degraded GPUs: how many it does ranks before its score. */
export interface HealthChoice extends PositionChoice {
  degraded: number
}

// Score = tier flags, then worst link rank, then summed rank (< 72·71/2·5 = 12,780).
const DOMAIN_WEIGHT = 1e7
const NUMA_WEIGHT = 1e6
const RANK_WEIGHT = 1e5

export function chooseGpus(host: SchedHost, count: number): number[] | null {
  return gpuChoice(host, count)?.gpus ?? null
}

export function gpuChoice(host: SchedHost, count: number): (GpuChoice & { degraded: number }) | null {
  const view = hostView(host)
  const usable = [...host.free].filter((g) => host.failed?.has(g) !== true)
  const choice = chooseHealthy(
    view,
    freePositions(view, new Set(usable)),
    freePositions(view, new Set(usable.filter((g) => host.degraded?.has(g) === true))),
    count
  )
  return choice === null
    ? null
    : { gpus: choice.positions.map((p) => view.index[p] as number), score: choice.score, degraded: choice.degraded }
}

/** `free` and `degraded` (a subset of it): ascending positions. Healthy GPUs only when they suffice. */
export function chooseHealthy(view: HostView, free: number[], degraded: number[], count: number): HealthChoice | null {
  if (degraded.length > 0) {
    const bad = new Set(degraded)
    const healthy = free.filter((p) => !bad.has(p))
    if (healthy.length >= count) {
      const choice = chooseOn(view, healthy, count)
      return choice === null ? null : { ...choice, degraded: 0 }
    }
    const choice = chooseOn(view, free, count)
    return choice === null ? null : { ...choice, degraded: choice.positions.filter((p) => bad.has(p)).length }
  }
  const choice = chooseOn(view, free, count)
  return choice === null ? null : { ...choice, degraded: 0 }
}

/** Score of a given set of a host's GPUs (indices), on the same scale as gpuChoice. */
export function scoreGpus(host: SchedHost, gpus: number[]): number {
  const view = hostView(host)
  return scorePositions(view, freePositions(view, new Set(gpus)))
}

/** `free`: ascending positions. */
export function chooseOn(view: HostView, free: number[], count: number): PositionChoice | null {
  if (!Number.isInteger(count) || count < 0 || count > free.length) return null
  if (count === 0) return { positions: [], score: 0 }
  const isFree = new Uint8Array(view.index.length)
  for (const p of free) isFree[p] = 1
  const domains = smallestFitting(
    view.domains.map((d) => d.filter((p) => isFree[p] === 1)),
    count
  )
  let best: PositionChoice | null = null
  for (const set of domains.length > 0 ? domains : [free]) best = better(best, withinNuma(view, set, count))
  return best as PositionChoice
}

function withinNuma(view: HostView, set: number[], count: number): PositionChoice {
  const byNode = new Map<number, number[]>()
  for (const p of set) {
    const node = view.numa[p]
    // An unknown node proves no locality, so it joins no group.
    if (node == null) continue
    const group = byNode.get(node)
    if (group === undefined) byNode.set(node, [p])
    else group.push(p)
  }
  const nodes = smallestFitting([...byNode.values()], count)
  let best: PositionChoice | null = null
  for (const group of nodes.length > 0 ? nodes : [set]) best = better(best, greedy(view, group, count))
  return best as PositionChoice
}

/** Best fit: the candidate sets of the smallest size that still holds `count`. */
function smallestFitting(sets: number[][], count: number): number[][] {
  let smallest = Infinity
  for (const s of sets) if (s.length >= count && s.length < smallest) smallest = s.length
  return sets.filter((s) => s.length === smallest)
}

/** `set`: ascending positions, at least `count` of them. */
function greedy(view: HostView, set: number[], count: number): PositionChoice {
  if (set.length === count) return { positions: set, score: scorePositions(view, set) }
  const n = view.index.length
  const m = set.length
  const worst = new Uint8Array(m)
  const sum = new Uint32Array(m)
  const used = new Uint8Array(m)
  let best: PositionChoice | null = null
  for (let seed = 0; seed < m; seed++) {
    worst.fill(0)
    sum.fill(0)
    used.fill(0)
    used[seed] = 1
    let last = set[seed] as number
    const chosen = [last]
    while (chosen.length < count) {
      let pick = -1
      for (let i = 0; i < m; i++) {
        if (used[i] === 1) continue
        const r = view.rank[last * n + (set[i] as number)] as number
        if (r > (worst[i] as number)) worst[i] = r
        sum[i] = (sum[i] as number) + r
        if (
          pick < 0 ||
          (worst[i] as number) < (worst[pick] as number) ||
          (worst[i] === worst[pick] && (sum[i] as number) < (sum[pick] as number))
        )
          pick = i
      }
      used[pick] = 1
      last = set[pick] as number
      chosen.push(last)
    }
    chosen.sort((a, b) => a - b)
    best = better(best, { positions: chosen, score: scorePositions(view, chosen) })
    // Every subset of one candidate set has the same tier flags, so a zero rank
    // sum cannot be beaten, and from seed 0 it is the lowest indices.
    if (seed === 0 && best.score % NUMA_WEIGHT === 0 && chosen.every((p, i) => p === set[i])) break
  }
  return best as PositionChoice
}

export function scorePositions(view: HostView, positions: number[]): number {
  const k = positions.length
  if (k <= 1) return 0
  const n = view.index.length
  let worst = 0
  let sum = 0
  for (let a = 0; a < k; a++) {
    for (let b = a + 1; b < k; b++) {
      const r = view.rank[(positions[a] as number) * n + (positions[b] as number)] as number
      if (r > worst) worst = r
      sum += r
    }
  }
  const inDomain = view.domains.some((d) => positions.every((p) => d.includes(p)))
  const node = view.numa[positions[0] as number]
  const oneNode = node != null && positions.every((p) => view.numa[p] === node)
  return (inDomain ? 0 : DOMAIN_WEIGHT) + (oneNode ? 0 : NUMA_WEIGHT) + worst * RANK_WEIGHT + sum
}

function better(a: PositionChoice | null, b: PositionChoice): PositionChoice {
  if (a === null || b.score < a.score) return b
  if (b.score > a.score) return a
  for (let i = 0; i < a.positions.length; i++) {
    const d = (a.positions[i] as number) - (b.positions[i] as number)
    if (d !== 0) return d < 0 ? a : b
  }
  return a
}
