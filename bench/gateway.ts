// Gateway figures, on real processes on loopback: a coordinator process (its
// PostgreSQL embedded in this bench process), one `gpumesh-agent run` process
// replaying an 8-GPU machine, and one endpoint replica (test/helpers/replica.ts)
// it runs. The load comes from this process, with one keep-alive node:http
// client for both targets: the replica directly on 127.0.0.1:$PORT, and the
// gateway (/<endpoint>/...: auth in PostgreSQL, a libp2p stream to the agent,
// the agent's connection to the replica).
//   direct_rps, gateway_rps            closed loop, `concurrency` (32) callers, POST /echo with a small JSON
//                                      body, `seconds` per target, in alternating slices of one run
//   gateway_overhead_p50_ms / _p99_ms  open loop at `rate` (200) calls/s, gateway latency minus direct
//                                      latency at the same quantile
//   sse_first_event_overhead_ms        GET /sse: request sent -> first `data:` bytes, median via the
//                                      gateway minus median direct (calls one at a time, alternating)
//   auth_checks_per_s                  authorizeCall() alone against the same PostgreSQL, with as many
//                                      callers as the coordinator's pool has connections (20)
//   cpu_ms_per_call_direct / _gateway  CPU time (from /proc) of the coordinator, the agent, the replica,
//                                      PostgreSQL and this process over the closed loop, per call
// Usage: npm run bench -- gateway [seconds=10] [concurrency=32] [rate=200] [profile=<folder>] (profile:
// the coordinator's and the agent's node --cpu-prof files, for where their time goes). Needs root
// (embedded PostgreSQL runs as postgres). Progress and the machine's load go to stderr, the JSON to stdout.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { Agent, type IncomingMessage, request } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { sleep } from '../common/daemon/sleep.js'
import { createLogger } from '../common/log.js'
import { createPool } from '../coordinator/store/db.js'
import { startEmbeddedPostgres } from '../coordinator/store/embedded.js'
import { authorizeCall } from '../coordinator/store/tokens.js'
import { ADMIN_TOKEN, eventually } from '../test/helpers/coordinator.js'
import { call, spawnCoordinator } from '../test/helpers/coordinator-process.js'
import { REPLICA_COMMAND } from '../test/helpers/fixtures.js'
import { agentEnv } from '../test/helpers/mesh.js'
import { type AgentProc, killPlacements, startAgent, stopAgent } from './agent-process.js'
import { percentile, round1 } from './stats.js'

const MACHINE = 'h100-8x-nv18'
const ENDPOINT = 'bench'
/** The coordinator's pool size (createPool's default): the most auth checks it runs at once. */
const POOL_CONNECTIONS = 20
const BODY = Buffer.from(JSON.stringify({ model: ENDPOINT, input: 'the quick brown fox jumps over the lazy dog' }))

function log(line: string): void {
  process.stderr.write(`[gateway ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

interface Options {
  seconds: number
  concurrency: number
  rate: number
  /** A folder for CPU profiles (node --cpu-prof) of the coordinator and the agent, written when they exit. */
  profile: string | null
}

const USAGE = 'usage: npm run bench -- gateway [seconds=10] [concurrency=32] [rate=200] [profile=<folder>]'

function options(args: string[]): Options {
  const o: Options = { seconds: 10, concurrency: 32, rate: 200, profile: null }
  for (const arg of args) {
    const folder = /^profile=(.+)$/.exec(arg)
    if (folder !== null) {
      o.profile = resolve(folder[1] as string)
      continue
    }
    const m = /^(seconds|concurrency|rate)=(\d+)$/.exec(arg)
    if (m === null || Number(m[2]) <= 0) throw new Error(USAGE)
    o[m[1] as 'seconds' | 'concurrency' | 'rate'] = Number(m[2])
  }
  return o
}

/** The processes a call passes through: pids, the replica's process group, PostgreSQL's postmaster. */
interface Parts {
  coordinator: number
  agent: number
  replicaGroup: number
  postmaster: number
}
type Part = 'coordinator' | 'agent' | 'replica' | 'postgres' | 'bench'
const PARTS: Part[] = ['coordinator', 'agent', 'replica', 'postgres', 'bench']
/** /proc/<pid>/stat counts CPU time in clock ticks (USER_HZ, 100 on Linux). */
const MS_PER_TICK = 10

/** CPU time (user + system, ms) each part has used so far, from /proc (PostgreSQL: the postmaster and its backends). */
function cpuMs(parts: Parts): Record<Part, number> {
  const used: Record<Part, number> = { coordinator: 0, agent: 0, replica: 0, postgres: 0, bench: 0 }
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    } catch {
      continue // gone meanwhile
    }
    // After the command name in parentheses: state ppid pgrp ... utime (12th) stime (13th).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const [ppid, pgrp] = [Number(f[1]), Number(f[2])]
    const part: Part | null =
      pid === parts.coordinator
        ? 'coordinator'
        : pid === parts.agent
          ? 'agent'
          : pgrp === parts.replicaGroup
            ? 'replica'
            : pid === parts.postmaster || ppid === parts.postmaster
              ? 'postgres'
              : pid === process.pid
                ? 'bench'
                : null
    if (part !== null) used[part] += (Number(f[11]) + Number(f[12])) * MS_PER_TICK
  }
  return used
}

/** What each part spent per call over a stretch of calls, in ms of CPU. */
function perCall(before: Record<Part, number>, after: Record<Part, number>, calls: number): Record<Part, number> {
  return Object.fromEntries(PARTS.map((p) => [p, round2((after[p] - before[p]) / Math.max(1, calls))])) as Record<
    Part,
    number
  >
}

const round2 = (x: number) => Math.round(x * 100) / 100

/** Where calls go: the replica itself, or its endpoint on the gateway. */
interface Target {
  name: 'direct' | 'gateway'
  host: string
  port: number
  /** Prefix of every path: '' directly, '/<endpoint>' on the gateway. */
  prefix: string
}

/** One client for every call of the bench, as an application would hold one. */
const client = new Agent({ keepAlive: true, maxSockets: 256 })

/** One call of the bench's client; `answer` reads a 2xx response into the result (`started`: when it was sent). */
function send<T>(
  t: Target,
  method: string,
  path: string,
  body: Buffer | undefined,
  answer: (res: IncomingMessage, started: number) => Promise<T>
): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const req = request(
      {
        agent: client,
        host: t.host,
        port: t.port,
        method,
        path: t.prefix + path,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': body.length })
        }
      },
      (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          res.resume()
          reject(new Error(`${t.name} ${method} ${path}: ${res.statusCode}`))
        } else answer(res, started).then(resolve, reject)
      }
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** One call; its latency in ms once the whole response has arrived. */
const timedCall = (t: Target, method: string, path: string, body?: Buffer): Promise<number> =>
  send(
    t,
    method,
    path,
    body,
    (res, started) =>
      new Promise((resolve, reject) => {
        res.resume()
        res.on('end', () => resolve(performance.now() - started))
        res.on('error', reject)
      })
  )

/** `concurrency` callers, each calling again as soon as its call ended, for `ms`: completed calls per second. */
async function closedLoop(t: Target, concurrency: number, ms: number): Promise<{ ok: number; failed: number }> {
  const until = performance.now() + ms
  let ok = 0
  let failed = 0
  const caller = async () => {
    while (performance.now() < until)
      await timedCall(t, 'POST', '/echo', BODY).then(
        () => ok++,
        () => failed++
      )
  }
  await Promise.all(Array.from({ length: concurrency }, caller))
  return { ok, failed }
}

/**
 * Calls sent on a fixed schedule (`rate` a second), whether or not earlier
 * ones have answered, for `ms`: the latency of each (from its scheduled time,
 * so a stall counts for every call it delays).
 */
async function openLoop(t: Target, rate: number, ms: number): Promise<{ latencies: number[]; failed: number }> {
  const latencies: number[] = []
  let failed = 0
  const calls: Promise<void>[] = []
  const start = performance.now()
  const total = Math.floor((rate * ms) / 1000)
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate
    const wait = due - performance.now()
    if (wait > 1) await sleep(wait)
    calls.push(
      timedCall(t, 'POST', '/echo', BODY).then(
        () => {
          latencies.push(performance.now() - due)
        },
        () => {
          failed++
        }
      )
    )
  }
  await Promise.all(calls)
  return { latencies, failed }
}

/** GET /sse: ms from sending the request to the first `data:` bytes of the stream. */
const firstEvent = (t: Target): Promise<number> =>
  send(
    t,
    'GET',
    '/sse?n=2&ms=20',
    undefined,
    (res, started) =>
      new Promise((resolve, reject) => {
        let first: number | null = null
        res.on('data', (chunk: Buffer) => {
          if (first === null && chunk.includes('data:')) first = performance.now() - started
        })
        res.on('end', () => (first === null ? reject(new Error(`${t.name} /sse: no event`)) : resolve(first)))
        res.on('error', reject)
      })
  )

/** authorizeCall() by `concurrency` callers for `ms`, on a pool like the coordinator's: checks per second. */
async function authChecks(databaseUrl: string, concurrency: number, ms: number): Promise<number> {
  const pool = createPool(databaseUrl, concurrency)
  try {
    const until = performance.now() + ms
    let checks = 0
    const caller = async () => {
      while (performance.now() < until) {
        const r = await authorizeCall(pool, ADMIN_TOKEN, ENDPOINT, null)
        if (!r.ok) throw new Error(`authorizeCall refused the bench's token: ${r.detail}`)
        checks++
      }
    }
    const started = performance.now()
    await Promise.all(Array.from({ length: concurrency }, caller))
    return checks / ((performance.now() - started) / 1000)
  } finally {
    await pool.end()
  }
}

/** Runs `measure` on each target in turn, `slices` times, so that both see the same moments of a shared machine. */
async function alternating<R>(targets: Target[], slices: number, measure: (t: Target) => Promise<R>) {
  const results = new Map<Target['name'], R[]>(targets.map((t) => [t.name, []]))
  for (let i = 0; i < slices; i++) for (const t of targets) results.get(t.name)?.push(await measure(t))
  return results
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

async function measure(
  o: Options,
  targets: Target[],
  databaseUrl: string,
  parts: Parts
): Promise<Record<string, unknown>> {
  const [direct, gateway] = targets as [Target, Target]
  // Warm both paths (connections, streams, JIT) before anything counts.
  await closedLoop(direct, o.concurrency, 1000)
  await closedLoop(gateway, o.concurrency, 1000)
  log(`load average before: ${load()}`)

  const sliceMs = (o.seconds * 1000) / 2
  const rps = await alternating(targets, 2, async (t) => {
    const before = cpuMs(parts)
    const r = await closedLoop(t, o.concurrency, sliceMs)
    return { ...r, cpu: perCall(before, cpuMs(parts), r.ok) }
  })
  const perSecond = (name: Target['name']) => {
    const r = rps.get(name) ?? []
    const cpu = Object.fromEntries(PARTS.map((p) => [p, round2(sum(r.map((x) => x.cpu[p])) / r.length)]))
    return { rps: sum(r.map((x) => x.ok)) / o.seconds, failed: sum(r.map((x) => x.failed)), cpu }
  }
  const closed = { direct: perSecond('direct'), gateway: perSecond('gateway') }
  log(
    `closed loop x${o.concurrency}: direct ${closed.direct.rps.toFixed(0)}/s, gateway ${closed.gateway.rps.toFixed(0)}/s`
  )
  log(`CPU ms per call, direct ${JSON.stringify(closed.direct.cpu)}, gateway ${JSON.stringify(closed.gateway.cpu)}`)

  const open = await alternating(targets, 2, (t) => openLoop(t, o.rate, sliceMs))
  const lat = (name: Target['name']) => (open.get(name) ?? []).flatMap((r) => r.latencies)
  const openFailed = sum([...open.values()].flat().map((r) => r.failed))
  const q = (name: Target['name'], p: number) => percentile(lat(name), p)
  log(
    `open loop ${o.rate}/s: direct p50 ${q('direct', 0.5).toFixed(2)} p99 ${q('direct', 0.99).toFixed(2)} ms, gateway p50 ${q('gateway', 0.5).toFixed(2)} p99 ${q('gateway', 0.99).toFixed(2)} ms`
  )

  const sse = await alternating(targets, 100, firstEvent)
  const sseMedian = (name: Target['name']) => percentile(sse.get(name) ?? [], 0.5)
  log(`first SSE event: direct ${sseMedian('direct').toFixed(2)} ms, gateway ${sseMedian('gateway').toFixed(2)} ms`)

  const auth = await authChecks(databaseUrl, POOL_CONNECTIONS, sliceMs)
  log(`authorizeCall x${POOL_CONNECTIONS}: ${auth.toFixed(0)}/s; load average after: ${load()}`)
  return {
    direct_rps: Math.round(closed.direct.rps),
    gateway_rps: Math.round(closed.gateway.rps),
    gateway_overhead_p50_ms: round1(q('gateway', 0.5) - q('direct', 0.5)),
    gateway_overhead_p99_ms: round1(q('gateway', 0.99) - q('direct', 0.99)),
    sse_first_event_overhead_ms: round1(sseMedian('gateway') - sseMedian('direct')),
    auth_checks_per_s: Math.round(auth),
    direct_p50_ms: round1(q('direct', 0.5)),
    direct_p99_ms: round1(q('direct', 0.99)),
    gateway_p50_ms: round1(q('gateway', 0.5)),
    gateway_p99_ms: round1(q('gateway', 0.99)),
    failed_calls: closed.direct.failed + closed.gateway.failed + openFailed,
    // Where a call's CPU goes (closed loop): the gateway's extra is the coordinator, the agent and PostgreSQL.
    cpu_ms_per_call_direct: closed.direct.cpu,
    cpu_ms_per_call_gateway: closed.gateway.cpu,
    concurrency: o.concurrency,
    rate: o.rate,
    seconds_per_target: o.seconds
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const o = options(args)
  const started = performance.now()
  const cleanup: Array<() => Promise<void> | void> = []
  const agents: AgentProc[] = []
  // As root, PostgreSQL runs as the postgres user, who must reach the state folder: under /tmp.
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-gateway-'))
  const agentState = join(dir, 'agent')
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }))
  try {
    mkdirSync(join(dir, 'pg'))
    const db = await startEmbeddedPostgres(join(dir, 'pg'), createLogger('bench', { level: 'silent' }))
    cleanup.push(() => db.stop())
    const profiling = o.profile === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${o.profile}`]
    const c = await spawnCoordinator(
      { teardown: (f) => cleanup.push(f) },
      { GPUMESH_LOG_LEVEL: 'warn', DATABASE_URL: db.url },
      dir,
      profiling
    )
    cleanup.push(async () => {
      for (const a of agents) await stopAgent(a)
      killPlacements(agentState)
    })
    const info = JSON.parse(readFileSync(join(dir, 'coordinator.json'), 'utf8')) as {
      multiaddrs: string[]
      gateway: string
    }
    const gatewayPort = Number(new URL(info.gateway).port)
    const token = await call(c.api, 'POST', '/v1/join-tokens', {})
    agents.push(
      startAgent(
        agentEnv(
          { coordinators: info.multiaddrs, clusterKeyFile: join(dir, 'cluster.key'), joinToken: token.body.token },
          agentState,
          MACHINE
        ),
        profiling
      )
    )
    const pool = await eventually(
      async () => {
        const hosts = await call(c.api, 'GET', '/v1/hosts')
        return (hosts.body?.items as Array<{ state: string; pool: string }> | undefined)?.find(
          (h) => h.state === 'ready'
        )?.pool
      },
      60_000,
      'the agent to be ready'
    )
    const created = await call(c.api, 'POST', '/v1/workloads', {
      name: ENDPOINT,
      kind: 'endpoint',
      replicas: 1,
      pools: [pool],
      gpus: 1,
      run: { driver: 'process', command: REPLICA_COMMAND }
    })
    if (created.status !== 201) throw new Error(`POST /v1/workloads: ${created.status} ${JSON.stringify(created.body)}`)
    const replica = await eventually(
      async () => {
        const w = await call(c.api, 'GET', `/v1/workloads/${created.body.id}`)
        return (w.body?.placements as Array<{ id: string; state: string; ready: boolean; port: number }>)?.find(
          (x) => x.state === 'running' && x.ready
        )
      },
      60_000,
      'the replica to be ready'
    )
    const port = replica.port
    const targets: Target[] = [
      { name: 'direct', host: '127.0.0.1', port, prefix: '' },
      { name: 'gateway', host: '127.0.0.1', port: gatewayPort, prefix: `/${ENDPOINT}` }
    ]
    // The replica listens a moment after it runs, and the gateway learns of it from events: wait for both.
    for (const t of targets)
      await eventually(
        () =>
          timedCall(t, 'POST', '/echo', BODY).then(
            () => true,
            () => undefined
          ),
        30_000,
        `${t.name} calls to succeed`
      )
    log(`coordinator ${String(c.child.pid)}, one agent, replica on port ${port}; gateway on ${gatewayPort}`)
    const pidIn = (file: string) => Number(readFileSync(file, 'utf8').split('\n')[0])
    const parts: Parts = {
      coordinator: c.child.pid ?? 0,
      agent: agents[0]?.child.pid ?? 0,
      replicaGroup: pidIn(join(agentState, 'placements', replica.id, 'pid')),
      postmaster: pidIn(join(dir, 'pg', 'postgres', 'postmaster.pid'))
    }
    const figures = await measure(o, targets, db.url, parts)
    return {
      bench: 'gateway',
      ...figures,
      machine: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
      node: process.version,
      load_average: load(),
      wall_s: Math.round((performance.now() - started) / 1000)
    }
  } finally {
    client.destroy()
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch((err: Error) => log(err.message))
  }
}
