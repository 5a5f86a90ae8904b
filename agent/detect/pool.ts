// Pool key: hosts with equal keys are interchangeable for placement. It is
// derived, never looked up, so the next GPU generation needs no code change:
//   <family>-<memory>gb-<count>x[-<interconnect>][-<label>]   or   cpu[-<label>]
// family    the model name without vendor/brand words, memory and memory-type
//           tokens: "NVIDIA H100 80GB HBM3" -> h100, "NVIDIA A100-SXM4-80GB" -> a100,
//           "NVIDIA GeForce RTX 4090" -> rtx-4090; several models -> "mixed".
// memory    the "<n>GB" in the name if it has one, else the smallest GPU's
//           memory rounded up to a marketed size (4 GiB steps to 32, 8 to 64,
//           then whole GiB): 46068 MiB -> 48, 143771 MiB -> 141.
// interconnect  nvlink (all GPUs in one NVLink domain), nvlink-partial,
//           pcie, unknown; omitted for a single GPU, which has no peer.
import { InvalidArgumentError } from 'commander'
import type { Gpu, Interconnect, PoolAttributes, Topology } from '../../protocol/host-facts.js'
import { MAX_POOL_LABEL_LENGTH } from '../../protocol/workload.js'

const VENDOR = /^(nvidia|tesla|geforce|quadro)$/i
const DROPPED = /^(\d+gb|hbm\d*e?|gddr\d+x?|sxm\d*)$/i

/** Name tokens that identify the model; a name cut with "..." loses its last token. */
export function modelTokens(name: string): string[] {
  // "RTX 4080 ..." lost whole words; "H100 80G..." also lost part of one.
  const cut = /\S\.\.\.$/.test(name)
  const tokens = name
    .replace(/\.\.\.$/, '')
    .split(/[\s-]+/)
    .filter((t) => t !== '')
  if (cut) tokens.pop()
  return tokens.filter((t) => !VENDOR.test(t) && !DROPPED.test(t)).map((t) => t.toLowerCase())
}

export function family(name: string): string {
  const tokens = modelTokens(name)
  return tokens.length === 0 ? 'gpu' : tokens.join('-').replace(/[^a-z0-9.-]/g, '')
}

export function memoryClassGB(name: string | null, memoryMiB: number | null): number | null {
  const named = name === null ? null : /(?:^|[\s-])(\d+)GB(?:$|[\s-])/i.exec(name)
  if (named !== null) return Number(named[1])
  if (memoryMiB === null || memoryMiB <= 0) return null
  const gib = memoryMiB / 1024
  const step = gib <= 32 ? 4 : gib <= 64 ? 8 : 1
  return Math.ceil(gib / step - 1e-9) * step
}

export function interconnect(gpus: Gpu[], topology: Topology): Interconnect {
  if (gpus.length <= 1) return 'none'
  const indices = gpus.map((g) => g.index)
  if (topology.labels.length > 0) {
    if (topology.nvlinkDomains.some((d) => indices.every((i) => d.includes(i)))) return 'nvlink'
    if (topology.nvlinkDomains.length > 0) return 'nvlink-partial'
    // A matrix with unreadable GPU-GPU cells cannot prove "no NVLink".
    const gpuCols = topology.labels.flatMap((l, i) => (/^GPU\d+$/.test(l) ? [i] : []))
    const unreadable = gpuCols.some((r) =>
      gpuCols.some((c) => topology.matrix[r]?.[c] == null && topology.matrix[c]?.[r] == null)
    )
    return unreadable ? 'unknown' : 'pcie'
  }
  if (gpus.every((g) => (g.nvlink?.active ?? 0) > 0)) return 'nvlink'
  if (gpus.every((g) => g.nvlink !== null && g.nvlink.active === 0)) return 'pcie'
  return 'unknown'
}

/** --pool-label (GPUMESH_POOL_LABEL) as an option parser: a label that would not fit in a pool key is refused. */
export function poolLabelOption(value: string): string {
  if (value.length > MAX_POOL_LABEL_LENGTH)
    throw new InvalidArgumentError(`--pool-label must be at most ${MAX_POOL_LABEL_LENGTH} characters`)
  return value
}

export function sanitizeLabel(label: string | undefined): string | null {
  const clean = (label ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9.]+/g, '-')
    .replace(/^[-.]+|-+$/g, '')
  return clean === '' ? null : clean
}

export function derivePool(gpus: Gpu[], topology: Topology, label?: string): PoolAttributes {
  const poolLabel = sanitizeLabel(label)
  const suffix = poolLabel === null ? '' : `-${poolLabel}`
  if (gpus.length === 0)
    return { key: `cpu${suffix}`, family: 'cpu', memoryGB: null, gpuCount: 0, interconnect: 'none', label: poolLabel }
  const names = [...new Set(gpus.flatMap((g) => (g.name === null ? [] : [g.name])))]
  const families = [...new Set(names.map(family))]
  const fam = families.length === 0 ? 'gpu' : families.length === 1 ? (families[0] as string) : 'mixed'
  const memories = gpus.map((g) => memoryClassGB(g.name, g.memoryMiB)).filter((m): m is number => m !== null)
  const memoryGB = memories.length === 0 ? null : Math.min(...memories)
  const link = interconnect(gpus, topology)
  const parts = [fam, memoryGB === null ? null : `${memoryGB}gb`, `${gpus.length}x`, link === 'none' ? null : link]
  const key = parts.filter((p) => p !== null).join('-') + suffix
  return { key, family: fam, memoryGB, gpuCount: gpus.length, interconnect: link, label: poolLabel }
}
