// A full detection in a short-lived `gpumesh-agent detect --json` process.
// The daemon's idle memory is a budget (README, Performance): this way it
// never loads the host sources (systeminformation) nor keeps the garbage of
// their tens of subprocesses. Only what the command line can say is passed on.
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { HostFacts } from '../../protocol/host-facts.js'
import { schemaErrors } from '../../protocol/validate.js'
import type { DetectOptions } from './detect.js'

const MAIN = fileURLToPath(new URL('../main.js', import.meta.url))

export async function detectInSubprocess(o: DetectOptions): Promise<HostFacts> {
  const args = [
    ...process.execArgv,
    MAIN,
    'detect',
    '--json',
    '--smi-timeout',
    String(o.timeoutMs),
    ...(o.nvidiaSmi === undefined ? [] : ['--nvidia-smi', o.nvidiaSmi]),
    ...(o.poolLabel === undefined ? [] : ['--pool-label', o.poolLabel])
  ]
  // The nvidia-smi calls run at once, and the fallbacks after them: a few deadlines at most.
  const { stdout } = await promisify(execFile)(process.execPath, args, {
    maxBuffer: 16 * 1024 * 1024,
    timeout: 4 * o.timeoutMs + 30_000,
    ...(o.env === undefined ? {} : { env: o.env })
  }).catch((err: Error & { stderr?: string }) => {
    throw new Error(
      `gpumesh-agent detect failed: ${(err.stderr ?? '').trim().split('\n').slice(-3).join(' ') || err.message}`
    )
  })
  const facts: unknown = JSON.parse(stdout)
  const errors = schemaErrors(HostFacts, facts)
  if (errors.length > 0)
    throw new Error(`gpumesh-agent detect printed facts that do not match the HostFacts schema: ${errors.join('; ')}`)
  return facts as HostFacts
}
