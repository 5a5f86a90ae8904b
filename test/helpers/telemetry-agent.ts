// A `gpumesh-agent run` process whose GPUs are the nvidia-smi double's
// values file (test/helpers/gpu-values.ts), sampled every 300 ms, with an
// empty kernel log to follow; the test rewrites the values while it runs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa, type ResultPromise } from 'execa'
import type { Test } from 'tap'
import { AGENT } from './fixtures.js'
import { type GpuValues, valuesMachine, writeGpuValues } from './gpu-values.js'
import { agentEnv, type ProcessJoinTarget } from './mesh.js'

export interface TelemetryAgent {
  child: ResultPromise
  /** The double's fixture folder: gpu-values.csv, kmsg, calls.log (every nvidia-smi call). */
  dir: string
  /** Rewrites the values file whole. */
  write: (gpus: GpuValues[]) => void
}

export function telemetryAgent(
  t: Test,
  target: ProcessJoinTarget,
  gpus: GpuValues[],
  extra: Record<string, string> = {}
): TelemetryAgent {
  const dir = valuesMachine(gpus)
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-agent-telemetry-'))
  const kmsg = join(dir, 'kmsg')
  writeFileSync(kmsg, '')
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true })
    rmSync(stateDir, { recursive: true, force: true })
  })
  const child = execa(process.execPath, [AGENT], {
    env: agentEnv(target, stateDir, 'none', {
      GPUMESH_SMI_FIXTURE: dir,
      GPUMESH_KMSG: kmsg,
      GPUMESH_TELEMETRY_INTERVAL_MS: '300',
      GPUMESH_SMI_LOG: join(dir, 'calls.log'),
      ...extra
    }),
    extendEnv: false,
    reject: false,
    timeout: 120_000
  })
  t.teardown(async () => {
    child.kill('SIGTERM')
    await child
  })
  return { child, dir, write: (next) => writeGpuValues(dir, next) }
}
