// Merges what the nvidia-smi sources said into gpus[] and topology. Records
// are matched by UUID, then PCI bus id, then index; for each field the first
// source (in priority order) that knows it wins. Nothing is guessed: a value
// no source printed stays null.
import type { Gpu, Topology, TopologyNic } from '../../protocol/host-facts.js'
import type { GpuInventory, GpuRecord } from './nvidia/inventory.js'
import type { TopoMatrix } from './nvidia/parse-topo.js'

export interface GpuSection {
  gpus: Gpu[]
  topology: Topology
  driverVersion: string | null
  cudaVersion: string | null
  /** Disagreements between sources, for warnings[]. */
  problems: string[]
}

interface Group {
  index: number
  records: Array<{ priority: number; record: GpuRecord }>
}

export function combineGpus(inventories: GpuInventory[], topo: TopoMatrix | null): GpuSection {
  const problems: string[] = []
  const groups: Group[] = []
  const driverVersion = inventories.map((i) => i.driverVersion ?? null).find((v) => v !== null) ?? null
  const cudaVersion = inventories.map((i) => i.cudaVersion ?? null).find((v) => v !== null) ?? null
  const sameDevice = (a: GpuRecord, b: GpuRecord, uuids: Set<string>) =>
    (b.uuid != null && uuids.has(b.uuid) && a.uuid === b.uuid) ||
    (a.pciBusId != null && b.pciBusId != null && busId(a.pciBusId) === busId(b.pciBusId))
  const conflict = (a: GpuRecord, b: GpuRecord) =>
    (a.uuid != null && b.uuid != null && a.uuid !== b.uuid) ||
    (a.pciBusId != null && b.pciBusId != null && busId(a.pciBusId) !== busId(b.pciBusId))

  // Sources that print indices first, so that -q -x and -q (which only give
  // an order) attach to the GPUs they describe, not to a position.
  for (const indexed of [true, false]) {
    const anyIndexed = groups.length > 0
    inventories.forEach((inv, priority) => {
      const uuids = unique(inv.gpus.map((g) => g.uuid ?? null))
      inv.gpus.forEach((record, position) => {
        if ((record.index !== null) !== indexed) return
        const index = record.index ?? position
        // nvidia-smi numbers GPUs the same way in every call, so an index is
        // an identity too; sources that then disagree on UUID or bus id are
        // reported rather than split into two GPUs.
        const found =
          groups.find((g) => g.records.some((r) => sameDevice(r.record, record, uuids))) ??
          (indexed || !anyIndexed ? groups.find((g) => g.index === index) : undefined)
        const clash = found?.records.find((r) => conflict(r.record, record))
        if (clash !== undefined)
          problems.push(
            `GPU ${index}: sources disagree on its identity (${describe(clash.record)} vs ${describe(record)})`
          )
        if (found !== undefined) found.records.push({ priority, record })
        else if (indexed || !anyIndexed) groups.push({ index, records: [{ priority, record }] })
        else
          problems.push(
            `a GPU described by one source (${record.pciBusId ?? record.uuid ?? `#${position}`}) matches none listed by the others`
          )
      })
    })
  }

  const topoGpus = topo === null ? [] : topo.labels.filter((l) => /^GPU\d+$/.test(l)).map((l) => Number(l.slice(3)))
  if (groups.length > 0 && topoGpus.length > 0 && groups.length !== topoGpus.length) {
    problems.push(
      `nvidia-smi sources disagree on the GPU count: ${groups.length} listed, ${topoGpus.length} in topo -m`
    )
  }
  // GPUs only the topology knows still exist; their identity stays unknown.
  for (const i of topoGpus) if (!groups.some((g) => g.index === i)) groups.push({ index: i, records: [] })
  groups.sort((a, b) => a.index - b.index)

  const gpus = groups.map(({ index, records }): Gpu => {
    const r = resolve(records.sort((a, b) => a.priority - b.priority).map((x) => x.record))
    const attrs = topo?.attributes.get(`GPU${index}`)
    const numa = attrs?.numaAffinity ?? null
    return {
      index,
      uuid: r.uuid ?? null,
      name: r.name ?? null,
      memoryMiB: r.memoryMiB ?? null,
      pciBusId: r.pciBusId ?? null,
      numaNode: numa !== null && /^\d+$/.test(numa) ? Number(numa) : null,
      cpuAffinity: attrs?.cpuAffinity ?? null,
      mig: r.migMode == null ? null : { mode: r.migMode, devices: r.migMode === 'enabled' ? (r.migDevices ?? []) : [] },
      nvlink: r.nvlink ?? null
    }
  })
  return { gpus, topology: topology(topo), driverVersion, cudaVersion, problems }
}

function describe(r: GpuRecord): string {
  return [r.uuid, r.pciBusId].filter((x) => x != null).join(' ')
}

/** Each field from the first record (highest priority) that has it. */
function resolve(records: GpuRecord[]): GpuRecord {
  const out: GpuRecord = { index: null }
  for (const from of records) {
    out.uuid ??= from.uuid
    if (out.name == null || (out.nameTruncated === true && from.name != null && from.nameTruncated !== true)) {
      out.name = from.name ?? out.name
      out.nameTruncated = from.nameTruncated
    }
    out.memoryMiB ??= from.memoryMiB
    out.pciBusId ??= from.pciBusId
    out.migMode ??= from.migMode
    // -L names MIG profiles; -q -x only counts devices. Keep the richer list.
    const named = (d?: GpuRecord['migDevices']) => (d ?? []).filter((x) => x.profile !== null).length
    if (
      from.migDevices !== undefined &&
      (out.migDevices === undefined || named(from.migDevices) > named(out.migDevices))
    )
      out.migDevices = from.migDevices
    out.nvlink ??= from.nvlink
  }
  return out
}

/** "00000000:06:00.0" and "0000:06:00.0" are the same device. */
function busId(id: string): string {
  const m = /^([0-9a-f]+):([0-9a-f]{2}):([0-9a-f]{2})\.([0-9a-f])$/i.exec(id.trim())
  return m === null ? id.trim().toLowerCase() : `${parseInt(m[1] as string, 16)}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase()
}

function unique(values: Array<string | null>): Set<string> {
  const counts = new Map<string, number>()
  for (const v of values) if (v !== null) counts.set(v, (counts.get(v) ?? 0) + 1)
  return new Set([...counts].filter(([, n]) => n === 1).map(([v]) => v))
}

const EMPTY_TOPOLOGY: Topology = { labels: [], matrix: [], nvlinkDomains: [], nics: [] }

// PCIe distance, nearest first; SOC is the pre-2016 name of SYS.
const PCIE_RANK: Record<string, number> = { PIX: 0, PXB: 1, PHB: 2, NODE: 3, SYS: 4, SOC: 4 }

function topology(topo: TopoMatrix | null): Topology {
  if (topo === null) return EMPTY_TOPOLOGY
  const { labels, matrix } = topo
  // A cell may be unreadable on one side of the diagonal only; the matrix is symmetric.
  const cell = (r: number, c: number) => matrix[r]?.[c] ?? matrix[c]?.[r] ?? null
  const gpuCols = labels.flatMap((l, i) => (/^GPU\d+$/.test(l) ? [i] : []))
  const gpuIndex = (col: number) => Number((labels[col] as string).slice(3))
  const nvlinked = (a: number, b: number) => /^NV\d+$/.test(cell(a, b) ?? '')
  const nvlinkDomains = maximalCliques(gpuCols, nvlinked)
    .filter((c) => c.length >= 2)
    .map((c) => c.map(gpuIndex).sort((a, b) => a - b))
    .sort((a, b) => (a[0] as number) - (b[0] as number))
  const nics = labels.flatMap((label, row): TopologyNic[] => {
    if (/^GPU\d+$/.test(label)) return []
    let best: number | null = null
    let nearest: number[] = []
    for (const col of gpuCols) {
      const rank = PCIE_RANK[cell(row, col) ?? '']
      if (rank === undefined) continue
      if (best === null || rank < best) {
        best = rank
        nearest = []
      }
      if (rank === best) nearest.push(gpuIndex(col))
    }
    const link = best === null ? null : (Object.keys(PCIE_RANK).find((k) => PCIE_RANK[k] === best) ?? null)
    const name = topo.nicLegend.get(label) ?? (/^NIC\d+$/.test(label) ? null : label)
    return [{ label, name, nearestGpus: nearest, link }]
  })
  return { labels, matrix, nvlinkDomains, nics }
}

/** Bron–Kerbosch with pivoting; hosts have at most a few dozen GPUs. */
function maximalCliques(nodes: number[], adjacent: (a: number, b: number) => boolean): number[][] {
  const out: number[][] = []
  const neighbours = (v: number) => nodes.filter((u) => u !== v && adjacent(v, u))
  const visit = (r: number[], p: number[], x: number[]) => {
    if (p.length === 0 && x.length === 0) {
      out.push(r)
      return
    }
    const pivot = [...p, ...x].reduce((best, u) =>
      neighbours(u).filter((n) => p.includes(n)).length > neighbours(best).filter((n) => p.includes(n)).length
        ? u
        : best
    )
    for (const v of p.filter((u) => !neighbours(pivot).includes(u))) {
      const nv = neighbours(v)
      visit(
        [...r, v],
        p.filter((u) => nv.includes(u)),
        x.filter((u) => nv.includes(u))
      )
      p = p.filter((u) => u !== v)
      x = [...x, v]
    }
  }
  visit([], nodes, [])
  return out
}
