// `gpumesh up` as a person runs it: a foreground process that prints what it
// started (--json here) and stops everything on Ctrl-C (SIGINT).
import { spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import type { Test } from 'tap'
import type { Host, Pool } from '../../protocol/api.js'
import { cleanEnv } from './agent.js'
import { freePort } from './redis.js'

export interface Up {
  api: string
  adminToken: string
  stateDir: string
  hosts: Host[]
  pools: Pool[]
  pid: number
  stderr: () => string
  /** Closes the reading ends of its stdout and stderr (as a `tee` that died does): its next write there fails. */
  closeOutput: () => void
  /** SIGINT, then its exit code (null: it had to be killed after `ms`). */
  interrupt: (ms?: number) => Promise<number | null>
}

/** Runs `<node> <cli> up ...args --json` in a fresh state folder, until it says it is up. */
export async function startUp(t: Test, node: string, cli: string, args: string[]): Promise<Up> {
  // Short and under /tmp: PostgreSQL's socket path is limited, and as root the postgres user must reach it.
  const stateDir = mkdtempSync(join(tmpdir(), 'gpm-up-'))
  const port = await freePort()
  const child = spawn(
    node,
    [
      cli,
      'up',
      '--json',
      '--state-dir',
      stateDir,
      '--api-listen',
      `127.0.0.1:${port}`,
      '--gateway-listen',
      '127.0.0.1:0',
      ...args
    ],
    { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] }
  )
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
    rmSync(stateDir, { recursive: true, force: true })
  })
  const info = await new Promise<{ api: string; adminToken: string; hosts: Host[]; pools: Pool[] }>(
    (resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`gpumesh up did not come up in 120 s:\n${stderr}${logTail(stateDir)}`)),
        120_000
      )
      const check = () => {
        const line = stdout.split('\n').find((l) => l.startsWith('{'))
        if (line !== undefined) {
          clearTimeout(timer)
          resolve(JSON.parse(line))
        }
      }
      child.stdout.on('data', check)
      void exited.then((code) => {
        clearTimeout(timer)
        reject(new Error(`gpumesh up exited ${String(code)}:\n${stderr}${logTail(stateDir)}`))
      })
    }
  )
  return {
    ...info,
    stateDir,
    pid: child.pid as number,
    stderr: () => stderr,
    closeOutput: () => {
      child.stdout.destroy()
      child.stderr.destroy()
    },
    interrupt: async (ms = 60_000) => {
      child.kill('SIGINT')
      const timer = setTimeout(() => child.kill('SIGKILL'), ms)
      const code = await exited
      clearTimeout(timer)
      return child.signalCode === 'SIGKILL' ? null : code
    }
  }
}

function logTail(stateDir: string): string {
  try {
    return `\n--- gpumesh.log\n${readFileSync(join(stateDir, 'gpumesh.log'), 'utf8').split('\n').slice(-30).join('\n')}`
  } catch {
    return ''
  }
}

/** Processes whose command line mentions `text` (PostgreSQL of a state folder, a workload). */
export function processesWith(text: string): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) found.push(Number(entry))
    } catch {}
  }
  return found
}

/**
 * The local cluster end to end with this `node` and CLI: up with 2 simulated
 * hosts, one workload placed and run through the CLI, Ctrl-C, nothing left.
 */
export async function exerciseUp(t: Test, node: string, cli: string): Promise<void> {
  const up = await startUp(t, node, cli, ['--simulate', '2'])
  t.same(
    up.hosts.map((h) => h.name).sort(),
    ['local', 'sim-1-h100-8x-nv18-nics', 'sim-2-a100-8x-nv12'],
    'this host and two simulated hosts'
  )
  t.ok(
    up.hosts.every((h) => h.state === 'ready'),
    'all ready'
  )
  t.same(
    up.pools.map((p) => p.key).sort(),
    ['a100-80gb-8x-nvlink', 'cpu', 'h100-80gb-8x-nvlink'],
    'one pool per kind of machine'
  )
  t.match(up.adminToken, /^gmt_/, 'the admin token is printed')
  t.match(up.stderr(), /starting the coordinator with embedded PostgreSQL/, 'progress while PostgreSQL starts')

  const env = { ...cleanEnv(), GPUMESH_API: up.api, GPUMESH_TOKEN: up.adminToken }
  const cliRun = async (args: string[], input?: string) =>
    await execa(node, [cli, ...args], {
      env,
      extendEnv: false,
      reject: false,
      timeout: 30_000,
      ...(input === undefined ? {} : { input })
    })
  const spec = {
    name: 'hello',
    kind: 'endpoint',
    replicas: 1,
    gpus: 2,
    pools: ['h100-80gb-8x-nvlink'],
    run: { driver: 'process', command: ['sh', '-c', 'echo cuda=$CUDA_VISIBLE_DEVICES; exec sleep 600'] }
  }
  const created = await cliRun(['workloads', 'create', '-f', '-'], JSON.stringify(spec))
  t.equal(created.exitCode, 0, `gpumesh workloads create: ${String(created.stderr)}`)
  let placement: { id: string; hostName: string; state: string; gpus: number[] } | undefined
  const deadline = Date.now() + 30_000
  while (placement?.state !== 'running' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    const got = await cliRun(['workloads', 'get', 'hello', '--json'])
    placement = (
      JSON.parse(String(got.stdout)) as {
        placements: Array<{ id: string; hostName: string; state: string; gpus: number[] }>
      }
    ).placements[0]
  }
  t.equal(placement?.state, 'running', 'the workload runs')
  if (placement === undefined) return
  t.equal(placement.hostName, 'sim-1-h100-8x-nv18-nics', 'on the H100 host')
  const dir = join(up.stateDir, 'agents', placement.hostName, 'placements', placement.id)
  let out = ''
  for (let i = 0; i < 40 && !out.includes('cuda='); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    try {
      out = readFileSync(join(dir, 'stdout.log'), 'utf8')
    } catch {}
  }
  t.equal(out.trim(), `cuda=${placement.gpus.join(',')}`, 'with its GPUs in CUDA_VISIBLE_DEVICES')
  const record = JSON.parse(readFileSync(join(dir, 'placement.json'), 'utf8')) as { pid: number }
  t.ok(processesWith(up.stateDir).length > 0, 'PostgreSQL runs from the state folder')

  t.equal(await up.interrupt(), 0, 'Ctrl-C: a clean exit')
  t.match(up.stderr(), /stopped\n$/, 'it says so')
  t.throws(() => process.kill(record.pid, 0), "the workload's process is gone")
  t.same(processesWith(up.stateDir), [], 'nothing runs from the state folder any more (PostgreSQL stopped)')
}
