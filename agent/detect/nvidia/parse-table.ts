// Parser for the summary table that bare `nvidia-smi` prints. It is the last
// resort for GPU identity: names are cut to the column width ("...").
import type { GpuInventory, GpuRecord } from './inventory.js'
import { ParseError, stripAnsi, type Parsed } from './text.js'

const VERSIONS = /Driver Version:\s*(\S+)\s+CUDA Version:\s*(\S+)/
// |   0  NVIDIA H100 80GB HBM3          On  |   00000000:06:00.0 Off |                    0 |
const GPU_ROW = /^\|\s*(\d+)\s+(.+?)\s+(On|Off)\s+\|\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s/
// | N/A   26C    P0             70W /  700W |       1MiB /  81559MiB |      0%      Default |
const MEMORY = /\|\s*\d+MiB\s*\/\s*(\d+)MiB\s*\|/
// Third line of a GPU's block: "|  ...  |  ...  |   Disabled |" (MIG M.)
const MIG_CELL = /\|\s*(Enabled|Disabled|N\/A)\s*\|\s*$/

export function parseTable(output: string): Parsed<GpuInventory> {
  const problems: string[] = []
  const lines = stripAnsi(output).split(/\r?\n/)
  const versions = lines.map((l) => VERSIONS.exec(l)).find((m) => m !== null)
  const gpus: GpuRecord[] = []
  for (let i = 0; i < lines.length; i++) {
    const row = GPU_ROW.exec(lines[i] as string)
    if (row === null) continue
    const name = (row[2] as string).trim()
    const memory = MEMORY.exec(lines[i + 1] ?? '')
    const mig = MIG_CELL.exec(lines[i + 2] ?? '')
    if (memory === null) problems.push(`GPU ${row[1]}: no memory cell on the line after its name`)
    const truncated = name.endsWith('...')
    gpus.push({
      index: Number(row[1]),
      name,
      nameTruncated: truncated,
      pciBusId: row[4] as string,
      memoryMiB: memory === null ? null : Number(memory[1]),
      migMode: mig?.[1] === 'Enabled' ? 'enabled' : mig?.[1] === 'Disabled' ? 'disabled' : null
    })
    if (truncated) problems.push(`GPU ${row[1]}: name cut by the table (${JSON.stringify(name)})`)
  }
  if (gpus.length === 0 && versions === undefined) throw new ParseError('no nvidia-smi summary table')
  return { value: { gpus, driverVersion: versions?.[1] ?? null, cudaVersion: versions?.[2] ?? null }, problems }
}
