// Scheduler figures on a real (embedded) PostgreSQL:
//   decisions_per_s            scheduleAll in memory over the loaded fleet
//   persisted_placements_per_s leader passes placing a pending backlog, with
//                              placements, GPU allocations and events committed
//   post_to_placed_p50/p99_ms  POST /v1/workloads at a steady rate -> the
//                              workload.placed event, through a running coordinator
//   gpu_choice_72_ms           one 40-of-57 GPU choice on a 72-GPU host (mean of 20)
//   leader_takeover_p50/max_ms two coordinator processes on one database: kill -9 the
//                              leader -> the other reports gpumesh_leader 1 (3 rounds,
//                              election retry 200 ms as in the tests)
// Usage: npm run bench -- scheduler [hosts=10000] [workloads=50000] [rate=100] [seconds=20]
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger } from '../common/log.js'
import { Notifier } from '../coordinator/events/notifier.js'
import { createMetrics } from '../coordinator/metrics.js'
import { SnapshotCache } from '../coordinator/scheduler/cache.js'
import { SchedulerLoop } from '../coordinator/scheduler/loop.js'
import { chooseGpus } from '../coordinator/scheduler/gpu-choice.js'
import { scheduleAll } from '../coordinator/scheduler/place.js'
import type { PoolKind } from '../coordinator/scheduler/types.js'
import { createPool, withDatabase, type Pool } from '../coordinator/store/db.js'
import { startEmbeddedPostgres } from '../coordinator/store/embedded.js'
import { migrate } from '../coordinator/store/migrate.js'
import { snapshotSource } from '../coordinator/store/snapshot.js'
import type { HostFacts } from '../protocol/host-facts.js'
import { SseParser } from '../protocol/sse.js'
import { factsFor } from '../test/helpers/coordinator.js'
import { ROOT } from '../test/helpers/fixtures.js'
import { freePort } from '../test/helpers/redis.js'
import { buildWorkloads, host72, prng, type FleetPool } from '../test/helpers/fleet.js'
import { percentile, round1 } from './stats.js'

/** Real fixture machines and their share of the fleet, with the pool kind each pool gets. */
const MIX: Array<{ machine: string; share: number; kind: PoolKind }> = [
  { machine: 'h100-8x-nv18-nics', share: 0.35, kind: 'inference' },
  { machine: 'a100-8x-nv12', share: 0.2, kind: 'training' },
  { machine: 'b200-8x', share: 0.15, kind: 'training' },
  { machine: 'h200-1x', share: 0.15, kind: 'static' },
  { machine: 'gb200-4x', share: 0.1, kind: 'inference' },
  { machine: 'l40s-1x', share: 0.05, kind: 'static' }
]

const silent = createLogger('bench', { level: 'silent' })

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const hostCount = Number(args[0] ?? 10_000)
  const workloadCount = Number(args[1] ?? 50_000)
  const rate = Number(args[2] ?? 100)
  const seconds = Number(args[3] ?? 20)
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-sched-'))
  const db = await startEmbeddedPostgres(dir, silent)
  const pool = createPool(db.url)
  try {
    await migrate(pool)
    const pools = await loadFleet(pool, hostCount)
    const stream = buildWorkloads(workloadCount, 7, pools)

    // In memory: the leader's picture of this fleet, as loaded from PostgreSQL.
    const cache = new SnapshotCache(snapshotSource(pool))
    await cache.refresh()
    const snapshot = cache.snapshot()
    const started = performance.now()
    const decisions = scheduleAll(stream, snapshot)
    const decideMs = performance.now() - started
    log(
      `in memory: ${workloadCount} decisions in ${decideMs.toFixed(0)} ms (${decisions.filter((d) => d.reason === null).length} fully placed)`
    )

    // Persisted: the same stream as pending workloads, placed by leader passes.
    await insertPending(
      pool,
      stream.map((w) => w.spec)
    )
    const notifier = new Notifier(db.url, silent)
    const loop = new SchedulerLoop(pool, notifier, silent, createMetrics(pool))
    const persistStarted = performance.now()
    while (await loop.pass()) {
      /* until a pass places nothing more */
    }
    const persistMs = performance.now() - persistStarted
    await notifier.stop()
    const { rows } = await pool.query<{ placements: number; events: number }>(
      "select (select count(*) from placements)::int as placements, (select count(*) from events where type = 'placement.created')::int as events"
    )
    const placements = rows[0]?.placements ?? 0
    log(`persisted: ${placements} placements (${rows[0]?.events ?? 0} placement events) in ${persistMs.toFixed(0)} ms`)

    // Latency: free the fleet, then POST at `rate` per second to a live coordinator.
    await pool.query(
      "update gpu_allocations set active = false, released_at = now() where active; update placements set state = 'stopped' where state = 'assigned'; update workloads set state = 'deleted' where state <> 'deleted'"
    )
    // Measure a steady state, not autovacuum catching up with the bulk phases above.
    await pool.query('vacuum analyze')
    await pool.query('checkpoint')
    const latencies = await postToPlaced(pool, db.url, dir, pools, rate, seconds)
    const pct = (p: number) => round1(percentile(latencies, p))
    const choice = gpuChoiceMs()
    await pool.query('create database takeover')
    const takeovers = await leaderTakeovers(withDatabase(db.url, 'takeover'), dir, 3)
    return {
      bench: 'scheduler',
      hosts: hostCount,
      workloads: workloadCount,
      decisions_per_s: Math.round(workloadCount / (decideMs / 1000)),
      persisted_placements_per_s: Math.round(placements / (persistMs / 1000)),
      post_to_placed_p50_ms: pct(0.5),
      post_to_placed_p99_ms: pct(0.99),
      post_rate_per_s: rate,
      gpu_choice_72_ms: choice,
      leader_takeover_p50_ms: round1(percentile(takeovers, 0.5)),
      leader_takeover_max_ms: round1(Math.max(...takeovers)),
      posted: latencies.length,
      cpu: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
      node: process.version
    }
  } finally {
    await pool.end()
    await db.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Mean ms of one 40-of-57 choice on a 72-GPU host, after a warm-up. */
function gpuChoiceMs(): number {
  const big = host72()
  for (let i = 0; i < 3; i++) chooseGpus(big, 40)
  const started = performance.now()
  for (let i = 0; i < 20; i++) chooseGpus(big, 40)
  const ms = round1((performance.now() - started) / 20)
  log(`GPU choice: 40 of 57 on a 72-GPU host in ${ms} ms`)
  return ms
}

/** A coordinator process on `url` with its API on `port`; resolves once it answers. */
async function coordinatorProcess(url: string, stateDir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'dist/coordinator/main.js')], {
    env: {
      ...process.env,
      DATABASE_URL: url,
      GPUMESH_STATE_DIR: stateDir,
      GPUMESH_API_LISTEN: `127.0.0.1:${port}`,
      GPUMESH_ADMIN_TOKEN: 'gmt_bench-token-0123456789',
      GPUMESH_LEADER_RETRY_MS: '200',
      GPUMESH_LOG_LEVEL: 'warn',
      GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
      GPUMESH_STALE_HOST_SECONDS: '0'
    },
    stdio: ['ignore', 2, 2]
  })
  await untilMetrics(child, port, /^gpumesh_leader [01]$/m)
  return child
}

async function metricsOf(port: number): Promise<string> {
  return await fetch(`http://127.0.0.1:${port}/metrics`)
    .then(async (r) => await r.text())
    .catch(() => '')
}

/** Polls the process's /metrics until `re` matches (polled every 20 ms: it is the measured event). */
async function untilMetrics(child: ChildProcess, port: number, re: RegExp): Promise<void> {
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`a coordinator exited ${child.exitCode}`)
    if (re.test(await metricsOf(port))) return
    if (i > 3000) throw new Error(`no ${String(re)} on /metrics of port ${port}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Which of the processes on `ports` leads (waits until one does). */
async function leaderOf(ports: readonly number[]): Promise<number> {
  for (let i = 0; i < 3000; i++) {
    for (const [n, port] of ports.entries()) if (/^gpumesh_leader 1$/m.test(await metricsOf(port))) return n
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('no coordinator leads')
}

/** Kill -9 the leader of two coordinators `rounds` times; ms until the other one leads, each time. */
async function leaderTakeovers(url: string, dir: string, rounds: number): Promise<number[]> {
  const ports = [await freePort(), await freePort()] as const
  const procs: ChildProcess[] = []
  const out: number[] = []
  try {
    for (const [i, port] of ports.entries()) procs[i] = await coordinatorProcess(url, join(dir, `takeover-${i}`), port)
    for (let r = 0; r < rounds; r++) {
      const leading = await leaderOf(ports)
      const other = 1 - leading
      const exited = new Promise((resolve) => (procs[leading] as ChildProcess).once('exit', resolve))
      const killedAt = performance.now()
      ;(procs[leading] as ChildProcess).kill('SIGKILL')
      await untilMetrics(procs[other] as ChildProcess, ports[other] as number, /^gpumesh_leader 1$/m)
      out.push(performance.now() - killedAt)
      await exited
      procs[leading] = await coordinatorProcess(url, join(dir, `takeover-${leading}`), ports[leading] as number)
    }
  } finally {
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return
        const exited = new Promise((resolve) => p.once('exit', resolve))
        p.kill('SIGTERM')
        await exited
      })
    )
  }
  log(`leader takeover after kill -9: ${out.map((ms) => ms.toFixed(0)).join(', ')} ms`)
  return out
}

function log(line: string): void {
  process.stderr.write(`${line}\n`)
}

/** Registers `n` hosts with real fixture facts (bulk SQL: this is setup, not the measured path). */
async function loadFleet(pool: Pool, n: number): Promise<FleetPool[]> {
  const random = prng(3)
  const machines = await Promise.all(MIX.map(async (m) => ({ ...m, facts: await factsFor(m.machine) })))
  const pools: FleetPool[] = machines.map((m) => ({
    key: m.facts.pool.key,
    kind: m.kind,
    gpusPerHost: m.facts.gpus.length,
    hosts: 0
  }))
  for (const p of pools) await pool.query('insert into pools (key, kind) values ($1, $2)', [p.key, p.kind])
  const rows: Array<{ peer: string; name: string; pool: string; gpus: number; facts: string }> = []
  for (let i = 0; i < n; i++) {
    let pick = random()
    let m = 0
    while (m < machines.length - 1 && pick >= (machines[m]?.share ?? 0)) {
      pick -= machines[m]?.share ?? 0
      m++
    }
    const machine = machines[m] as (typeof machines)[number]
    ;(pools[m] as FleetPool).hosts++
    const facts: HostFacts = { ...machine.facts, hostname: `node-${i}` }
    rows.push({
      peer: `12D3KooWbench${i}`,
      name: `node-${i}`,
      pool: facts.pool.key,
      gpus: facts.gpus.length,
      facts: JSON.stringify(facts)
    })
  }
  for (let i = 0; i < rows.length; i += 1000) {
    const chunk = rows.slice(i, i + 1000)
    await pool.query(
      'insert into hosts (peer_id, name, pool_key, gpu_count, facts) select * from unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[])',
      [
        chunk.map((r) => r.peer),
        chunk.map((r) => r.name),
        chunk.map((r) => r.pool),
        chunk.map((r) => r.gpus),
        chunk.map((r) => r.facts)
      ]
    )
  }
  log(`fleet: ${n} hosts in ${pools.map((p) => `${p.key} (${p.kind}) x${p.hosts}`).join(', ')}`)
  return pools
}

async function insertPending(pool: Pool, specs: Array<{ name: string; kind: string }>): Promise<void> {
  for (let i = 0; i < specs.length; i += 5000) {
    const chunk = specs.slice(i, i + 5000)
    await pool.query(
      'insert into workloads (name, kind, spec) select * from unnest($1::text[], $2::text[], $3::jsonb[])',
      [chunk.map((s) => s.name), chunk.map((s) => s.kind), chunk.map((s) => JSON.stringify(s))]
    )
  }
}

/** POSTs small sessions at `rate`/s for `seconds` to a coordinator process; returns each one's ms from POST to its workload.placed event. */
async function postToPlaced(
  pool: Pool,
  url: string,
  dir: string,
  pools: FleetPool[],
  rate: number,
  seconds: number
): Promise<number[]> {
  const token = 'gmt_bench-token-0123456789'
  const port = await freePort()
  const api = `http://127.0.0.1:${port}`
  // Its own process, as in production: the load generator must not share its event loop.
  // Its logs (warnings and worse) go to our stderr; stdout carries only the figures.
  const child = spawn(process.execPath, [join(ROOT, 'dist/coordinator/main.js')], {
    env: {
      ...process.env,
      DATABASE_URL: url,
      GPUMESH_STATE_DIR: join(dir, 'coord'),
      GPUMESH_API_LISTEN: `127.0.0.1:${port}`,
      GPUMESH_ADMIN_TOKEN: token,
      GPUMESH_LEADER_RETRY_MS: '100',
      GPUMESH_LOG_LEVEL: 'warn',
      GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
      GPUMESH_STALE_HOST_SECONDS: '0'
    },
    stdio: ['ignore', 2, 2]
  })
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
  const posted = new Map<string, number>()
  const placed = new Map<string, number>()
  const failures = new Map<string, number>()
  const responded: number[] = []
  const abort = new AbortController()
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`the coordinator exited ${child.exitCode}`)
      const metrics = await fetch(`${api}/metrics`)
        .then(async (r) => await r.text())
        .catch(() => '')
      if (/^gpumesh_leader 1$/m.test(metrics)) break
      if (i > 600) throw new Error('the coordinator did not become leader')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const events = await fetch(`${api}/v1/events`, { headers, signal: abort.signal })
    const reading = (async () => {
      const decoder = new TextDecoder()
      const parser = new SseParser()
      for await (const chunk of events.body as unknown as AsyncIterable<Uint8Array>) {
        for (const m of parser.push(decoder.decode(chunk, { stream: true }))) {
          if (m.event === 'workload.placed')
            placed.set((JSON.parse(m.data) as { subject: { id: string } }).subject.id, performance.now())
        }
      }
    })().catch(() => {})
    // Sessions go to the serving pools in proportion to their GPUs, so none runs out.
    const servable = pools
      .filter((p) => p.kind !== 'training')
      .flatMap((p) => Array<FleetPool>(Math.max(1, Math.round((p.hosts * p.gpusPerHost) / 500))).fill(p))
    /** POSTs `count` sessions at `rate`/s; `measure` ones count in the figures. */
    const steady = async (prefix: string, count: number, measure: boolean) => {
      const startedAt = performance.now()
      const requests: Array<Promise<void>> = []
      for (let i = 0; i < count; i++) {
        const wait = startedAt + (i * 1000) / rate - performance.now()
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
        const pool = servable[i % servable.length] as FleetPool
        const sent = performance.now()
        requests.push(
          fetch(`${api}/v1/workloads`, {
            method: 'POST',
            headers,
            body: JSON.stringify({
              name: `${prefix}-${i}`,
              kind: 'session',
              pool: pool.key,
              gpus: 1,
              run: { driver: 'process', command: ['x'] }
            })
          }).then(async (r) => {
            const body = (await r.json()) as { id?: string; code?: string; detail?: string }
            if (!measure) return
            responded.push(performance.now() - sent)
            if (r.status === 201 && body.id !== undefined) posted.set(body.id, sent)
            else
              failures.set(
                `${r.status} ${body.code ?? ''} ${body.detail ?? ''}`,
                (failures.get(`${r.status} ${body.code ?? ''} ${body.detail ?? ''}`) ?? 0) + 1
              )
          })
        )
      }
      await Promise.all(requests)
    }
    // Warm up first (connections, JIT, caches): a cold start is not the steady state.
    await steady('warm', rate * 3, false)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    await steady('lat', rate * seconds, true)
    const deadline = performance.now() + 10_000
    while ([...posted.keys()].some((id) => !placed.has(id)) && performance.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50))
    abort.abort()
    await reading
    const stuck = await pool.query<{ reason: string | null; n: number }>(
      "select reason, count(*)::int as n from workloads where name like 'lat-%' and state = 'pending' group by reason"
    )
    for (const r of stuck.rows) log(`  still pending x${r.n}: ${r.reason ?? ''}`)
    log(`latency: ${posted.size} posted, ${[...posted.keys()].filter((id) => placed.has(id)).length} placed`)
    for (const [why, n] of failures) log(`  refused x${n}: ${why}`)
    responded.sort((a, b) => a - b)
    log(
      `POST response p50 ${responded[Math.floor(responded.length / 2)]?.toFixed(1) ?? '-'} ms, p99 ${responded[Math.floor(responded.length * 0.99)]?.toFixed(1) ?? '-'} ms`
    )
    return [...posted].flatMap(([id, sent]) => (placed.has(id) ? [(placed.get(id) as number) - sent] : []))
  } finally {
    abort.abort()
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
}
