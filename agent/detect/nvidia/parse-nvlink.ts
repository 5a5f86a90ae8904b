// Parser for `nvidia-smi nvlink -s`: per GPU, its links and their speeds.
// Links print "<inactive>" when down; GPUs in MIG mode print an error line
// instead of links, which we keep as "unknown" rather than "no NVLink".
import type { GpuInventory, GpuRecord } from './inventory.js'
import { ParseError, stripAnsi, type Parsed } from './text.js'

const GPU_LINE = /^GPU (\d+): (.+?) \(UUID: ([^)]+)\)\s*$/
const LINK_LINE = /^\s*Link (\d+): (?:([\d.]+) GB\/s|<inactive>)\s*$/i
// PCIe cards (L40S, L4) answer this instead of listing links: zero links.
const NO_NVLINK = /does not (have or )?support nvlink/i

export function parseNvlink(output: string): Parsed<GpuInventory> {
  const problems: string[] = []
  const gpus: Array<GpuRecord & { links: Array<number | null>; damaged: boolean }> = []
  for (const line of stripAnsi(output).split(/\r?\n/)) {
    if (line.trim() === '') continue
    const g = GPU_LINE.exec(line)
    if (g !== null) {
      gpus.push({ index: Number(g[1]), name: g[2] as string, uuid: g[3] as string, links: [], damaged: false })
      continue
    }
    const owner = gpus[gpus.length - 1]
    const l = LINK_LINE.exec(line)
    if (l !== null && owner !== undefined) {
      owner.links.push(l[2] === undefined ? null : Number(l[2]))
      continue
    }
    if (owner !== undefined && owner.links.length === 0 && NO_NVLINK.test(line)) continue
    if (owner !== undefined) owner.damaged = true
    problems.push(
      owner === undefined
        ? `unreadable line: ${JSON.stringify(line.trim().slice(0, 80))}`
        : `GPU ${owner.index}: ${line.trim().slice(0, 80)}`
    )
  }
  if (gpus.length === 0) throw new ParseError('no "GPU n: <name> (UUID: ...)" lines')
  return {
    value: {
      // A GPU block with a line we cannot read (an error, a cut paste) says
      // nothing certain about its links.
      gpus: gpus.map(({ links, damaged, ...g }) => {
        if (damaged) return { ...g, nvlink: null }
        const speeds = links.filter((s): s is number => s !== null)
        const bandwidth = speeds.reduce((a, b) => a + b, 0)
        return {
          ...g,
          nvlink: {
            active: speeds.length,
            total: links.length,
            bandwidthGBs: speeds.length === 0 ? null : Math.round(bandwidth * 1000) / 1000
          }
        }
      })
    },
    problems
  }
}
