// nvidia-smi fact sources: one invocation and one parser each. The first five
// are the contract in DESIGN; -q and the summary table are fallbacks used
// only when those left a GPU's name, memory or bus id unknown.
import type { DetectContext, Fingerprinter, Fragment } from '../fingerprinter.js'
import type { GpuInventory } from '../nvidia/inventory.js'
import { parseList } from '../nvidia/parse-list.js'
import { parseNvlink } from '../nvidia/parse-nvlink.js'
import { parseQueryGpu, QUERY_GPU_FIELDS } from '../nvidia/parse-query-gpu.js'
import { parseQueryText } from '../nvidia/parse-q-text.js'
import { parseQueryXml } from '../nvidia/parse-q-xml.js'
import { parseTable } from '../nvidia/parse-table.js'
import { parseTopo } from '../nvidia/parse-topo.js'
import type { Parsed } from '../nvidia/text.js'

export class NoNvidiaSmiError extends Error {
  constructor() {
    super('nvidia-smi not found')
    this.name = 'NoNvidiaSmiError'
  }
}

function source(name: string, args: string[], read: (output: string) => Fragment, fallback = false): Fingerprinter {
  return {
    name,
    fallback,
    async fingerprint(ctx: DetectContext) {
      if (ctx.smi === null) throw new NoNvidiaSmiError()
      return read(await ctx.smi(args))
    }
  }
}

const inventory =
  (parse: (o: string) => Parsed<GpuInventory>) =>
  (output: string): Fragment => {
    const { value, problems } = parse(output)
    return { inventory: value, problems }
  }

export const queryGpu = source(
  'nvidia-smi --query-gpu',
  [`--query-gpu=${QUERY_GPU_FIELDS.join(',')}`, '--format=csv'],
  inventory((o) => parseQueryGpu(o))
)
export const queryXml = source('nvidia-smi -q -x', ['-q', '-x'], inventory(parseQueryXml))
export const listGpus = source('nvidia-smi -L', ['-L'], inventory(parseList))
export const nvlinkStatus = source('nvidia-smi nvlink -s', ['nvlink', '-s'], inventory(parseNvlink))
export const topology = source('nvidia-smi topo -m', ['topo', '-m'], (output) => {
  const { value, problems } = parseTopo(output)
  return { topology: value, problems }
})
export const queryText = source('nvidia-smi -q', ['-q'], inventory(parseQueryText), true)
export const summaryTable = source('nvidia-smi', [], inventory(parseTable), true)

/** In merge priority: earlier sources win a field when two disagree. */
export const NVIDIA_SOURCES: Fingerprinter[] = [
  queryGpu,
  queryXml,
  listGpus,
  queryText,
  summaryTable,
  nvlinkStatus,
  topology
]
