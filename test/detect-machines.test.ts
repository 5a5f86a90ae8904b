// `gpumesh-agent detect --json` end to end on every fixture machine (real
// captures replayed by the nvidia-smi double). Expected values are read from
// the captures; see share/machines/MANIFEST.md for where each comes from.
import { readdirSync } from 'node:fs'
import t, { type Test } from 'tap'
import { HostFacts, type Gpu } from '../protocol/host-facts.js'
import { schemaErrors } from '../protocol/validate.js'
import { detectJson, machine, makeMachine, runDetect, warned } from './helpers/agent.js'
import { MACHINES } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'
import { type CellCase, checkCells, checkNics, type NicCases } from './helpers/topology.js'

interface MachineCase {
  key: string
  count: number
  /** Per GPU index: fields that must equal. */
  gpus?: Record<number, Partial<Gpu>>
  domains?: number[][]
  nics?: NicCases
  cells?: CellCase[]
  driver?: string | null
  cuda?: string | null
  /** Warning codes that must be present (storage.small depends on the test machine and is ignored). */
  warnings: string[]
}

const all = (n: number, g: Partial<Gpu>) => Object.fromEntries(Array.from({ length: n }, (_, i) => [i, g]))
const H100 = 'NVIDIA H100 80GB HBM3'
const A100 = 'NVIDIA A100-SXM4-80GB'
const NO_LINKS = { active: 0, total: 0, bandwidthGBs: null }
const NV18_H100 = { active: 18, total: 18, bandwidthGBs: 478.116 }

const CASES: Record<string, MachineCase> = {
  'h100-8x-nv18-nics': {
    key: 'h100-80gb-8x-nvlink',
    count: 8,
    gpus: {
      ...all(8, { name: H100 }),
      0: { name: H100, uuid: 'GPU-deb02430-f8f0-88a9-2871-7cc1acc99eee', numaNode: 0, cpuAffinity: '0-47,96-143' },
      4: { numaNode: 1, cpuAffinity: '48-95,144-191' }
    },
    domains: [[0, 1, 2, 3, 4, 5, 6, 7]],
    nics: { NIC0: ['mlx5_0', [0], 'PIX'], NIC3: ['mlx5_3', [3], 'PIX'], NIC7: ['mlx5_7', [7], 'PIX'] },
    cells: [
      ['GPU0', 'GPU5', 'NV18'],
      ['GPU0', 'NIC4', 'SYS']
    ],
    warnings: ['source.failed']
  },
  'h100-8x-nv18': {
    key: 'h100-80gb-8x-nvlink',
    count: 8,
    // The author snipped every GPU's link list: links unknown, not "none".
    gpus: {
      ...all(8, { name: H100, nvlink: null, cpuAffinity: '0-63', numaNode: 0 }),
      7: { uuid: 'GPU-5534d557-2a95-300a-81e6-7b626d87378a' }
    },
    domains: [[0, 1, 2, 3, 4, 5, 6, 7]],
    nics: {},
    warnings: ['source.partial']
  },
  'a100-8x-nv12': {
    key: 'a100-80gb-8x-nvlink',
    count: 8,
    gpus: {
      ...all(8, { name: A100, memoryMiB: 81920 }),
      0: { uuid: 'GPU-55748b5b-32df-bbd9-d0f6-f50980c12af8', numaNode: 0, cpuAffinity: '0-31,64-95' },
      7: { numaNode: 1, cpuAffinity: '32-63,96-127' }
    },
    domains: [[0, 1, 2, 3, 4, 5, 6, 7]],
    nics: { NIC0: ['mlx5_0', [0, 1], 'PXB'], NIC5: ['mlx5_5', [4, 5], 'PXB'] },
    cells: [['GPU3', 'GPU4', 'NV12']],
    driver: '570.133.20',
    warnings: ['gpu.end-of-life']
  },
  'a100-4x-mig': {
    key: 'a100-80gb-4x-unknown',
    count: 4,
    gpus: {
      0: {
        name: A100,
        uuid: 'GPU-513536b6-7d19-9063-b049-1e69664bb298',
        memoryMiB: 81920,
        pciBusId: '00000000:01:00.0',
        mig: {
          mode: 'enabled',
          devices: [
            { index: 0, profile: '1g.20gb', uuid: 'MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a' },
            { index: 1, profile: '1g.20gb', uuid: 'MIG-a45882f0-9215-5733-a0c1-49286ab31cb5' },
            { index: 2, profile: '1g.20gb', uuid: 'MIG-f00d722c-f4e1-52c9-aa31-750441ae1bfe' },
            { index: 3, profile: '1g.20gb', uuid: 'MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b' }
          ]
        }
      },
      // -q -x describes GPU 0 only: the others' memory and MIG mode stay unknown.
      3: { name: A100, uuid: 'GPU-69ec2344-ebac-b028-f88f-452abb3d7f11', memoryMiB: null, mig: null }
    },
    driver: '535.54.03',
    cuda: '12.2',
    warnings: ['gpu.end-of-life', 'source.partial']
  },
  'gb200-4x': {
    key: 'gb200-4x-nvlink',
    count: 4,
    gpus: {
      0: {
        name: 'NVIDIA GB200',
        nvlink: { active: 18, total: 18, bandwidthGBs: 956.25 },
        cpuAffinity: '0-35',
        numaNode: 0
      },
      // GPU 1's link list is cut ("..."); GPUs 2 and 3 have an empty CPU affinity cell.
      1: { name: 'NVIDIA GB200', nvlink: null },
      2: { name: null, cpuAffinity: null, numaNode: 1 },
      3: { name: null, cpuAffinity: null, numaNode: 1 }
    },
    domains: [[0, 1, 2, 3]],
    nics: { NIC0: ['mlx5_0', [0, 1, 2, 3], 'NODE'], NIC5: ['mlx5_5', [0, 1, 2, 3], 'NODE'] },
    warnings: ['gpu.unidentified', 'gpu.inconsistent', 'source.partial']
  },
  'rtx5090-2x-pcie': {
    key: 'gpu-2x-pcie',
    count: 2,
    gpus: all(2, { name: null, cpuAffinity: '0-63', numaNode: 0 }),
    domains: [],
    cells: [['GPU0', 'GPU1', 'PHB']],
    warnings: ['gpu.unidentified']
  },
  'h200-1x-mig': {
    key: 'h200-141gb-1x',
    count: 1,
    gpus: {
      0: {
        name: 'NVIDIA H200',
        memoryMiB: 143771,
        pciBusId: '00000000:83:00.0',
        nvlink: null,
        mig: {
          mode: 'enabled',
          devices: [
            { index: 0, profile: '1c.3g.71gb', uuid: 'MIG-00000000-0000-0000-0000-000000000000' },
            { index: 1, profile: '2c.3g.71gb', uuid: 'MIG-00000001-0000-0000-0000-000000000001' },
            { index: 2, profile: '2g.35gb', uuid: 'MIG-00000002-0000-0000-0000-000000000002' },
            { index: 3, profile: '1g.18gb', uuid: 'MIG-00000003-0000-0000-0000-000000000003' },
            { index: 4, profile: '1g.18gb', uuid: 'MIG-00000004-0000-0000-0000-000000000004' }
          ]
        }
      }
    },
    driver: '590.48.01',
    cuda: '13.1',
    warnings: ['source.partial']
  },
  'h200-1x': {
    key: 'h200-141gb-1x',
    count: 1,
    gpus: {
      0: {
        name: 'NVIDIA H200',
        memoryMiB: 143771,
        nvlink: NV18_H100,
        mig: { mode: 'disabled', devices: [] },
        cpuAffinity: '0-23'
      }
    },
    driver: '580.173.02',
    cuda: '13.0',
    warnings: []
  },
  'h100-1x': {
    key: 'h100-80gb-1x',
    count: 1,
    gpus: {
      0: {
        name: H100,
        memoryMiB: 81559,
        pciBusId: '00000000:00:09.0',
        nvlink: NV18_H100,
        mig: { mode: 'disabled', devices: [] }
      }
    },
    driver: '590.48.01',
    cuda: '13.1',
    warnings: []
  },
  'l40s-1x': {
    key: 'l40s-48gb-1x',
    count: 1,
    gpus: { 0: { name: 'NVIDIA L40S', memoryMiB: 46068, nvlink: NO_LINKS, mig: null, cpuAffinity: '0-7' } },
    driver: '595.80',
    cuda: '13.2',
    warnings: []
  },
  'h100-4x-nv18': {
    key: 'h100-80gb-4x-nvlink',
    count: 4,
    gpus: {
      ...all(4, { name: H100, memoryMiB: 81559 }),
      0: { pciBusId: '00000000:06:00.0' },
      3: { pciBusId: '00000000:09:00.0' }
    },
    domains: [[0, 1, 2, 3]],
    nics: { NIC0: ['mlx5_0', [0, 1, 2, 3], 'PHB'] },
    driver: '560.35.05',
    cuda: '12.6',
    warnings: []
  },
  'b200-8x': {
    key: 'b200-180gb-8x-nvlink',
    count: 8,
    gpus: {
      ...all(8, { name: 'NVIDIA B200', memoryMiB: 183359 }),
      0: { pciBusId: '00000000:1B:00.0' },
      7: { pciBusId: '00000000:DF:00.0', numaNode: 1 }
    },
    domains: [[0, 1, 2, 3, 4, 5, 6, 7]],
    // The damaged paste: cells that lost their separator are null, the NIC mapping still holds.
    cells: [
      ['GPU2', 'NIC8', null],
      ['GPU2', 'NIC10', 'SYS'],
      ['NIC8', 'GPU2', 'PXB']
    ],
    nics: { NIC8: ['mlx5_8', [2], 'PXB'], NIC10: ['mlx5_10', [4], 'PXB'] },
    driver: '570.158.01',
    cuda: '12.9',
    warnings: ['source.partial']
  },
  'rtx4090-8x': {
    key: 'rtx-4090-24gb-8x-unknown',
    count: 8,
    gpus: all(8, { name: 'NVIDIA GeForce RTX 4090', memoryMiB: 24564 }),
    warnings: ['gpu.unsupported']
  },
  't4-2x': {
    key: 't4-16gb-2x-unknown',
    count: 2,
    gpus: all(2, { name: 'Tesla T4', memoryMiB: 15360 }),
    warnings: ['gpu.unsupported']
  },
  'no-driver': { key: 'cpu', count: 0, driver: null, cuda: null, warnings: ['source.failed'] }
}

t.test('every machine folder has a case', async (t) => {
  const folders = readdirSync(MACHINES, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
  t.same(folders.sort(), Object.keys(CASES).sort())
})

const POLICY = ['gpu.end-of-life', 'gpu.unsupported', 'gpu.mixed', 'gpu.unidentified']

async function checkMachine(t: Test, m: Mismatches, name: string, c: MachineCase): Promise<void> {
  const run = await runDetect(t, machine(name))
  m.check(name, `detect exits 0 (stderr: ${run.stderr.slice(0, 300)})`, run.exitCode, 0)
  if (run.exitCode !== 0) return
  const facts = JSON.parse(run.stdout) as HostFacts
  m.check(name, 'valid HostFacts', schemaErrors(HostFacts, facts), [])
  m.check(name, 'pool key', facts.pool.key, c.key)
  m.check(name, 'GPU count', facts.gpus.length, c.count)
  m.check(
    name,
    'GPUs in index order',
    facts.gpus.map((g) => g.index),
    Array.from({ length: c.count }, (_, i) => i)
  )
  for (const [i, want] of Object.entries(c.gpus ?? {})) {
    const got = facts.gpus[Number(i)]
    for (const [field, value] of Object.entries(want))
      m.check(name, `GPU ${i} ${field}`, got?.[field as keyof Gpu], value)
  }
  if (c.domains !== undefined) m.check(name, 'NVLink domains', facts.topology.nvlinkDomains, c.domains)
  checkNics(m, name, facts.topology.nics, c.nics ?? {})
  checkCells(m, name, facts.topology, c.cells ?? [])
  if (c.driver !== undefined) m.check(name, 'driver version', facts.driverVersion, c.driver)
  if (c.cuda !== undefined) m.check(name, 'CUDA version', facts.cudaVersion, c.cuda)
  // storage.small depends on the test machine; of the policy warnings, exactly the expected ones.
  const codes = new Set(facts.warnings.map((w) => w.code).filter((code) => code !== 'storage.small'))
  m.check(
    name,
    'expected warnings present',
    c.warnings.filter((code) => !codes.has(code)),
    []
  )
  m.check(
    name,
    'no unexpected policy warning',
    POLICY.filter((code) => codes.has(code) && !c.warnings.includes(code)),
    []
  )
}

t.test('detect --json on every fixture machine', async (t) => {
  const m = new Mismatches()
  for (const [name, c] of Object.entries(CASES)) await checkMachine(t, m, name, c)
  t.same(m.list, [], 'every expected fact of every machine')
})

t.test('fallback calls only when identity is incomplete', async (t) => {
  const complete = await detectJson(t, makeMachine(t, { 'q-x.xml': { capture: 'a100-sxm4-80gb-1x-q-x-1.xml' } }))
  t.same(
    complete.calls.sort(),
    [
      '--query-gpu=index,uuid,name,memory.total,pci.bus_id,driver_version,mig.mode.current --format=csv',
      '-L',
      '-q -x',
      'nvlink -s',
      'topo -m'
    ].sort(),
    'the five contract calls, nothing else'
  )
  const partial = await detectJson(t, machine('h200-1x-mig'))
  t.ok(
    partial.calls.includes('-q') && partial.calls.includes(''),
    'no -q -x (no CUDA version): -q and the summary table are asked'
  )
  t.equal(partial.facts.cudaVersion, '13.1')
})

t.test('operator pool label', async (t) => {
  const { facts } = await detectJson(t, machine('h100-8x-nv18-nics'), { GPUMESH_POOL_LABEL: 'Reserved: ACME' })
  t.equal(facts.pool.key, 'h100-80gb-8x-nvlink-reserved-acme')
  t.equal(facts.pool.label, 'reserved-acme')
  t.notOk(warned(facts, 'gpu.unsupported'))
})
