// The fixture machines simulated hosts can be (file system only: cheap to
// import from the CLI, which lists them in its help).
import { readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../../common/config-error.js'

// dist/cli/up/ -> the package root (the repository, or app/ in the bundle).
const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)))
export const MACHINES_DIR = join(ROOT, 'share/machines')
export const REPLAY = join(ROOT, 'share/nvidia-smi-replay')

/** The order `--simulate N` takes machines in (then round again). */
export const DEFAULT_MACHINES = [
  'h100-8x-nv18-nics',
  'a100-8x-nv12',
  'l40s-1x',
  'gb200-4x',
  'b200-8x',
  'h200-1x',
  'h100-4x-nv18'
]

export function availableMachines(): string[] {
  try {
    return readdirSync(MACHINES_DIR, { withFileTypes: true })
      .filter((d) => d.isDirectory() && d.name !== 'no-driver')
      .map((d) => d.name)
      .sort()
  } catch {
    return []
  }
}

/** `count` machine names: `chosen` (or the default order) repeated as needed. */
export function machinesFor(count: number, chosen: string[] = DEFAULT_MACHINES): string[] {
  const known = availableMachines()
  const unknown = chosen.filter((m) => !known.includes(m))
  if (unknown.length > 0)
    throw new ConfigError(
      `unknown simulated machine ${unknown.join(', ')}; available: ${known.join(', ') || `none (${MACHINES_DIR} is missing)`}`
    )
  return Array.from({ length: count }, (_, i) => chosen[i % chosen.length] as string)
}
