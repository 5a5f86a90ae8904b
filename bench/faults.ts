// Fault figures, on real processes on loopback (a coordinator process with
// its embedded PostgreSQL, one `gpumesh-agent run` process replaying an
// 8-GPU machine):
//   agent_restart_workloads_kept   an 8-replica endpoint (sleep) running; kill -9 of the agent, started
//                                  again at once on the same state folder; once the endpoint runs 8
//                                  replicas again (and still does 3 s later), the fraction of the
//                                  placement processes (wrapper pids, <agent state>/placements/<id>/pid)
//                                  that are the same live processes as before (goal 1.0)
//   agent_restart_gap_ms           kill -9 -> the new agent's "joined the coordinator" log line (includes
//                                  the new process's start-up and detection)
//   crash_loop_placements_per_min  a 1-replica endpoint whose command does not exist: placement.created
//                                  events for it over `window` seconds, per minute (goal <= 10)
//   db_kill_recovery_ms            kill -9 of the embedded postmaster -> /readyz 200 again
// Usage: npm run bench -- faults [window=60]. Progress goes to stderr, the JSON to stdout.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from '../common/daemon/sleep.js'
import { ADMIN_TOKEN, eventually } from '../test/helpers/coordinator.js'
import { call, spawnCoordinator, type Proc } from '../test/helpers/coordinator-process.js'
import { agentEnv } from '../test/helpers/mesh.js'
import { ApiClient } from '../test/helpers/netns.js'
import { alive } from '../test/helpers/process.js'
import { type AgentProc, killPlacements, startAgent, stopAgent } from './agent-process.js'
import { runFigures } from './lib/harness.js'

const MACHINE = 'h100-8x-nv18'
const REPLICAS = 8

function log(line: string): void {
  process.stderr.write(`[faults ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

/** The time (ms since the epoch) of the agent's first log line with this message after `since`. */
function loggedAt(output: string, msg: string, since: number): number | undefined {
  for (const line of output.split('\n')) {
    if (!line.includes(`"msg":"${msg}"`)) continue
    const at = Number(/"time":(\d+)/.exec(line)?.[1])
    if (at >= since) return at
  }
  return undefined
}

/** Placement id -> the wrapper's pid, for the placements the coordinator says run, read from the agent's state. */
async function runningPids(api: string, workload: string, agentState: string): Promise<Map<string, number> | null> {
  const w = await call(api, 'GET', `/v1/workloads/${workload}`)
  if (w.status !== 200) return null
  const pids = new Map<string, number>()
  for (const p of w.body.placements as Array<{ id: string; state: string }>) {
    if (p.state !== 'running') continue
    try {
      const pid = Number(readFileSync(join(agentState, 'placements', p.id, 'pid'), 'utf8').trim())
      if (Number.isInteger(pid) && pid > 1 && alive(pid)) pids.set(p.id, pid)
    } catch {}
  }
  return pids
}

async function postEndpoint(
  api: string,
  pool: string,
  name: string,
  replicas: number,
  command: string[]
): Promise<string> {
  const r = await call(api, 'POST', '/v1/workloads', {
    name,
    kind: 'endpoint',
    replicas,
    pools: [pool],
    gpus: 1,
    run: { driver: 'process', command }
  })
  if (r.status !== 201) throw new Error(`POST /v1/workloads ${name}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

async function agentRestart(
  c: Proc,
  pool: string,
  env: Record<string, string>,
  agentState: string,
  agents: AgentProc[]
): Promise<Record<string, unknown>> {
  const id = await postEndpoint(c.api, pool, 'kept', REPLICAS, ['sh', '-c', 'exec sleep 600'])
  const before = await eventually(
    async () => {
      const pids = await runningPids(c.api, id, agentState)
      return pids !== null && pids.size === REPLICAS ? pids : undefined
    },
    60_000,
    `${REPLICAS} replicas running`
  )
  const first = agents[agents.length - 1] as AgentProc
  const exited = new Promise((resolve) => first.child.once('exit', resolve))
  const killedAt = Date.now()
  first.child.kill('SIGKILL')
  await exited
  const second = startAgent(env)
  agents.push(second)
  const joinedAt = await eventually(
    () => {
      if (second.child.exitCode !== null) throw new Error(`the restarted agent exited ${second.child.exitCode}`)
      return loggedAt(second.output(), 'joined the coordinator', killedAt)
    },
    60_000,
    'the restarted agent to join'
  )
  log(`agent restart: killed at +0, joined at +${joinedAt - killedAt} ms`)
  // Settled: all replicas run (the same processes or new ones) and still do a few heartbeats later.
  const settled = async () =>
    await eventually(
      async () => {
        const pids = await runningPids(c.api, id, agentState)
        return pids !== null && pids.size === REPLICAS ? pids : undefined
      },
      90_000,
      `${REPLICAS} replicas running again`
    )
  await settled()
  await sleep(3000)
  const after = await settled()
  const now = new Set(after.values())
  const kept = [...before.values()].filter((pid) => now.has(pid)).length
  log(`agent restart: ${kept} of ${before.size} placement processes kept (pids ${[...before.values()].join(' ')})`)
  await call(c.api, 'DELETE', `/v1/workloads/${id}`)
  return {
    agent_restart_workloads_kept: Math.round((kept / before.size) * 1000) / 1000,
    agent_restart_gap_ms: joinedAt - killedAt
  }
}

async function crashLoop(c: Proc, pool: string, windowS: number): Promise<Record<string, unknown>> {
  const api = new ApiClient(c.api, ADMIN_TOKEN)
  const created: Array<{ workload: unknown; at: number }> = []
  const stream = api.events((e, at) => {
    if (e.type === 'placement.created') created.push({ workload: e.data.workload, at })
  })
  try {
    await stream.ready
    // The previous phase's replicas must be gone for this one to be placed: wait for free GPUs.
    await eventually(
      async () => {
        const p = await call(c.api, 'GET', `/v1/pools/${pool}`)
        return p.body?.gpus?.free === REPLICAS ? true : undefined
      },
      60_000,
      'the pool to be free'
    )
    const t0 = performance.now()
    const id = await postEndpoint(c.api, pool, 'crash', 1, ['/nonexistent/binary'])
    await sleep(windowS * 1000)
    const count = created.filter((e) => e.workload === id && e.at - t0 <= windowS * 1000).length
    const state = await call(c.api, 'GET', `/v1/workloads/${id}`)
    log(
      `crash loop: ${count} placements in ${windowS} s; workload ${String(state.body?.state)} (${String(state.body?.reason)})`
    )
    await call(c.api, 'DELETE', `/v1/workloads/${id}`)
    return { crash_loop_placements_per_min: Math.round((count * 600) / windowS) / 10, crash_loop_window_s: windowS }
  } finally {
    stream.close()
  }
}

async function dbKill(c: Proc): Promise<Record<string, unknown>> {
  const postmaster = Number(readFileSync(join(c.stateDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0])
  const killedAt = performance.now()
  process.kill(postmaster, 'SIGKILL')
  let sawDown = false
  const backAt = await eventually(
    async () => {
      const r = await fetch(`${c.api}/readyz`, { signal: AbortSignal.timeout(5000) }).catch(() => null)
      if (r?.status !== 200) sawDown = true
      await r?.body?.cancel()
      return r?.status === 200 && sawDown ? performance.now() : undefined
    },
    120_000,
    '/readyz 200 after the kill'
  ).catch((err: Error) => {
    log(`db kill: ${err.message}`)
    return null
  })
  const ms = backAt === null ? null : Math.round(backAt - killedAt)
  log(`db kill: /readyz 200 again after ${String(ms)} ms`)
  return { db_kill_recovery_ms: ms }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const windowS = Number(/^(?:window=)?(\d+)$/.exec(args[0] ?? '60')?.[1])
  if (!(windowS > 0)) throw new Error('usage: npm run bench -- faults [window=60]')
  const started = performance.now()
  const cleanup: Array<() => Promise<void> | void> = []
  const agents: AgentProc[] = []
  // As root, PostgreSQL runs as the postgres user, who must reach the state folder: under /tmp.
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-faults-'))
  const agentState = join(dir, 'agent')
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }))
  try {
    const c = await spawnCoordinator({ teardown: (f) => cleanup.push(f) }, { GPUMESH_LOG_LEVEL: 'warn' }, dir)
    cleanup.push(async () => {
      for (const a of agents) await stopAgent(a)
      killPlacements(agentState)
    })
    const info = JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8')) as { multiaddrs: string[] }
    const token = await call(c.api, 'POST', '/v1/join-tokens', {})
    const env = agentEnv(
      {
        coordinators: info.multiaddrs,
        clusterKeyFile: join(dir, 'cluster.key'),
        joinToken: token.body.token as string
      },
      agentState,
      MACHINE
    )
    agents.push(startAgent(env))
    const host = await eventually(
      async () => {
        const hosts = await call(c.api, 'GET', '/v1/hosts')
        const h = (hosts.body?.items as Array<{ state: string; pool: string }> | undefined)?.find(
          (x) => x.state === 'ready'
        )
        return h
      },
      60_000,
      'the agent to be ready'
    )
    const pool = host.pool
    log(`coordinator ${String(c.child.pid)} and one agent of ${pool} ready`)
    const figures: Record<string, unknown> = { bench: 'faults' }
    Object.assign(figures, await agentRestart(c, pool, env, agentState, agents))
    Object.assign(figures, await crashLoop(c, pool, windowS))
    Object.assign(figures, await dbKill(c))
    return { ...figures, ...runFigures(started) }
  } finally {
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch((err: Error) => log(err.message))
  }
}
