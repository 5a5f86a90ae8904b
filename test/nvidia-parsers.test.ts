// Every real capture in share/nvidia-smi is parsed here, against
// values read by hand from the file itself (not from the parser).
import { readdirSync } from 'node:fs'
import t from 'tap'
import { combineGpus } from '../agent/detect/combine-gpus.js'
import type { GpuInventory } from '../agent/detect/nvidia/inventory.js'
import { parseList } from '../agent/detect/nvidia/parse-list.js'
import { parseNvlink } from '../agent/detect/nvidia/parse-nvlink.js'
import { parseQueryGpu } from '../agent/detect/nvidia/parse-query-gpu.js'
import { parseQueryText } from '../agent/detect/nvidia/parse-q-text.js'
import { parseQueryXml } from '../agent/detect/nvidia/parse-q-xml.js'
import { parseTable } from '../agent/detect/nvidia/parse-table.js'
import { parseTopo } from '../agent/detect/nvidia/parse-topo.js'
import { CAPTURES, capture } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'
import { type CellCase, checkCells, checkNics, type NicCases } from './helpers/topology.js'

interface TopoCase {
  kind: 'topo'
  labels: string[]
  cells: CellCase[]
  /** GPU label -> [CPU affinity, NUMA affinity, GPU NUMA ID] */
  attributes: Record<string, [string | null, string | null, string | null]>
  legend: Record<string, string>
  domains: number[][]
  nics: NicCases
  problems: number
}

interface GpuExpect {
  name?: string
  uuid?: string
  memoryMiB?: number
  pciBusId?: string
  mig?: string[]
  migMode?: 'enabled' | 'disabled' | null
  nvlink?: [number, number, number | null] | null
}
interface InventoryCase {
  kind: 'list' | 'nvlink' | 'qxml' | 'qtext' | 'table' | 'querycsv'
  /** For a noheader CSV: the fields the command asked for. */
  fields?: string[]
  count: number
  gpus: Record<number, GpuExpect>
  driver?: string | null
  cuda?: string | null
  problems: number
}

const gpusOf = (n: number) => Array.from({ length: n }, (_, i) => `GPU${i}`)
const nicsOf = (n: number, prefix = 'NIC') => Array.from({ length: n }, (_, i) => `${prefix}${i}`)
const legendOf = (n: number, first = 0) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`NIC${i}`, `mlx5_${i + first}`]))
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i)
/** A one-GPU host: the diagonal only, the GPU on NUMA node 0 with this CPU affinity, no NICs. */
const oneGpu = (cpuAffinity: string): TopoCase => ({
  kind: 'topo',
  labels: ['GPU0'],
  cells: [['GPU0', 'GPU0', 'X']],
  attributes: { GPU0: [cpuAffinity, '0', 'N/A'] },
  legend: {},
  domains: [],
  nics: {},
  problems: 0
})

const CASES: Record<string, TopoCase | InventoryCase> = {
  'a100-sxm4-80gb-8x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(8), ...nicsOf(8)],
    cells: [
      ['GPU0', 'GPU1', 'NV12'],
      ['GPU7', 'GPU6', 'NV12'],
      ['GPU0', 'NIC0', 'PXB'],
      ['GPU0', 'NIC2', 'NODE'],
      ['GPU0', 'NIC4', 'SYS'],
      ['NIC0', 'NIC1', 'PIX'],
      ['NIC7', 'NIC7', 'X']
    ],
    attributes: { GPU0: ['0-31,64-95', '0', null], GPU4: ['32-63,96-127', '1', null] },
    legend: legendOf(8),
    domains: [range(0, 7)],
    nics: {
      NIC0: ['mlx5_0', [0, 1], 'PXB'],
      NIC2: ['mlx5_2', [2, 3], 'PXB'],
      NIC4: ['mlx5_4', [4, 5], 'PXB'],
      NIC7: ['mlx5_7', [6, 7], 'PXB']
    },
    problems: 0
  },
  'b200-8x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(8), ...nicsOf(16)],
    cells: [
      ['GPU0', 'GPU1', 'NV18'],
      ['GPU0', 'NIC4', 'PXB'],
      ['GPU0', 'NIC8', 'NODE'],
      // "PXBNODE" and "SYSSYS": separators lost in the paste; never invented.
      ['GPU2', 'NIC7', 'NODE'],
      ['GPU2', 'NIC8', null],
      ['GPU2', 'NIC9', null],
      ['GPU2', 'NIC10', 'SYS'],
      ['GPU4', 'NIC8', null],
      ['GPU4', 'NIC9', null],
      ['GPU4', 'NIC10', 'PXB'],
      ['GPU7', 'NIC15', 'PXB'],
      ['NIC10', 'NIC8', null],
      ['NIC10', 'NIC10', 'X'],
      ['NIC15', 'NIC14', 'NODE'],
      // " X NODE" in one tab cell is two printed cells.
      ['NIC8', 'NIC8', 'X'],
      ['NIC8', 'NIC9', 'NODE'],
      ['NIC8', 'GPU2', 'PXB']
    ],
    attributes: {
      GPU0: ['0-55,112-167', '0', 'N/A'],
      GPU2: ['0-55,112-167', '0', 'N/A'],
      GPU7: ['56-111,168-223', '1', 'N/A']
    },
    legend: legendOf(16),
    domains: [range(0, 7)],
    nics: {
      NIC0: ['mlx5_0', [0, 1, 2, 3], 'NODE'],
      NIC4: ['mlx5_4', [0], 'PXB'],
      NIC7: ['mlx5_7', [1], 'PXB'],
      NIC8: ['mlx5_8', [2], 'PXB'],
      NIC10: ['mlx5_10', [4], 'PXB'],
      NIC15: ['mlx5_15', [7], 'PXB']
    },
    problems: 11
  },
  'gb200-4x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(4), ...nicsOf(6)],
    cells: [
      ['GPU0', 'GPU3', 'NV18'],
      ['GPU2', 'GPU1', 'NV18'],
      ['GPU0', 'NIC0', 'NODE'],
      ['NIC5', 'NIC4', 'NODE']
    ],
    attributes: {
      GPU0: ['0-35', '0', 'N/A'],
      GPU1: ['0-35', '0', 'N/A'],
      GPU2: [null, '1', 'N/A'],
      GPU3: [null, '1', 'N/A']
    },
    legend: legendOf(6),
    domains: [range(0, 3)],
    nics: { NIC0: ['mlx5_0', [0, 1, 2, 3], 'NODE'], NIC5: ['mlx5_5', [0, 1, 2, 3], 'NODE'] },
    problems: 0
  },
  'h100-1x-topo-m-1.txt': oneGpu('0-19'),
  'h100-4x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(4), ...nicsOf(8)],
    cells: [
      ['GPU0', 'GPU1', 'NV18'],
      ['GPU3', 'NIC7', 'PHB'],
      ['NIC7', 'NIC7', 'X'],
      ['NIC0', 'NIC7', 'PHB']
    ],
    attributes: { GPU0: ['0-79', '0', 'N/A'], GPU3: ['0-79', '0', 'N/A'] },
    legend: legendOf(8),
    domains: [range(0, 3)],
    nics: { NIC0: ['mlx5_0', [0, 1, 2, 3], 'PHB'], NIC7: ['mlx5_7', [0, 1, 2, 3], 'PHB'] },
    problems: 0
  },
  'h100-8x-topo-m-1.txt': {
    kind: 'topo',
    labels: gpusOf(8),
    cells: [
      ['GPU0', 'GPU7', 'NV18'],
      ['GPU5', 'GPU5', 'X']
    ],
    attributes: { GPU0: ['0-51,104-155', '0', null], GPU4: ['52-103,156-207', '1', null] },
    legend: {},
    domains: [range(0, 7)],
    nics: {},
    problems: 0
  },
  'h100-sxm-8x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(8), ...nicsOf(8)],
    cells: [
      ['GPU0', 'NIC0', 'PIX'],
      ['GPU0', 'NIC1', 'NODE'],
      ['GPU0', 'NIC4', 'SYS'],
      ['GPU6', 'GPU2', 'NV18'],
      ['NIC3', 'NIC2', 'NODE']
    ],
    attributes: { GPU0: ['0-47,96-143', '0', 'N/A'], GPU4: ['48-95,144-191', '1', 'N/A'] },
    legend: legendOf(8),
    domains: [range(0, 7)],
    nics: Object.fromEntries(range(0, 7).map((i) => [`NIC${i}`, [`mlx5_${i}`, [i], 'PIX']])),
    problems: 0
  },
  'h20-8x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(8), ...nicsOf(8)],
    cells: [
      ['GPU1', 'NIC1', 'PIX'],
      ['GPU7', 'NIC0', 'SYS']
    ],
    attributes: { GPU7: ['48-95,144-191', '1', 'N/A'] },
    legend: legendOf(8, 1),
    domains: [range(0, 7)],
    nics: { NIC0: ['mlx5_1', [0], 'PIX'], NIC7: ['mlx5_8', [7], 'PIX'] },
    problems: 0
  },
  'h200-1x-topo-m-mig-1.txt': oneGpu('0-23'),
  'rtx5090-2x-topo-m-1.txt': {
    kind: 'topo',
    labels: gpusOf(2),
    cells: [
      ['GPU0', 'GPU1', 'PHB'],
      ['GPU1', 'GPU0', 'PHB']
    ],
    attributes: { GPU1: ['0-63', '0', 'N/A'] },
    legend: {},
    domains: [],
    nics: {},
    problems: 0
  },
  'unknown-nvlink-2x-topo-m-1.txt': {
    kind: 'topo',
    labels: [...gpusOf(2), ...nicsOf(8, 'mlx5_')],
    cells: [
      ['GPU0', 'GPU1', 'NV12'],
      ['GPU0', 'mlx5_6', 'PXB'],
      ['mlx5_0', 'mlx5_1', 'PIX'],
      ['mlx5_7', 'mlx5_7', 'X']
    ],
    attributes: { GPU0: ['48-95,144-191', '1', null] },
    legend: {},
    domains: [[0, 1]],
    nics: { mlx5_0: ['mlx5_0', [0, 1], 'SYS'], mlx5_4: ['mlx5_4', [0, 1], 'NODE'], mlx5_6: ['mlx5_6', [0, 1], 'PXB'] },
    problems: 0
  },
  'a100-sxm4-80gb-8x-L-1.txt': {
    kind: 'list',
    count: 8,
    problems: 0,
    gpus: {
      0: { name: 'NVIDIA A100-SXM4-80GB', uuid: 'GPU-55748b5b-32df-bbd9-d0f6-f50980c12af8', mig: [] },
      7: { uuid: 'GPU-5c084fc6-2373-fab1-7e48-aa2ae120117c' }
    }
  },
  'a100-sxm4-80gb-8x-query-gpu-csv-1.txt': {
    // Header "name, memory.total [MiB], driver_version": no index column, rows are in index order.
    kind: 'querycsv',
    count: 8,
    problems: 0,
    driver: '570.133.20',
    gpus: { 0: { name: 'NVIDIA A100-SXM4-80GB', memoryMiB: 81920 }, 7: { memoryMiB: 81920 } }
  },
  'h100-1x-q-1.txt': {
    kind: 'qtext',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    cuda: '13.1',
    gpus: { 0: { name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559, pciBusId: '00000000:00:09.0', migMode: 'disabled' } }
  },
  'h100-1x-query-gpu-csv-1.txt': {
    // 212 columns, units in header and values, "[N/A]" and "[Requested functionality has been deprecated]".
    kind: 'querycsv',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    gpus: {
      0: {
        name: 'NVIDIA H100 80GB HBM3',
        uuid: 'GPU-00000000-0000-0000-0000-000000000000',
        memoryMiB: 81559,
        pciBusId: '00000000:00:09.0',
        migMode: 'disabled'
      }
    }
  },
  'h100-1x-smi-1.txt': {
    kind: 'table',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    cuda: '13.1',
    gpus: { 0: { name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559, pciBusId: '00000000:00:09.0' } }
  },
  'h100-1x-topo-m-2.txt': oneGpu('0-19'),
  'h100-8x-L-1.txt': {
    // CRLF line endings.
    kind: 'list',
    count: 8,
    problems: 0,
    gpus: {
      0: { name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-c7a0294c-c2c2-5476-438c-fb468eaa223b' },
      7: { uuid: 'GPU-5534d557-2a95-300a-81e6-7b626d87378a' }
    }
  },
  'h100-8x-L-2.txt': {
    kind: 'list',
    count: 8,
    problems: 0,
    gpus: {
      0: { name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-deb02430-f8f0-88a9-2871-7cc1acc99eee' },
      7: { uuid: 'GPU-c674bee4-9599-7385-18a5-ee64430a859a' }
    }
  },
  'h100-8x-nvlink-s-1.txt': {
    kind: 'nvlink',
    count: 8,
    problems: 0,
    gpus: Object.fromEntries(
      range(0, 7).map((i) => [
        i,
        { name: 'NVIDIA H100 80GB HBM3', nvlink: [18, 18, 478.116] as [number, number, number] }
      ])
    )
  },
  'h100-8x-nvlink-s-2.txt': {
    // "...<snip>..." inside every GPU's block: no GPU's links are known.
    kind: 'nvlink',
    count: 8,
    problems: 8,
    gpus: { 0: { uuid: 'GPU-c7a0294c-c2c2-5476-438c-fb468eaa223b', nvlink: null }, 7: { nvlink: null } }
  },
  'h100-8x-query-gpu-csv-1.txt': {
    kind: 'querycsv',
    fields: ['index', 'name'],
    count: 8,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA H100 80GB HBM3' }, 7: { name: 'NVIDIA H100 80GB HBM3' } }
  },
  'h100-8x-topo-m-2.txt': {
    // CRLF line endings.
    kind: 'topo',
    labels: gpusOf(8),
    cells: [
      ['GPU0', 'GPU7', 'NV18'],
      ['GPU7', 'GPU7', 'X']
    ],
    attributes: { GPU0: ['0-63', '0', 'N/A'], GPU7: ['0-63', '0', 'N/A'] },
    legend: {},
    domains: [range(0, 7)],
    nics: {},
    problems: 0
  },
  'h200-1x-L-1.txt': { kind: 'list', count: 1, problems: 0, gpus: { 0: { name: 'NVIDIA H200', mig: [] } } },
  'h200-1x-nvlink-s-1.txt': {
    kind: 'nvlink',
    count: 1,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA H200', nvlink: [18, 18, 478.116] } }
  },
  'h200-1x-q-1.txt': {
    kind: 'qtext',
    count: 1,
    problems: 0,
    driver: '580.173.02',
    cuda: '13.0',
    gpus: { 0: { name: 'NVIDIA H200', memoryMiB: 143771, pciBusId: '00000000:83:00.0', migMode: 'disabled' } }
  },
  'h200-1x-query-gpu-csv-1.txt': {
    kind: 'querycsv',
    count: 1,
    problems: 0,
    driver: '580.173.02',
    gpus: { 0: { name: 'NVIDIA H200', memoryMiB: 143771, pciBusId: '00000000:83:00.0', migMode: 'disabled' } }
  },
  'h200-1x-query-gpu-csv-mig-1.txt': {
    kind: 'querycsv',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    gpus: { 0: { name: 'NVIDIA H200', memoryMiB: 143771, migMode: 'enabled' } }
  },
  'h200-1x-smi-1.txt': {
    kind: 'table',
    count: 1,
    problems: 0,
    driver: '580.173.02',
    cuda: '13.0',
    gpus: { 0: { name: 'NVIDIA H200', memoryMiB: 143771, pciBusId: '00000000:83:00.0', migMode: 'disabled' } }
  },
  'h200-1x-topo-m-1.txt': oneGpu('0-23'),
  'h200-1x-topo-m-mig-2.txt': oneGpu('0-23'),
  'l40s-1x-L-1.txt': { kind: 'list', count: 1, problems: 0, gpus: { 0: { name: 'NVIDIA L40S' } } },
  'l40s-1x-nvlink-s-1.txt': {
    // "Device does not have or support Nvlink": no links, which is not a failure.
    kind: 'nvlink',
    count: 1,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA L40S', nvlink: [0, 0, null] } }
  },
  'l40s-1x-q-1.txt': {
    kind: 'qtext',
    count: 1,
    problems: 0,
    driver: '595.80',
    cuda: '13.2',
    gpus: { 0: { name: 'NVIDIA L40S', memoryMiB: 46068, pciBusId: '00000000:01:00.0', migMode: null } }
  },
  'l40s-1x-query-gpu-csv-1.txt': {
    kind: 'querycsv',
    count: 1,
    problems: 0,
    driver: '595.80',
    gpus: { 0: { name: 'NVIDIA L40S', memoryMiB: 46068, pciBusId: '00000000:01:00.0', migMode: null } }
  },
  'l40s-1x-smi-2.txt': {
    kind: 'table',
    count: 1,
    problems: 0,
    driver: '595.80',
    cuda: '13.2',
    gpus: { 0: { name: 'NVIDIA L40S', memoryMiB: 46068, pciBusId: '00000000:01:00.0' } }
  },
  'l40s-1x-topo-m-1.txt': oneGpu('0-7'),
  'a100-sxm4-80gb-1x-L-mig-1.txt': {
    kind: 'list',
    count: 1,
    problems: 0,
    gpus: {
      0: {
        name: 'NVIDIA A100-SXM4-80GB',
        uuid: 'GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16',
        mig: Array(7).fill('1g.10gb')
      }
    }
  },
  'a100-sxm4-80gb-4x-L-mig-1.txt': {
    kind: 'list',
    count: 4,
    problems: 0,
    gpus: {
      0: {
        name: 'NVIDIA A100-SXM4-80GB',
        uuid: 'GPU-513536b6-7d19-9063-b049-1e69664bb298',
        mig: Array(4).fill('1g.20gb')
      },
      3: { uuid: 'GPU-69ec2344-ebac-b028-f88f-452abb3d7f11', mig: [] }
    }
  },
  'h100-1x-L-1.txt': {
    kind: 'list',
    count: 1,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-00000000-0000-0000-0000-000000000000', mig: [] } }
  },
  'h200-1x-L-mig-1.txt': {
    kind: 'list',
    count: 1,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA H200', mig: ['1c.3g.71gb', '2c.3g.71gb', '2g.35gb', '1g.18gb', '1g.18gb'] } }
  },
  'gb200-nx-nvlink-s-1.txt': {
    // The poster cut the output after GPU 1's third link ("..."): GPU 1 is unknown.
    kind: 'nvlink',
    count: 2,
    problems: 1,
    gpus: { 0: { name: 'NVIDIA GB200', nvlink: [18, 18, 956.25] }, 1: { nvlink: null } }
  },
  'h100-1x-nvlink-s-1.txt': {
    kind: 'nvlink',
    count: 1,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA H100 80GB HBM3', nvlink: [18, 18, 478.116] } }
  },
  'h200-1x-nvlink-s-mig-1.txt': {
    kind: 'nvlink',
    count: 1,
    problems: 1,
    gpus: { 0: { name: 'NVIDIA H200', nvlink: null } }
  },
  'a100-sxm4-80gb-1x-q-x-1.xml': {
    // attached_gpus says 4, one <gpu> is described.
    kind: 'qxml',
    count: 1,
    problems: 1,
    driver: '535.54.03',
    cuda: '12.2',
    gpus: {
      0: {
        name: 'NVIDIA A100-SXM4-80GB',
        uuid: 'GPU-513536b6-7d19-9063-b049-1e69664bb298',
        memoryMiB: 81920,
        pciBusId: '00000000:01:00.0',
        migMode: 'enabled',
        mig: ['?', '?', '?', '?']
      }
    }
  },
  'h200-1x-q-mig-1.txt': {
    kind: 'qtext',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    cuda: '13.1',
    gpus: {
      0: {
        name: 'NVIDIA H200',
        uuid: 'GPU-00000000-0000-0000-0000-000000000000',
        memoryMiB: 143771,
        pciBusId: '00000000:83:00.0',
        migMode: 'enabled',
        mig: ['?', '?', '?', '?', '?']
      }
    }
  },
  'b200-8x-smi-1.txt': {
    kind: 'table',
    count: 8,
    problems: 0,
    driver: '570.158.01',
    cuda: '12.9',
    gpus: {
      0: { name: 'NVIDIA B200', memoryMiB: 183359, pciBusId: '00000000:1B:00.0', migMode: 'disabled' },
      7: { pciBusId: '00000000:DF:00.0' }
    }
  },
  'h100-4x-smi-1.txt': {
    kind: 'table',
    count: 4,
    problems: 0,
    driver: '560.35.05',
    cuda: '12.6',
    gpus: {
      0: { name: 'NVIDIA H100 80GB HBM3', memoryMiB: 81559, pciBusId: '00000000:06:00.0' },
      3: { pciBusId: '00000000:09:00.0' }
    }
  },
  'h200-1x-smi-mig-1.txt': {
    kind: 'table',
    count: 1,
    problems: 0,
    driver: '590.48.01',
    cuda: '13.1',
    gpus: { 0: { name: 'NVIDIA H200', memoryMiB: 143771, pciBusId: '00000000:83:00.0', migMode: 'enabled' } }
  },
  'l40s-1x-smi-1.txt': {
    kind: 'table',
    count: 1,
    problems: 0,
    driver: '595.80',
    cuda: '13.2',
    gpus: { 0: { name: 'NVIDIA L40S', memoryMiB: 46068, pciBusId: '00000000:01:00.0', migMode: null } }
  },
  'rtx4080-1x-smi-1.txt': {
    // The name column cuts "NVIDIA GeForce RTX 4080 SUPER": kept as printed, flagged.
    kind: 'table',
    count: 1,
    problems: 1,
    driver: '580.105.08',
    cuda: '13.0',
    gpus: { 0: { name: 'NVIDIA GeForce RTX 4080 ...', memoryMiB: 16376, pciBusId: '00000000:01:00.0', migMode: null } }
  },
  'rtx4090-8x-query-gpu-csv-1.txt': {
    kind: 'querycsv',
    count: 8,
    problems: 0,
    gpus: { 0: { name: 'NVIDIA GeForce RTX 4090', memoryMiB: 24564 }, 7: { name: 'NVIDIA GeForce RTX 4090' } }
  },
  't4-2x-query-gpu-csv-1.txt': {
    kind: 'querycsv',
    count: 2,
    problems: 0,
    gpus: { 0: { name: 'Tesla T4', memoryMiB: 15360 }, 1: { name: 'Tesla T4', memoryMiB: 15360 } }
  }
}

const INVENTORY_PARSERS = {
  list: parseList,
  nvlink: parseNvlink,
  qxml: parseQueryXml,
  qtext: parseQueryText,
  table: parseTable,
  querycsv: parseQueryGpu
}

t.test('every capture has expectations here', async (t) => {
  const files = readdirSync(CAPTURES).filter((f) => /\.(txt|xml)$/.test(f))
  t.ok(files.length >= 53, 'the captures are present')
  t.same(
    files.filter((f) => !(f in CASES)),
    [],
    'captures without a case'
  )
})

function checkTopo(m: Mismatches, file: string, c: TopoCase): void {
  const { value, problems } = parseTopo(capture(file))
  m.check(file, 'labels in printed order', value.labels, c.labels)
  m.check(file, 'one row per label', value.matrix.length, c.labels.length)
  checkCells(m, file, value, c.cells)
  for (const [gpu, [cpu, numa, gpuNuma]] of Object.entries(c.attributes)) {
    m.check(file, `${gpu} affinity`, value.attributes.get(gpu), {
      cpuAffinity: cpu,
      numaAffinity: numa,
      gpuNumaId: gpuNuma
    })
  }
  m.check(file, 'NIC legend', Object.fromEntries(value.nicLegend), c.legend)
  m.check(file, `problems: ${problems.join('; ')}`, problems.length, c.problems)
  const { topology } = combineGpus([], value)
  m.check(file, 'NVLink domains', topology.nvlinkDomains, c.domains)
  checkNics(m, file, topology.nics, c.nics)
  m.check(
    file,
    'every non-GPU column is a NIC',
    topology.nics.length,
    c.labels.filter((l) => !l.startsWith('GPU')).length
  )
}

function checkInventory(m: Mismatches, file: string, c: InventoryCase): void {
  const text = capture(file)
  const { value, problems } = (
    c.kind === 'querycsv' && c.fields !== undefined ? parseQueryGpu(text, c.fields) : INVENTORY_PARSERS[c.kind](text)
  ) as { value: GpuInventory; problems: string[] }
  m.check(file, 'GPU count', value.gpus.length, c.count)
  m.check(file, `problems: ${problems.join('; ')}`, problems.length, c.problems)
  if (c.driver !== undefined) m.check(file, 'driver version', value.driverVersion, c.driver)
  if (c.cuda !== undefined) m.check(file, 'CUDA version', value.cudaVersion, c.cuda)
  for (const [i, e] of Object.entries(c.gpus)) {
    const g = value.gpus[Number(i)]
    if (g === undefined) {
      m.check(file, `GPU ${i} present`, undefined, 'a GPU')
      continue
    }
    if (c.kind !== 'qxml' && c.kind !== 'qtext') m.check(file, `GPU ${i} index`, g.index, Number(i))
    if (e.name !== undefined) m.check(file, `GPU ${i} name`, g.name, e.name)
    if (e.uuid !== undefined) m.check(file, `GPU ${i} uuid`, g.uuid, e.uuid)
    if (e.memoryMiB !== undefined) m.check(file, `GPU ${i} memory`, g.memoryMiB, e.memoryMiB)
    if (e.pciBusId !== undefined) m.check(file, `GPU ${i} bus id`, g.pciBusId, e.pciBusId)
    if (e.migMode !== undefined) m.check(file, `GPU ${i} MIG mode`, g.migMode, e.migMode)
    if (e.mig !== undefined)
      m.check(
        file,
        `GPU ${i} MIG devices`,
        (g.migDevices ?? []).map((d) => d.profile ?? '?'),
        e.mig
      )
    if (e.nvlink !== undefined) {
      m.check(
        file,
        `GPU ${i} NVLink`,
        g.nvlink === null || g.nvlink === undefined ? null : [g.nvlink.active, g.nvlink.total, g.nvlink.bandwidthGBs],
        e.nvlink
      )
    }
  }
}

t.test('nvidia-smi topo -m captures: labels, cells, affinities, NICs, NVLink domains', async (t) => {
  const m = new Mismatches()
  for (const [file, c] of Object.entries(CASES)) if (c.kind === 'topo') checkTopo(m, file, c)
  t.same(m.list, [], 'every expected value of every topo capture')
})

t.test('nvidia-smi inventory captures (-L, nvlink -s, -q, -q -x, the table, --query-gpu)', async (t) => {
  const m = new Mismatches()
  for (const [file, c] of Object.entries(CASES)) if (c.kind !== 'topo') checkInventory(m, file, c)
  t.same(m.list, [], 'every expected value of every inventory capture')
})
