// Parser for `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`.
// Columns are found by the header, so a capture that holds fewer fields than
// we ask for (or a double replaying one) still reads.
import { migMode, type GpuInventory, type GpuRecord } from './inventory.js'
import { ParseError, mib, present, type Parsed } from './text.js'

/** The fields detection asks for; all exist in drivers since R450. */
export const QUERY_GPU_FIELDS = [
  'index',
  'uuid',
  'name',
  'memory.total',
  'pci.bus_id',
  'driver_version',
  'mig.mode.current'
]

export function parseQueryGpu(output: string, requested: string[] = QUERY_GPU_FIELDS): Parsed<GpuInventory> {
  const problems: string[] = []
  const lines = output
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '')
  if (lines.length === 0) throw new ParseError('empty output')
  const first = splitCsv(lines[0] as string)
  const hasHeader =
    first.some((c) => /^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*( \[.*\])?$/i.test(c) && !/^\d/.test(c)) &&
    !/^\d+$/.test(first[0] ?? '')
  const fields = (hasHeader ? first : requested).map((h) => h.replace(/\s*\[.*\]$/, ''))
  const at = (name: string) => fields.indexOf(name)
  if (at('index') < 0 && at('name') < 0 && at('uuid') < 0)
    throw new ParseError(`no GPU columns in ${JSON.stringify((lines[0] as string).slice(0, 80))}`)
  const gpus: GpuRecord[] = []
  let driverVersion: string | null = null
  for (const [n, line] of (hasHeader ? lines.slice(1) : lines).entries()) {
    const cells = splitCsv(line)
    if (cells.length !== fields.length) {
      problems.push(
        `row ${n + 1} has ${cells.length} cells for ${fields.length} columns: ${JSON.stringify(line.slice(0, 80))}`
      )
      continue
    }
    const get = (name: string) => present(at(name) < 0 ? null : cells[at(name)])
    const index = get('index')
    if (index !== null && !/^\d+$/.test(index)) {
      problems.push(`row ${n + 1}: index ${JSON.stringify(index)} is not a number`)
      continue
    }
    gpus.push({
      index: index === null ? n : Number(index),
      uuid: get('uuid'),
      name: get('name'),
      memoryMiB: mib(get('memory.total')),
      pciBusId: get('pci.bus_id'),
      migMode: migMode(get('mig.mode.current'))
    })
    driverVersion ??= get('driver_version')
  }
  if (gpus.length === 0) throw new ParseError(`no readable GPU rows in ${lines.length} lines`)
  return { value: { gpus, driverVersion }, problems }
}

function splitCsv(line: string): string[] {
  return line.split(',').map((c) => c.trim())
}
