// Operator-facing warnings about a host's fitness, separate from detection
// problems: supported models, end of life, mixed models, local storage.
import type { Disk, Gpu, Warning } from '../../protocol/host-facts.js'
import { modelTokens } from './pool.js'

export const SUPPORTED_MODELS = ['l4', 'l40', 'l40s', 'a100', 'h100', 'h200', 'b200', 'gb200']
const END_OF_LIFE = new Set(['a100'])
export const MIN_LOCAL_STORAGE_BYTES = 300e9

export function policyWarnings(gpus: Gpu[], disks: Disk[] | null): Warning[] {
  const out: Warning[] = []
  const warn = (code: string, message: string) => out.push({ code, source: 'policy', message })
  const names = [...new Set(gpus.flatMap((g) => (g.name === null ? [] : [g.name])))]
  for (const name of names) {
    const model = modelTokens(name)[0] ?? ''
    if (END_OF_LIFE.has(model))
      warn('gpu.end-of-life', `${name} is end-of-life: supported for now, plan its replacement`)
    if (!SUPPORTED_MODELS.includes(model))
      warn(
        'gpu.unsupported',
        `${name} is outside the supported models (${SUPPORTED_MODELS.map((m) => m.toUpperCase()).join(', ')})`
      )
  }
  if (names.length > 1) warn('gpu.mixed', `mixed GPU models in one host: ${names.join(', ')}; its pool is "mixed"`)
  const unnamed = gpus.filter((g) => g.name === null).map((g) => g.index)
  if (unnamed.length > 0)
    warn('gpu.unidentified', `no source named GPU ${unnamed.join(', ')}: model and memory unknown`)
  if (disks !== null) {
    const local = disks.reduce((sum, d) => sum + d.sizeBytes, 0)
    if (local < MIN_LOCAL_STORAGE_BYTES)
      warn(
        'storage.small',
        `local storage is ${(local / 1e9).toFixed(0)} GB, under the ${MIN_LOCAL_STORAGE_BYTES / 1e9} GB that model weights and checkpoints need`
      )
  }
  return out
}
