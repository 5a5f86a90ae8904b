// Mesh figures, on real processes:
//   down_detect_ms_p50/max       a coordinator and four agents (`gpumesh-agent run`, mDNS on) in
//                                network namespaces (test/helpers/netns.ts); an agent's link is cut
//                                at the bridge, time until the host.state-changed -> down event
//                                arrives on GET /v1/events; heal, wait until ready, next agent
//   cut_to_replaced_ms_p50/max   in those cuts, from the cut to the placement.running event of the
//                                cut host's endpoint replica on another host (a 4-replica endpoint
//                                over both pools; cuts of a host holding no replica are not counted)
//   false_down (false_suspect)   hosts that went down (suspect) without being cut, while two CPU
//                                burners keep both cores busy for the whole down-detect phase
//   agent_idle_rss_mb/cpu_pct    one of those agents, joined for 30 s, then idle over the window
//                                (60 s: one GPU re-detection falls inside it), before the cuts
//   post_to_running_p50/p99_ms   POST /v1/workloads (a 1-replica endpoint `sh -c 'exec sleep 30'`) -> its
//                                placement.running event, on loopback, at a steady rate
//   coordinator_rss_mb/cpu_pct_200_agents  a coordinator process with 200 agents heartbeating
//                                (4 load processes x 50 agents, startAgent with injected facts)
// CPU is % of one core (utime + stime from /proc/<pid>/stat over the window); RSS is VmRSS from
// /proc/<pid>/status, the largest of one sample a second.
// Usage: npm run bench -- mesh [cuts=10] [workloads=200] [rate=10] [agents=200] [window=60] [heartbeat=1000]
// Needs root and iproute2 (network namespaces). Progress goes to stderr, the JSON to stdout.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { sleep } from '../common/daemon/sleep.js'
import { createLogger } from '../common/log.js'
import type { HostFacts } from '../protocol/host-facts.js'
import { eventually as waitFor, factsFor } from '../test/helpers/coordinator.js'
import { cleanEnv } from '../test/helpers/agent.js'
import {
  ApiClient,
  COORDINATOR,
  Network,
  startNetAgent,
  startNetCoordinator,
  type EventMessage,
  type NetAgent
} from '../test/helpers/netns.js'
import { freePort } from '../test/helpers/redis.js'
import { percentile, round1 } from './stats.js'
import { withHarness } from './lib/harness.js'
import { CLK_TCK, cpuTicks, measure } from './lib/proc-usage.js'

const silent = createLogger('bench', { level: 'silent' })
const TOKEN = 'gmt_bench-mesh-token-0123456789abcdef'
const SELF = fileURLToPath(import.meta.url)

interface Options {
  cuts: number
  workloads: number
  rate: number
  agents: number
  window: number
  heartbeat: number
}

function options(args: string[]): Options {
  const o: Options = { cuts: 10, workloads: 200, rate: 10, agents: 200, window: 60, heartbeat: 1000 }
  const order: Array<keyof Options> = ['cuts', 'workloads', 'rate', 'agents', 'window', 'heartbeat']
  args.forEach((a, i) => {
    const [k, v] = a.includes('=') ? (a.split('=', 2) as [string, string]) : [order[i] as string, a]
    if (!(k in o) || !Number.isFinite(Number(v)) || Number(v) <= 0)
      throw new Error(`bench mesh: bad argument ${a} (${order.join(', ')})`)
    o[k as keyof Options] = Number(v)
  })
  return o
}

function log(line: string): void {
  process.stderr.write(`[mesh ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

// ---------------------------------------------------------------- processes of the root namespace

/** Children started here, killed (SIGKILL) if the bench dies before its own cleanup. */
const children = new Set<ChildProcess>()
export const killChildren = () => {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL')
      } catch {}
    }
}

export function track(child: ChildProcess): ChildProcess {
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

/** Placements outlive their agents by design: kill their process groups (the wrapper's pid file). */
function killPlacements(stateRoot: string): number {
  let killed = 0
  const walk = (dir: string) => {
    let entries: string[] = []
    try {
      entries = readdirSync(dir)
    } catch {
      return
    }
    for (const e of entries) {
      if (e === 'placements') {
        for (const id of readdirSync(join(dir, e))) {
          try {
            const pgid = Number(readFileSync(join(dir, e, id, 'pid'), 'utf8').trim())
            if (Number.isInteger(pgid) && pgid > 1) {
              process.kill(-pgid, 'SIGKILL')
              killed++
            }
          } catch {}
        }
      } else if (!e.includes('.')) walk(join(dir, e))
    }
  }
  walk(stateRoot)
  return killed
}

export interface Coordinator {
  child: ChildProcess
  pid: number
  api: ApiClient
  multiaddrs: string[]
  clusterKeyFile: string
  logFile: string
}

/** A coordinator process on 127.0.0.1 (its log in <dir>/coordinator.log). */
export async function startLoopbackCoordinator(
  dir: string,
  databaseUrl: string,
  env: Record<string, string> = {}
): Promise<Coordinator> {
  const stateDir = join(dir, 'coordinator')
  const port = await freePort()
  const logFile = join(dir, 'coordinator.log')
  const fd = openSync(logFile, 'a')
  const child = track(
    spawn(process.execPath, [COORDINATOR], {
      env: cleanEnv({
        GPUMESH_STATE_DIR: stateDir,
        GPUMESH_API_LISTEN: `127.0.0.1:${port}`,
        GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
        DATABASE_URL: databaseUrl,
        GPUMESH_ADMIN_TOKEN: TOKEN,
        GPUMESH_LEADER_RETRY_MS: '200',
        GPUMESH_LOG_LEVEL: 'warn',
        ...env
      }),
      stdio: ['ignore', fd, fd]
    })
  )
  closeSync(fd)
  const info = await waitFor(
    () => {
      if (child.exitCode !== null)
        throw new Error(`the coordinator exited ${child.exitCode}: ${readFileSync(logFile, 'utf8').slice(-2000)}`)
      try {
        return JSON.parse(readFileSync(join(stateDir, 'coordinator.json'), 'utf8')) as { multiaddrs: string[] }
      } catch {
        return undefined
      }
    },
    60_000,
    'coordinator.json'
  )
  const api = new ApiClient(`http://127.0.0.1:${port}`, TOKEN)
  await waitFor(
    async () =>
      /^gpumesh_leader 1$/m.test(String((await api.call('GET', '/metrics').catch(() => null))?.body ?? ''))
        ? true
        : undefined,
    30_000,
    'the coordinator to lead'
  )
  return {
    child,
    pid: child.pid as number,
    api,
    multiaddrs: info.multiaddrs,
    clusterKeyFile: join(stateDir, 'cluster.key'),
    logFile
  }
}

/** Ready hosts, from the pools (GET /v1/hosts carries every host's facts: too heavy to poll with 200 hosts). */
export async function readyHosts(api: ApiClient): Promise<number> {
  const r = await api.call('GET', '/v1/pools', undefined, 30_000)
  if (r.status !== 200) throw new Error(`GET /v1/pools: ${r.status} ${JSON.stringify(r.body)}`)
  return (r.body.items as Array<{ readyHosts: number }>).reduce((n, p) => n + p.readyHosts, 0)
}

/** Waits until `n` hosts are ready; fails as soon as one of the load processes exits. */
export async function fleetReady(
  api: ApiClient,
  loads: ChildProcess[],
  n: number,
  ms: number,
  what: string
): Promise<void> {
  await waitFor(
    async () => {
      const dead = loads.find((l) => l.exitCode !== null)
      if (dead !== undefined) throw new Error(`a load process exited ${String(dead.exitCode)}`)
      await sleep(500)
      return (await readyHosts(api)) === n ? true : undefined
    },
    ms,
    what
  )
}

export async function joinTokens(api: ApiClient, n: number): Promise<string[]> {
  const tokens: string[] = []
  for (let i = 0; i < n; i++) {
    const r = await api.call('POST', '/v1/join-tokens', {})
    if (r.status !== 201) throw new Error(`join token: ${r.status} ${JSON.stringify(r.body)}`)
    tokens.push(r.body.token as string)
  }
  return tokens
}

interface LoadConfig {
  coordinators: string[]
  clusterKeyFile: string
  facts: HostFacts
  agents: Array<{ name: string; token: string; stateDir: string }>
}

/** A load process: `agents` agents in one process (this file run as `node mesh.js load <config>`). */
function startLoad(dir: string, label: string, config: LoadConfig): ChildProcess {
  const file = join(dir, `${label}.json`)
  writeFileSync(file, JSON.stringify(config))
  const fd = openSync(join(dir, `${label}.log`), 'a')
  const child = track(spawn(process.execPath, [SELF, 'load', file], { env: cleanEnv(), stdio: ['ignore', fd, fd] }))
  closeSync(fd)
  return child
}

async function loadMain(configFile: string): Promise<void> {
  const { startAgent } = await import('../agent/daemon.js')
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as LoadConfig
  const agents: Array<Awaited<ReturnType<typeof startAgent>>> = []
  let stopping = false
  const stop = () => {
    if (stopping) return
    stopping = true
    setTimeout(() => process.exit(0), 10_000).unref()
    void Promise.all(agents.map(async (a) => await a.stop().catch(() => {}))).then(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  for (const a of config.agents) {
    if (stopping) return
    agents.push(
      await startAgent({
        stateDir: a.stateDir,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        coordinators: config.coordinators,
        clusterKeyFile: config.clusterKeyFile,
        joinToken: a.token,
        name: a.name,
        facts: { ...config.facts, hostname: a.name },
        detect: { agentVersion: 'bench', timeoutMs: 2000 },
        mdns: false,
        stopGraceMs: 1000,
        log: silent
      })
    )
  }
  process.stdout.write(`${agents.length} agents started\n`)
}

// ---------------------------------------------------------------- phases

interface Ctx {
  dir: string
  databaseUrl: (name: string) => Promise<string>
  cleanup: Array<() => Promise<void>>
}

/** Netns: idle agent, then cuts under CPU load. */
async function downDetect(ctx: Ctx, o: Options): Promise<Record<string, unknown>> {
  const machines: Record<string, string> = {
    'h100-a': 'h100-8x-nv18-nics',
    'h100-b': 'h100-8x-nv18-nics',
    'l40s-c': 'l40s-1x',
    'l40s-d': 'l40s-1x'
  }
  const net = await Network.create(['coord', ...Object.keys(machines)])
  ctx.cleanup.push(async () => {
    await net.destroy()
  })
  const c = await startNetCoordinator(net, 'coord', {
    databaseUrl: await ctx.databaseUrl('mesh_down'),
    heartbeatMs: o.heartbeat,
    env: { GPUMESH_LOG_LEVEL: 'warn' }
  })
  const agents = new Map<string, NetAgent>()
  for (const [name, machine] of Object.entries(machines)) {
    const [token] = await joinTokens(c.api, 1)
    agents.set(name, startNetAgent(net, name, { machine, coordinator: c, joinToken: token as string }))
  }
  const ids = new Map<string, string>()
  await waitFor(
    async () => {
      const items = (await c.api.get('/v1/hosts')).items as Array<{ id: string; name: string; state: string }>
      for (const h of items) ids.set(h.name, h.id)
      return items.length === agents.size && items.every((h) => h.state === 'ready') ? true : undefined
    },
    90_000,
    'the agents to join'
  )
  const names = [...agents.keys()]
  await waitFor(
    async () => {
      for (const n of names) {
        const peers = await net.tcpPeers(n)
        if (!names.every((m) => m === n || peers.has(net.node(m).ip))) return undefined
      }
      return true
    },
    30_000,
    'the agents to find each other by mDNS'
  )
  log(`netns: coordinator and ${agents.size} agents joined (heartbeat ${o.heartbeat} ms), agents meshed by mDNS`)

  // Idle means steady state: start-up (detection, joining, meshing) leaves garbage that takes a while to go.
  await sleep(30_000)
  const idleAgent = agents.get('h100-a') as NetAgent
  const idle = await measure(idleAgent.proc.pid, o.window)
  log(
    `idle agent (pid ${idleAgent.proc.pid}) over ${o.window} s: ${idle.cpuPct} % CPU (${idle.cpuPctWithChildren} % with the nvidia-smi calls it waits for), RSS max ${idle.rssMbMax} MB, mean ${idle.rssMbMean} MB`
  )

  // Host state changes with their arrival time, and whether the host's link was cut at that moment.
  const cut = new Set<string>()
  const changes: Array<{ host: string; to: string; reason: string; at: number; whileCut: boolean }> = []
  const started: Array<{ workload: string; host: string; at: number }> = []
  const waiting = new Set<() => void>()
  const stream = c.api.events((e: EventMessage, at: number) => {
    if (e.type === 'placement.running')
      started.push({ workload: String(e.data.workload), host: String(e.data.host), at })
    if (e.type !== 'host.state-changed') return
    changes.push({
      host: e.subject.id,
      to: String(e.data.to),
      reason: String(e.data.reason ?? ''),
      at,
      whileCut: cut.has(e.subject.id)
    })
    for (const w of waiting) w()
  })
  ctx.cleanup.push(async () => {
    stream.close()
  })
  await stream.ready
  const next = async (test: (ch: { host: string; to: string }) => boolean, from: number, ms: number, what: string) => {
    const deadline = performance.now() + ms
    for (;;) {
      const found = changes.slice(from).find(test)
      if (found !== undefined) return found
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
      await new Promise<void>((resolve) => {
        const w = () => {
          waiting.delete(w)
          resolve()
        }
        waiting.add(w)
        setTimeout(w, Math.min(left, 200))
      })
    }
  }

  // One replica per host: a cut host's replica is placed again elsewhere.
  const pools = [...new Set(Object.values(machines))].map((m) =>
    m.startsWith('h100') ? 'h100-80gb-8x-nvlink' : 'l40s-48gb-1x'
  )
  const endpoint = (
    await c.api.call('POST', '/v1/workloads', {
      name: 'chat',
      kind: 'endpoint',
      replicas: names.length,
      gpus: 1,
      pools,
      run: { driver: 'process', command: ['sh', '-c', 'exec sleep 3600'] }
    })
  ).body.id as string
  const replicasOn = async (host: string) =>
    ((await c.api.get(`/v1/workloads/${endpoint}`)).placements as Array<{ hostId: string; state: string }>).filter(
      (p) => p.hostId === host && p.state === 'running'
    ).length
  await waitFor(
    async () =>
      ((await c.api.get(`/v1/workloads/${endpoint}`)).placements as Array<{ state: string }>).filter(
        (p) => p.state === 'running'
      ).length === names.length
        ? true
        : undefined,
    60_000,
    "the endpoint's replicas to run"
  )

  const burners = [0, 1].map(() => track(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' })))
  ctx.cleanup.push(async () => {
    for (const b of burners) await stopChild(b, 1000)
  })
  log(`two CPU burners started (pids ${burners.map((b) => b.pid).join(', ')})`)
  const start = changes.length
  const detect: number[] = []
  const rejoin: number[] = []
  const replaced: number[] = []
  try {
    await sleep(2000)
    for (let i = 0; i < o.cuts; i++) {
      const victim = names[i % names.length] as string
      const host = ids.get(victim) as string
      const from = changes.length
      const holds = (await replicasOn(host)) > 0
      const startedFrom = started.length
      // Marked before the cut and cleared once ready again: its suspect/down events in between are expected.
      cut.add(host)
      const cutAt = performance.now()
      await net.cut(victim)
      const down = await next((ch) => ch.host === host && ch.to === 'down', from, 30_000, `${victim} to be down`)
      detect.push(down.at - cutAt)
      if (holds) {
        const moved = await waitFor(
          () => started.slice(startedFrom).find((s) => s.workload === endpoint && s.host !== host),
          30_000,
          `${victim}'s replica to run elsewhere`
        )
        replaced.push(moved.at - cutAt)
      }
      const healFrom = changes.length
      const healAt = performance.now()
      await net.heal(victim)
      const ready = await next(
        (ch) => ch.host === host && ch.to === 'ready',
        healFrom,
        60_000,
        `${victim} to be ready again`
      )
      rejoin.push(ready.at - healAt)
      cut.delete(host)
      log(
        `cut ${i + 1}/${o.cuts} ${victim}: down ${(down.at - cutAt).toFixed(0)} ms after the cut, ready ${(ready.at - healAt).toFixed(0)} ms after the heal`
      )
      // Let its mesh links (mDNS redial) come back before the next cut, as after a real outage.
      await sleep(2500)
    }
  } finally {
    for (const b of burners) await stopChild(b, 1000)
    log('CPU burners stopped')
  }
  const alarms = changes.slice(start).filter((ch) => !ch.whileCut && (ch.to === 'down' || ch.to === 'suspect'))
  const nameOf = new Map([...ids].map(([n, id]) => [id, n]))
  for (const a of alarms) log(`  false alarm: ${nameOf.get(a.host) ?? a.host} ${a.to} without a cut (${a.reason})`)
  stream.close()
  return {
    down_detect_ms_p50: round1(percentile(detect, 0.5)),
    down_detect_ms_max: Math.round(Math.max(...detect)),
    cut_to_replaced_ms_p50: round1(percentile(replaced, 0.5)),
    cut_to_replaced_ms_max: Math.round(Math.max(...replaced)),
    false_down: alarms.filter((a) => a.to === 'down').length,
    false_suspect: alarms.filter((a) => a.to === 'suspect').length,
    ready_after_heal_ms_p50: round1(percentile(rejoin, 0.5)),
    agent_idle_rss_mb: idle.rssMbMax,
    agent_idle_cpu_pct: idle.cpuPctWithChildren,
    agent_idle_cpu_pct_self: idle.cpuPct
  }
}

/** A phase's folder and its coordinator process on loopback, stopped at the end of the run. */
async function loopbackPhase(ctx: Ctx, name: string): Promise<{ dir: string; c: Coordinator }> {
  const dir = join(ctx.dir, name)
  mkdirSync(dir)
  const c = await startLoopbackCoordinator(dir, await ctx.databaseUrl(`mesh_${name}`))
  ctx.cleanup.push(async () => {
    await stopChild(c.child)
  })
  return { dir, c }
}

/** Loopback: POST 1-replica endpoints at a steady rate, each one's time to its placement.running event. */
async function postToRunning(ctx: Ctx, o: Options): Promise<Record<string, unknown>> {
  const { dir, c } = await loopbackPhase(ctx, 'post')
  const warm = 20
  const facts = await factsFor('h100-8x-nv18-nics')
  const hostCount = Math.ceil((o.workloads + warm) / facts.gpus.length) + 1
  const tokens = await joinTokens(c.api, hostCount)
  const load = startLoad(dir, 'load-post', {
    coordinators: c.multiaddrs,
    clusterKeyFile: c.clusterKeyFile,
    facts,
    agents: tokens.map((token, i) => ({ name: `post-${i}`, token, stateDir: join(dir, 'agents', `post-${i}`) }))
  })
  ctx.cleanup.push(async () => {
    await stopChild(load)
    log(`post: killed ${killPlacements(join(dir, 'agents'))} placement process groups`)
  })
  await waitFor(
    async () => {
      if (load.exitCode !== null) throw new Error(`the load process exited ${load.exitCode}`)
      await sleep(200)
      return (await readyHosts(c.api)) === hostCount ? true : undefined
    },
    120_000,
    `${hostCount} agents to join`
  )
  log(`post: coordinator (pid ${c.pid}) with ${hostCount} agents of ${facts.pool.key} in one load process`)

  const running = new Map<string, number>()
  const placed = new Map<string, number>()
  const stream = c.api.events((e, at) => {
    if (e.type === 'placement.running' && typeof e.data.workload === 'string' && !running.has(e.data.workload))
      running.set(e.data.workload, at)
    else if (e.type === 'workload.placed') placed.set(e.subject.id, at)
  })
  ctx.cleanup.push(async () => {
    stream.close()
  })
  await stream.ready
  const posted = new Map<string, number>()
  const refused: string[] = []
  const steady = async (prefix: string, count: number, measured: boolean) => {
    const t0 = performance.now()
    const requests: Array<Promise<void>> = []
    for (let i = 0; i < count; i++) {
      const wait = t0 + (i * 1000) / o.rate - performance.now()
      if (wait > 0) await sleep(wait)
      const sent = performance.now()
      requests.push(
        c.api
          .call('POST', '/v1/workloads', {
            name: `${prefix}-${i}`,
            kind: 'endpoint',
            replicas: 1,
            pools: [facts.pool.key],
            gpus: 1,
            run: { driver: 'process', command: ['sh', '-c', 'exec sleep 30'] }
          })
          .then((r) => {
            if (r.status === 201) {
              if (measured) posted.set(r.body.id as string, sent)
            } else refused.push(`${r.status} ${JSON.stringify(r.body)}`)
          })
      )
    }
    await Promise.all(requests)
  }
  await steady('warm', warm, false)
  await sleep(1000)
  await steady('lat', o.workloads, true)
  await waitFor(
    () => ([...posted.keys()].every((id) => running.has(id)) ? true : undefined),
    30_000,
    'every measured workload to run'
  ).catch((err: Error) => log(`post: ${err.message}`))
  stream.close()
  for (const r of refused.slice(0, 5)) log(`post: refused ${r}`)
  const toRunning = [...posted].flatMap(([id, sent]) => (running.has(id) ? [(running.get(id) as number) - sent] : []))
  const toPlaced = [...posted].flatMap(([id, sent]) => (placed.has(id) ? [(placed.get(id) as number) - sent] : []))
  log(
    `post: ${posted.size} posted at ${o.rate}/s, ${toRunning.length} running; POST -> placed p50 ${round1(percentile(toPlaced, 0.5))} ms, -> running p50 ${round1(percentile(toRunning, 0.5))} ms, p99 ${round1(percentile(toRunning, 0.99))} ms`
  )
  return {
    post_to_running_p50_ms: round1(percentile(toRunning, 0.5)),
    post_to_running_p99_ms: round1(percentile(toRunning, 0.99)),
    post_to_placed_p50_ms: round1(percentile(toPlaced, 0.5)),
    post_rate_per_s: o.rate,
    posted: posted.size,
    running: toRunning.length
  }
}

/** A coordinator process with `agents` agents heartbeating (load processes of 50). */
async function fleet(ctx: Ctx, o: Options): Promise<Record<string, unknown>> {
  const { dir, c } = await loopbackPhase(ctx, 'fleet')
  const machines = ['h100-8x-nv18-nics', 'l40s-1x', 'b200-8x', 'h200-1x']
  const perProcess = 50
  const processes = Math.ceil(o.agents / perProcess)
  const tokens = await joinTokens(c.api, o.agents)
  const loads: ChildProcess[] = []
  for (let p = 0; p < processes; p++) {
    const facts = await factsFor(machines[p % machines.length] as string)
    const agents = tokens
      .slice(p * perProcess, (p + 1) * perProcess)
      .map((token, i) => ({ name: `fleet-${p}-${i}`, token, stateDir: join(dir, 'agents', `fleet-${p}-${i}`) }))
    loads.push(
      startLoad(dir, `load-${p}`, { coordinators: c.multiaddrs, clusterKeyFile: c.clusterKeyFile, facts, agents })
    )
  }
  ctx.cleanup.push(async () => {
    await Promise.all(
      loads.map(async (l) => {
        await stopChild(l)
      })
    )
  })
  const started = performance.now()
  await fleetReady(c.api, loads, o.agents, 180_000, `${o.agents} agents to join`)
  log(
    `fleet: ${o.agents} agents in ${processes} load processes joined in ${((performance.now() - started) / 1000).toFixed(1)} s; settling`
  )
  await sleep(5000)
  const before = await readyHosts(c.api)
  const usage = await measure(c.pid, o.window)
  const after = await readyHosts(c.api)
  const metrics = String((await c.api.call('GET', '/metrics')).body)
  const sessions = /^gpumesh_agent_sessions (\d+)/m.exec(metrics)?.[1] ?? '?'
  const loadCpu = loads.map((l) => {
    try {
      return cpuTicks(l.pid as number).self / CLK_TCK
    } catch {
      return NaN
    }
  })
  log(
    `fleet: coordinator (pid ${c.pid}) over ${o.window} s: ${usage.cpuPct} % CPU, RSS max ${usage.rssMbMax} MB, mean ${usage.rssMbMean} MB; ${sessions} sessions; ready hosts before ${before}, after ${after}; load processes used ${loadCpu.map((x) => x.toFixed(0)).join(', ')} CPU-s in all`
  )
  return {
    coordinator_rss_mb_200_agents: usage.rssMbMax,
    coordinator_cpu_pct_200_agents: usage.cpuPct,
    fleet_agents: o.agents,
    fleet_ready_after_window: after
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const o = options(args)
  return await withHarness(
    {
      name: 'mesh',
      log,
      // Namespaces (their own exit hook), children and folders go even when the bench is interrupted.
      onExit: (dir) => {
        killChildren()
        killPlacements(dir)
      }
    },
    async ({ dir, cleanup, databaseUrl }) => {
      const ctx: Ctx = { dir, databaseUrl, cleanup }
      const figures: Record<string, unknown> = { bench: 'mesh' }
      const phase = async (name: string, f: () => Promise<Record<string, unknown>>) => {
        const mark = cleanup.length
        const t0 = performance.now()
        log(`${name}: start`)
        try {
          Object.assign(figures, await f())
        } finally {
          // This phase's processes go before the next phase measures anything.
          for (const step of cleanup.splice(mark).reverse())
            await step().catch((err: Error) => log(`${name} cleanup: ${err.message}`))
          log(`${name}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s`)
        }
      }
      await phase('down-detect (netns)', async () => await downDetect(ctx, o))
      await phase('post-to-running (loopback)', async () => await postToRunning(ctx, o))
      await phase(`fleet of ${o.agents} agents (loopback)`, async () => await fleet(ctx, o))
      return { ...figures, heartbeat_ms: o.heartbeat, cuts: o.cuts, window_s: o.window }
    }
  )
}

// `node dist/bench/mesh.js load <config.json>`: one load process of agents (see startLoad).
if (
  process.argv[1] !== undefined &&
  pathToFileURL(process.argv[1]).href === import.meta.url &&
  process.argv[2] === 'load'
) {
  await loadMain(process.argv[3] as string)
}
