// A synthetic but realistic fleet and workload stream for scheduler
// benchmarks and property tests. Host shapes come from real `topo -m`
// captures (share/nvidia-smi); everything random is drawn from a
// seeded PRNG, so a seed always gives the same fleet and stream.
import { combineGpus } from '../../agent/detect/combine-gpus.js'
import { parseTopo } from '../../agent/detect/nvidia/parse-topo.js'
import type { EndpointSpec, RecipeSpec, SessionSpec } from '../../protocol/workload.js'
import type { PoolKind, SchedGpu, SchedHost, SchedWorkload, Snapshot } from '../../coordinator/scheduler/types.js'
import { capture } from './fixtures.js'

export interface FleetPool {
  key: string
  kind: PoolKind
  gpusPerHost: number
  hosts: number
}

export interface Fleet extends Snapshot {
  pools: FleetPool[]
}

/** mulberry32: tiny, fast, good enough to shuffle a benchmark. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** An L40S-style PCIe host: two PXB pairs, one per NUMA node. */
export const PCIE_4X_TOPO =
  '\tGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\n' +
  'GPU0\t X \tPXB\tSYS\tSYS\t0-31\t0\n' +
  'GPU1\tPXB\t X \tSYS\tSYS\t0-31\t0\n' +
  'GPU2\tSYS\tSYS\t X \tPXB\t32-63\t1\n' +
  'GPU3\tSYS\tSYS\tPXB\t X \t32-63\t1\n'

interface Shape {
  key: string
  kind: PoolKind
  share: number
  topo: () => string
}

const SHAPES: Shape[] = [
  { key: 'h100-80gb-8x-nvlink', kind: 'inference', share: 0.2, topo: () => capture('h100-sxm-8x-topo-m-1.txt') },
  { key: 'h100-80gb-8x-nvlink-train', kind: 'training', share: 0.15, topo: () => capture('h100-sxm-8x-topo-m-1.txt') },
  { key: 'a100-80gb-8x-nvlink', kind: 'static', share: 0.15, topo: () => capture('a100-sxm4-80gb-8x-topo-m-1.txt') },
  { key: 'l40s-48gb-4x-pcie', kind: 'inference', share: 0.15, topo: () => PCIE_4X_TOPO },
  { key: 'b200-180gb-8x-nvlink', kind: 'training', share: 0.1, topo: () => capture('b200-8x-topo-m-1.txt') },
  { key: 'h200-141gb-1x', kind: 'inference', share: 0.1, topo: () => capture('h200-1x-topo-m-1.txt') },
  { key: 'gb200-186gb-4x-nvlink', kind: 'static', share: 0.15, topo: () => capture('gb200-4x-topo-m-1.txt') }
]

/** Topology and GPU list of a capture, as the coordinator gets them from host facts. */
export function hostShape(topoText: string): Pick<SchedHost, 'gpus' | 'topology'> {
  const section = combineGpus([], parseTopo(topoText).value)
  const { labels, matrix, nvlinkDomains } = section.topology
  const gpus: SchedGpu[] = section.gpus.map((g) => ({ index: g.index, numaNode: g.numaNode }))
  return { gpus, topology: { labels, matrix, nvlinkDomains } }
}

/**
 * `n` hosts over the shapes above (pool sizes by share). About 2% are not
 * schedulable and about 20% already run something (a random part of their
 * GPUs is taken), so free sets vary as in a live fleet.
 */
export function buildFleet(n: number, seed: number): Fleet {
  const random = prng(seed)
  // Shapes are immutable and shared, as a scheduler would share parsed facts.
  const shapes = SHAPES.map((s) => ({ ...s, ...hostShape(s.topo()) }))
  const pools: FleetPool[] = shapes.map((s) => ({ key: s.key, kind: s.kind, gpusPerHost: s.gpus.length, hosts: 0 }))
  const hosts: SchedHost[] = []
  for (let i = 0; i < n; i++) {
    let pick = random()
    let s = 0
    while (s < shapes.length - 1 && pick >= (shapes[s] as Shape).share) {
      pick -= (shapes[s] as Shape).share
      s++
    }
    const shape = shapes[s] as (typeof shapes)[number]
    ;(pools[s] as FleetPool).hosts++
    const free = new Set(shape.gpus.map((g) => g.index))
    if (random() < 0.2) for (const g of shape.gpus) if (random() < 0.5) free.delete(g.index)
    const id = `host-${String(i).padStart(6, '0')}`
    hosts.push({
      id,
      name: `${shape.key.split('-')[0] as string}-${i}`,
      pool: shape.key,
      poolKind: shape.kind,
      schedulable: random() >= 0.02,
      gpus: shape.gpus,
      free,
      topology: shape.topology
    })
  }
  return { hosts, pools }
}

const RUN = { driver: 'process' as const, command: ['python3', 'serve.py'] }

/**
 * `n` workloads for the fleet's pools: half sessions, a third endpoints, the
 * rest recipes (some multi-host gangs), mostly small as in real use, 1-8 GPUs.
 * About 1% ask for something impossible (a wrong pool kind, more GPUs than
 * the pool's hosts have) so the refusal paths are timed too.
 */
export function buildWorkloads(n: number, seed: number, pools: FleetPool[]): SchedWorkload[] {
  const random = prng(seed)
  const pickOf = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T
  const weighted = (table: ReadonlyArray<readonly [number, number]>): number => {
    let r = random()
    for (const [value, weight] of table) {
      if (r < weight) return value
      r -= weight
    }
    return (table[table.length - 1] as readonly [number, number])[0]
  }
  const serving = pools.filter((p) => p.kind !== 'training')
  const batch = pools.filter((p) => p.kind !== 'inference')
  const fit = (gpus: number, pool: FleetPool) => (random() < 0.01 ? gpus : Math.min(gpus, pool.gpusPerHost))
  const out: SchedWorkload[] = []
  for (let i = 0; i < n; i++) {
    const id = `w-${String(i).padStart(6, '0')}`
    const name = `w${i}`
    const kind = random()
    if (kind < 0.5) {
      const pool = pickOf(pools)
      const spec: SessionSpec = {
        name,
        kind: 'session',
        pool: pool.key,
        gpus: fit(
          weighted([
            [1, 0.85],
            [2, 0.1],
            [4, 0.05]
          ]),
          pool
        ),
        run: RUN
      }
      out.push({ id, spec, placedReplicas: [], usedHosts: [] })
    } else if (kind < 0.85) {
      const first = random() < 0.01 ? pickOf(pools) : pickOf(serving)
      const second = pickOf(serving)
      const spec: EndpointSpec = {
        name,
        kind: 'endpoint',
        replicas: weighted([
          [1, 0.7],
          [2, 0.2],
          [4, 0.1]
        ]),
        gpus: fit(
          weighted([
            [1, 0.65],
            [2, 0.2],
            [4, 0.1],
            [8, 0.05]
          ]),
          first
        ),
        pools: random() < 0.3 && second.key !== first.key ? [first.key, second.key] : [first.key],
        run: RUN
      }
      out.push({ id, spec, placedReplicas: [], usedHosts: [] })
    } else {
      const pool = pickOf(batch)
      const spec: RecipeSpec = {
        name,
        kind: 'recipe',
        pool: pool.key,
        hosts: weighted([
          [1, 0.85],
          [2, 0.1],
          [4, 0.04],
          [16, 0.01]
        ]),
        gpus: fit(
          weighted([
            [8, 0.25],
            [4, 0.2],
            [2, 0.2],
            [1, 0.35]
          ]),
          pool
        ),
        restart: 'never',
        run: RUN
      }
      out.push({ id, spec, placedReplicas: [], usedHosts: [] })
    }
  }
  return out
}

/** A 72-GPU host (four NUMA nodes of 18, GPUs paired on PIX switches), every fifth GPU taken. */
export function host72(): SchedHost {
  const n = 72
  const labels = Array.from({ length: n }, (_, i) => `GPU${i}`)
  const node = (i: number) => Math.floor(i / 18)
  const matrix = labels.map((_, a) =>
    labels.map((_, b) =>
      a === b ? 'X' : node(a) === node(b) ? (Math.floor(a / 2) === Math.floor(b / 2) ? 'PIX' : 'NODE') : 'SYS'
    )
  )
  const gpus = labels.map((_, i) => ({ index: i, numaNode: node(i) }))
  return {
    id: 'big',
    name: 'big',
    pool: 'p',
    poolKind: 'static',
    schedulable: true,
    gpus,
    topology: { labels, matrix, nvlinkDomains: [] },
    free: new Set(gpus.map((g) => g.index).filter((i) => i % 5 !== 0))
  }
}

/** Random GPU health for a fleet's hosts (a copy): about a tenth of them with failed GPUs, a tenth with degraded ones. */
export function withHealth(fleet: Fleet, seed: number): Fleet {
  const random = prng(seed)
  const pick = (h: SchedHost) => new Set(h.gpus.map((g) => g.index).filter(() => random() < 0.3))
  return {
    ...fleet,
    hosts: fleet.hosts.map((h) => {
      const r = random()
      return r < 0.1 ? { ...h, failed: pick(h) } : r < 0.2 ? { ...h, degraded: pick(h) } : h
    })
  }
}
