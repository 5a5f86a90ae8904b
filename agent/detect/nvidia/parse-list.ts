// Parser for `nvidia-smi -L`: GPU lines and, under each, its MIG devices.
import type { GpuInventory, GpuRecord } from './inventory.js'
import { ParseError, stripAnsi, type Parsed } from './text.js'

const GPU_LINE = /^GPU (\d+): (.+?) \(UUID: ([^)]+)\)\s*$/
const MIG_LINE = /^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)\s*$/

export function parseList(output: string): Parsed<GpuInventory> {
  const problems: string[] = []
  const gpus: GpuRecord[] = []
  for (const line of stripAnsi(output).split(/\r?\n/)) {
    if (line.trim() === '') continue
    const g = GPU_LINE.exec(line)
    if (g !== null) {
      gpus.push({ index: Number(g[1]), name: g[2] as string, uuid: g[3] as string, migDevices: [] })
      continue
    }
    const m = MIG_LINE.exec(line)
    const owner = gpus[gpus.length - 1]
    if (m !== null && owner !== undefined) {
      owner.migDevices?.push({ index: Number(m[2]), profile: m[1] as string, uuid: m[3] as string })
      owner.migMode = 'enabled'
      continue
    }
    problems.push(`unreadable line: ${JSON.stringify(line.trim().slice(0, 80))}`)
  }
  if (gpus.length === 0) throw new ParseError('no "GPU n: <name> (UUID: ...)" lines')
  // -L lists MIG devices only when MIG is on; absence says nothing about the mode.
  for (const g of gpus) if (g.migDevices?.length === 0) delete g.migDevices
  return { value: { gpus }, problems }
}
