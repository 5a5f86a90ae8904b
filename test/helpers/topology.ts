// The checks a parsed `nvidia-smi topo -m` and detected facts share: cells
// as printed, and the NICs with their nearest GPUs.
import type { TopologyNic } from '../../protocol/host-facts.js'
import type { Mismatches } from './mismatches.js'

/** [row label, column label, the cell as printed, or null where it cannot be read] */
export type CellCase = [string, string, string | null]
/** NIC label -> [device name, nearest GPUs, link] */
export type NicCases = Record<string, [string | null, number[], string | null]>

export function checkCells(
  m: Mismatches,
  kase: string,
  topo: { labels: string[]; matrix: Array<Array<string | null>> },
  cells: CellCase[]
): void {
  for (const [row, col, cell] of cells)
    m.check(kase, `cell ${row}/${col}`, topo.matrix[topo.labels.indexOf(row)]?.[topo.labels.indexOf(col)], cell)
}

export function checkNics(m: Mismatches, kase: string, nics: TopologyNic[], want: NicCases): void {
  for (const [label, [name, nearestGpus, link]] of Object.entries(want))
    m.check(
      kase,
      `NIC ${label}`,
      nics.find((n) => n.label === label),
      { label, name, nearestGpus, link }
    )
}
