// What GPU choice reads from a host, derived once per host shape: GPUs by
// position (ascending index), their NUMA nodes, a pairwise link rank and the
// NVLink domains as positions, plus a fingerprint so that hosts of the same
// shape can share one memo of choices (see host-index.ts).
import type { SchedGpu, SchedHost } from './types.js'

export interface HostView {
  /** GPU index at each position, ascending. */
  index: number[]
  numa: Array<number | null>
  /** rank[a * n + b]: 0 NVLink, then PIX 1, PXB 2, PHB 3, NODE 4, SYS 5. */
  rank: Uint8Array
  /** NVLink domains as ascending positions. */
  domains: number[][]
  /** Equal fingerprints = equal views (same indices, NUMA, ranks, domains). */
  fingerprint: string
}

export const RANK_NVLINK = 0
/** SYS; also what an unreadable or unknown cell counts as, since nothing better is proven. */
export const RANK_WORST = 5
const PCIE_RANK: Record<string, number> = { PIX: 1, PXB: 2, PHB: 3, NODE: 4, SYS: 5, SOC: 5 }

// Keyed by the topology and GPU list objects, not the host: a snapshot copy
// that keeps them (as schedulers do between ticks) reuses the derivation.
const cache = new WeakMap<SchedHost['topology'], WeakMap<SchedGpu[], HostView>>()

export function hostView(host: Pick<SchedHost, 'gpus' | 'topology'>): HostView {
  let byGpus = cache.get(host.topology)
  if (byGpus === undefined) {
    byGpus = new WeakMap()
    cache.set(host.topology, byGpus)
  }
  let view = byGpus.get(host.gpus)
  if (view === undefined) {
    view = derive(host)
    byGpus.set(host.gpus, view)
  }
  return view
}

function derive({ gpus, topology }: Pick<SchedHost, 'gpus' | 'topology'>): HostView {
  const sorted = [...gpus].sort((a, b) => a.index - b.index)
  const index = sorted.map((g) => g.index)
  const numa = sorted.map((g) => g.numaNode)
  const n = index.length
  const position = new Map(index.map((gpu, p) => [gpu, p]))
  const column = new Map<number, number>()
  topology.labels.forEach((label, col) => {
    const m = /^GPU(\d+)$/.exec(label)
    if (m !== null) column.set(Number(m[1]), col)
  })
  const { matrix } = topology
  // The matrix is symmetric; a paste may have damaged one side only.
  const cell = (a: number, b: number): string | null => {
    const ca = column.get(a)
    const cb = column.get(b)
    if (ca === undefined || cb === undefined) return null
    return matrix[ca]?.[cb] ?? matrix[cb]?.[ca] ?? null
  }
  const rank = new Uint8Array(n * n)
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      const c = cell(index[a] as number, index[b] as number)
      const r = c === null ? RANK_WORST : /^NV\d+$/.test(c) ? RANK_NVLINK : (PCIE_RANK[c] ?? RANK_WORST)
      rank[a * n + b] = r
      rank[b * n + a] = r
    }
  }
  const domains = topology.nvlinkDomains
    .map((d) =>
      d
        .flatMap((gpu) => {
          const p = position.get(gpu)
          return p === undefined ? [] : [p]
        })
        .sort((x, y) => x - y)
    )
    .filter((d) => d.length >= 2)
  const fingerprint = `${index.join(',')}|${numa.map((x) => x ?? '?').join(',')}|${rank.join('')}|${domains.map((d) => d.join(',')).join(';')}`
  return { index, numa, rank, domains, fingerprint }
}

/** Positions of the GPUs in `free` (indices a host does not have are ignored). */
export function freePositions(view: HostView, free: ReadonlySet<number>): number[] {
  const out: number[] = []
  for (let p = 0; p < view.index.length; p++) if (free.has(view.index[p] as number)) out.push(p)
  return out
}
