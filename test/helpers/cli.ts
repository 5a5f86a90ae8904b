// The gpumesh CLI as a process: a finished run's output, or a running one
// (gpumesh logs -f) whose output is read as it comes.
import { join } from 'node:path'
import { execa, type ResultPromise } from 'execa'
import type { Test } from 'tap'
import { cleanEnv } from './agent.js'
import { ADMIN_TOKEN } from './coordinator.js'
import { ROOT } from './fixtures.js'

export const CLI = join(ROOT, 'dist/cli/main.js')

export interface CliRun {
  exitCode: number
  stdout: string
  stderr: string
}

const envFor = (api: string, token: string) => cleanEnv({ GPUMESH_API: api, GPUMESH_TOKEN: token })

/** Runs `gpumesh <args>` to its end against `api` (with the admin token unless another is given). */
export async function gpumesh(api: string, args: string[], token = ADMIN_TOKEN): Promise<CliRun> {
  const r = await execa(process.execPath, [CLI, ...args], {
    env: envFor(api, token),
    extendEnv: false,
    reject: false,
    timeout: 60_000
  })
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
}

export interface RunningCli {
  /** stdout so far. */
  stdout: () => string
  stderr: () => string
  process: ResultPromise
}

/** Starts `gpumesh <args>` and keeps it running; it is killed at teardown if still there. */
export function gpumeshRunning(t: Test, api: string, args: string[], token = ADMIN_TOKEN): RunningCli {
  const p = execa(process.execPath, [CLI, ...args], {
    env: envFor(api, token),
    extendEnv: false,
    reject: false,
    buffer: false
  })
  let out = ''
  let err = ''
  p.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  p.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  t.teardown(async () => {
    if (p.exitCode === null) p.kill('SIGTERM')
    await p
  })
  return { stdout: () => out, stderr: () => err, process: p }
}
