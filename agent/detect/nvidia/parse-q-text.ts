// Parser for `nvidia-smi -q` (text): an indented tree of "Key : Value" lines
// and section headings. Used only when -q -x and --query-gpu both failed.
import type { MigDevice } from '../../../protocol/host-facts.js'
import { migMode, type GpuInventory, type GpuRecord } from './inventory.js'
import { ParseError, mib, present, stripAnsi, type Parsed } from './text.js'

interface Entry {
  key: string
  value: string | null
  depth: number
  children: Entry[]
}

export function parseQueryText(output: string): Parsed<GpuInventory> {
  const problems: string[] = []
  const root: Entry = { key: '', value: null, depth: -1, children: [] }
  const stack: Entry[] = [root]
  for (const line of stripAnsi(output).split(/\r?\n/)) {
    if (line.trim() === '' || /^=+.*=+$/.test(line.trim())) continue
    const depth = /^ */.exec(line)?.[0].length ?? 0
    const m = /^\s*(.+?)\s+: ?(.*)$/.exec(line)
    const entry: Entry = {
      key: (m?.[1] ?? line).trim(),
      value: m === null ? null : (m[2] as string).trim(),
      depth,
      children: []
    }
    while ((stack[stack.length - 1] as Entry).depth >= depth) stack.pop()
    ;(stack[stack.length - 1] as Entry).children.push(entry)
    stack.push(entry)
  }
  const top = (key: string) => present(root.children.find((e) => e.key === key)?.value)
  const gpuSections = root.children.filter((e) =>
    /^GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]$/.test(e.key)
  )
  if (gpuSections.length === 0) throw new ParseError('no "GPU <bus id>" sections')
  const attached = Number(top('Attached GPUs'))
  if (Number.isInteger(attached) && attached !== gpuSections.length)
    problems.push(`${attached} GPUs attached but ${gpuSections.length} described`)
  const gpus = gpuSections.map((s): GpuRecord => {
    const get = (...path: string[]) => present(find(s, path)?.value)
    const migs = s.children.filter((e) => e.key === 'MIG Device')
    const record: GpuRecord = {
      index: null,
      uuid: get('GPU UUID'),
      name: get('Product Name'),
      memoryMiB: mib(get('FB Memory Usage', 'Total')),
      pciBusId: get('PCI', 'Bus Id') ?? s.key.slice(4),
      migMode: migMode(get('MIG Mode', 'Current'))
    }
    if (migs.length > 0) {
      record.migDevices = migs.map(
        (d, i): MigDevice => ({
          index: Number(present(find(d, ['Index'])?.value) ?? i),
          profile: null,
          uuid: present(find(d, ['UUID'])?.value)
        })
      )
    }
    return record
  })
  return { value: { gpus, driverVersion: top('Driver Version'), cudaVersion: top('CUDA Version') }, problems }
}

function find(from: Entry, path: string[]): Entry | undefined {
  let at: Entry | undefined = from
  for (const key of path) at = at?.children.find((e) => e.key === key)
  return at
}
