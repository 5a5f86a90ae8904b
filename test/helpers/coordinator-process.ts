// A coordinator as a real process (`gpumesh-coordinator`), its API and a
// hard kill: for crash, failover and start-up tests.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { cleanEnv } from './agent.js'
import { ADMIN_TOKEN, eventually } from './coordinator.js'
import { ROOT } from './fixtures.js'
import { freePort } from './redis.js'

const COORDINATOR = join(ROOT, 'dist/coordinator/main.js')

export interface Proc {
  child: ChildProcess
  api: string
  stateDir: string
  output: () => string
}

/** `t`: a tap test, or anything that runs teardowns (a bench); `nodeArgs`: Node's own (a bench's --cpu-prof). */
export async function spawnCoordinator(
  t: Pick<Test, 'teardown'>,
  env: Record<string, string>,
  stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-proc-')),
  nodeArgs: string[] = []
): Promise<Proc> {
  const port = await freePort()
  rmSync(join(stateDir, 'coordinator.json'), { force: true })
  const child = spawn(process.execPath, [...nodeArgs, COORDINATOR], {
    env: cleanEnv({
      GPUMESH_STATE_DIR: stateDir,
      GPUMESH_API_LISTEN: `127.0.0.1:${port}`,
      GPUMESH_GATEWAY_LISTEN: '127.0.0.1:0',
      GPUMESH_ADMIN_TOKEN: ADMIN_TOKEN,
      GPUMESH_LEADER_RETRY_MS: '200',
      GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
      GPUMESH_STALE_HOST_SECONDS: '0',
      ...env
    }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
  })
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`coordinator exited ${child.exitCode}: ${output.slice(-2000)}`)
      try {
        return JSON.parse(readFileSync(join(stateDir, 'coordinator.json'), 'utf8')) as unknown
      } catch {
        return undefined
      }
    },
    60_000,
    'coordinator.json'
  )
  return { child, api: `http://127.0.0.1:${port}`, stateDir, output: () => output }
}

export async function call(
  api: string,
  method: string,
  path: string,
  body?: unknown
): Promise<{ status: number; body: any }> {
  const r = await fetch(api + path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' })
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  return { status: r.status, body: await r.json().catch(() => null) }
}

export async function isLeader(api: string): Promise<boolean> {
  const r = await fetch(`${api}/metrics`).catch(() => null)
  return r !== null && /^gpumesh_leader 1$/m.test(await r.text())
}

export function killHard(p: Proc): Promise<void> {
  const exited = new Promise<void>((resolve) => p.child.once('exit', () => resolve()))
  p.child.kill('SIGKILL')
  return exited
}
