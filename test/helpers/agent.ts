// Runs the built agent CLI against a fixture machine through the nvidia-smi
// test double, the way an operator would run it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import type { Test } from 'tap'
import type { HostFacts } from '../../protocol/host-facts.js'
import { AGENT, CAPTURES, MACHINES, NVIDIA_SMI_DOUBLE } from './fixtures.js'

export interface DetectRun {
  exitCode: number
  stdout: string
  stderr: string
  calls: string[]
}

/** Environment without the caller's GPUMESH_* settings (nor DATABASE_URL, REDIS_URL), so child processes see defaults. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith('GPUMESH_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL') env[k] = v
  }
  return { ...env, ...extra }
}

export async function runDetect(
  t: Test,
  machineDir: string | null,
  args: string[] = ['--json'],
  env: Record<string, string> = {}
): Promise<DetectRun> {
  const scratch = mkdtempSync(join(tmpdir(), 'gpumesh-detect-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  const log = join(scratch, 'calls.log')
  const smiEnv: Record<string, string> =
    machineDir === null
      ? { GPUMESH_NVIDIA_SMI: join(scratch, 'no-nvidia-smi-here') }
      : { GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE, GPUMESH_SMI_FIXTURE: machineDir, GPUMESH_SMI_LOG: log }
  const r = await execa(process.execPath, [AGENT, 'detect', ...args], {
    env: cleanEnv({ ...smiEnv, ...env }),
    extendEnv: false,
    reject: false,
    timeout: 60_000
  })
  const calls = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(0, -1) : []
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), calls }
}

export async function detectJson(
  t: Test,
  machineDir: string | null,
  env: Record<string, string> = {}
): Promise<{ facts: HostFacts; calls: string[] }> {
  const r = await runDetect(t, machineDir, ['--json'], env)
  t.equal(r.exitCode, 0, `detect exits 0 (stderr: ${r.stderr.slice(0, 300)})`)
  return { facts: JSON.parse(r.stdout) as HostFacts, calls: r.calls }
}

export const machine = (name: string) => join(MACHINES, name)

/** A throw-away machine folder: contract file name -> capture file, or raw content. */
export function makeMachine(t: Test, files: Record<string, { capture: string } | string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-machine-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const [name, content] of Object.entries(files)) {
    const data =
      typeof content === 'object' && !Buffer.isBuffer(content) ? readFileSync(join(CAPTURES, content.capture)) : content
    writeFileSync(join(dir, name), data)
  }
  return dir
}

/** Whether facts carry a warning with this code (and source and message, when given). */
export function warned(facts: HostFacts, code: string, source?: string | RegExp, message?: RegExp): boolean {
  const matches = (v: string, want: string | RegExp | undefined) =>
    want === undefined || (typeof want === 'string' ? v === want : want.test(v))
  return facts.warnings.some((w) => w.code === code && matches(w.source, source) && matches(w.message, message))
}
