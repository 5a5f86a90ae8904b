// Pool keys are derived from the model string, memory, count and
// interconnect, deterministically; see agent/detect/pool.ts for the rules.
import t from 'tap'
import type { Gpu, Topology } from '../protocol/host-facts.js'
import { combineGpus } from '../agent/detect/combine-gpus.js'
import { parseTopo } from '../agent/detect/nvidia/parse-topo.js'
import { derivePool, family, memoryClassGB, sanitizeLabel } from '../agent/detect/pool.js'
import { policyWarnings } from '../agent/detect/policy.js'
import { capture } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'

const gpu = (index: number, name: string | null, memoryMiB: number | null, nvlink: Gpu['nvlink'] = null): Gpu => ({
  index,
  name,
  memoryMiB,
  uuid: null,
  pciBusId: null,
  numaNode: null,
  cpuAffinity: null,
  mig: null,
  nvlink
})
const many = (n: number, name: string, memoryMiB: number) =>
  Array.from({ length: n }, (_, i) => gpu(i, name, memoryMiB))
const topologyOf = (file: string): Topology => combineGpus([], parseTopo(capture(file)).value).topology
const NO_TOPOLOGY: Topology = { labels: [], matrix: [], nvlinkDomains: [], nics: [] }

/** A PCIe host with NVLink bridges on pairs (0-1, 2-3), as printed by topo -m. */
const BRIDGED_PAIRS = combineGpus(
  [],
  parseTopo(
    '\tGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\n' +
      'GPU0\t X \tNV4\tSYS\tSYS\t0-15\t0\n' +
      'GPU1\tNV4\t X \tSYS\tSYS\t0-15\t0\n' +
      'GPU2\tSYS\tSYS\t X \tNV4\t16-31\t1\n' +
      'GPU3\tSYS\tSYS\tNV4\t X \t16-31\t1\n'
  ).value
).topology

t.test('family and memory class from the model string and memory size', async (t) => {
  const cases: Array<[string, number | null, string, number | null]> = [
    ['NVIDIA H100 80GB HBM3', 81559, 'h100', 80],
    ['NVIDIA A100-SXM4-80GB', 81920, 'a100', 80],
    ['NVIDIA A100-PCIE-40GB', 40960, 'a100-pcie', 40],
    ['NVIDIA H100 NVL', 95830, 'h100-nvl', 94],
    ['NVIDIA H200', 143771, 'h200', 141],
    ['NVIDIA B200', 183359, 'b200', 180],
    ['NVIDIA L40S', 46068, 'l40s', 48],
    ['NVIDIA L4', 23034, 'l4', 24],
    ['NVIDIA H20', 97871, 'h20', 96],
    ['NVIDIA GeForce RTX 4090', 24564, 'rtx-4090', 24],
    ['Tesla T4', 15360, 't4', 16],
    ['NVIDIA GB200', null, 'gb200', null],
    // The summary table cuts long names: a partial last word is dropped.
    ['NVIDIA GeForce RTX 4080 ...', 16376, 'rtx-4080', 16],
    ['NVIDIA H100 80G...', 81559, 'h100', 80]
  ]
  const m = new Mismatches()
  for (const [name, mib, fam, gb] of cases) {
    m.check(name, 'family', family(name), fam)
    m.check(name, `memory class of ${String(mib)} MiB`, memoryClassGB(name, mib), gb)
  }
  t.same(m.list, [], 'each model string: its family and memory class')
})

t.test('pool keys of real topologies', async (t) => {
  const cases: Array<[topo: string | Topology, gpus: Gpu[], key: string]> = [
    ['h100-sxm-8x-topo-m-1.txt', many(8, 'NVIDIA H100 80GB HBM3', 81559), 'h100-80gb-8x-nvlink'],
    ['a100-sxm4-80gb-8x-topo-m-1.txt', many(8, 'NVIDIA A100-SXM4-80GB', 81920), 'a100-80gb-8x-nvlink'],
    ['gb200-4x-topo-m-1.txt', many(4, 'NVIDIA GB200', 189471), 'gb200-186gb-4x-nvlink'],
    ['rtx5090-2x-topo-m-1.txt', many(2, 'NVIDIA GeForce RTX 5090', 32607), 'rtx-5090-32gb-2x-pcie'],
    [BRIDGED_PAIRS, many(4, 'NVIDIA L40S', 46068), 'l40s-48gb-4x-nvlink-partial']
  ]
  const m = new Mismatches()
  for (const [topo, gpus, key] of cases) {
    const what = typeof topo === 'string' ? topo : 'L40S with NVLink bridges on pairs'
    m.check(what, 'pool key', derivePool(gpus, typeof topo === 'string' ? topologyOf(topo) : topo).key, key)
  }
  t.same(m.list, [], 'each topology: its pool key')
})

t.test('interconnect without a topology falls back to nvlink -s', async (t) => {
  const linked = { active: 18, total: 18, bandwidthGBs: 478.116 }
  const idle = { active: 0, total: 0, bandwidthGBs: null }
  t.equal(
    derivePool(
      [gpu(0, 'NVIDIA H100 80GB HBM3', 81559, linked), gpu(1, 'NVIDIA H100 80GB HBM3', 81559, linked)],
      NO_TOPOLOGY
    ).interconnect,
    'nvlink'
  )
  t.equal(
    derivePool([gpu(0, 'NVIDIA L40S', 46068, idle), gpu(1, 'NVIDIA L40S', 46068, idle)], NO_TOPOLOGY).interconnect,
    'pcie'
  )
  t.equal(
    derivePool([gpu(0, 'NVIDIA L40S', 46068), gpu(1, 'NVIDIA L40S', 46068)], NO_TOPOLOGY).key,
    'l40s-48gb-2x-unknown'
  )
})

t.test('an unreadable GPU-GPU cell cannot prove PCIe', async (t) => {
  const topo = topologyOf('rtx5090-2x-topo-m-1.txt')
  const damaged = { ...topo, matrix: topo.matrix.map((row) => row.map((c) => (c === 'PHB' ? null : c))) }
  t.equal(derivePool(many(2, 'NVIDIA GeForce RTX 5090', 32607), damaged).interconnect, 'unknown')
})

t.test('single GPU, no GPU, mixed, unknown, label', async (t) => {
  t.equal(
    derivePool([gpu(0, 'NVIDIA H200', 143771)], topologyOf('h200-1x-topo-m-mig-1.txt')).key,
    'h200-141gb-1x',
    'one GPU has no peer: no interconnect'
  )
  t.same(derivePool([], NO_TOPOLOGY), {
    key: 'cpu',
    family: 'cpu',
    memoryGB: null,
    gpuCount: 0,
    interconnect: 'none',
    label: null
  })
  t.equal(derivePool([], NO_TOPOLOGY, 'Batch Reserved').key, 'cpu-batch-reserved')
  t.equal(
    derivePool([gpu(0, 'NVIDIA H100 80GB HBM3', 81559), gpu(1, 'NVIDIA H200', 143771)], NO_TOPOLOGY).key,
    'mixed-80gb-2x-unknown',
    'mixed models: smallest memory'
  )
  t.equal(
    derivePool(
      many(8, 'x', 0).map((g) => ({ ...g, name: null, memoryMiB: null })),
      topologyOf('h100-8x-topo-m-1.txt')
    ).key,
    'gpu-8x-nvlink',
    'unknown model and memory are left out, not guessed'
  )
  t.equal(
    derivePool(many(8, 'NVIDIA H100 80GB HBM3', 81559), topologyOf('h100-8x-topo-m-1.txt'), 'ACME/reserved').key,
    'h100-80gb-8x-nvlink-acme-reserved'
  )
  t.equal(sanitizeLabel('  '), null)
  t.equal(sanitizeLabel('--Team.A--'), 'team.a')
})

t.test('the same facts always give the same key', async (t) => {
  const gpus = many(8, 'NVIDIA H100 80GB HBM3', 81559)
  const topo = topologyOf('h100-sxm-8x-topo-m-1.txt')
  t.same(derivePool(gpus, topo), derivePool(structuredClone(gpus), structuredClone(topo)))
})

t.test('policy warnings', async (t) => {
  const codes = (gpus: Gpu[], disks = 1e12) =>
    policyWarnings(gpus, [
      {
        device: '/dev/nvme0n1p1',
        mount: '/',
        fsType: 'ext4',
        sizeBytes: disks,
        freeBytes: 1,
        rotational: false,
        nvme: true
      }
    ]).map((w) => w.code)
  t.same(codes(many(8, 'NVIDIA H100 80GB HBM3', 81559)), [], 'a supported host has no warnings')
  t.same(codes(many(8, 'NVIDIA A100-SXM4-80GB', 81920)), ['gpu.end-of-life'])
  t.same(codes(many(2, 'Tesla T4', 15360)), ['gpu.unsupported'])
  t.same(codes([gpu(0, 'NVIDIA L40S', 46068), gpu(1, 'NVIDIA L4', 23034)]), ['gpu.mixed'])
  t.same(codes([gpu(0, null, null)]), ['gpu.unidentified'])
  t.same(codes([], 250e9), ['storage.small'])
  t.same(policyWarnings([], null), [], 'unknown disks: no storage verdict')
})
