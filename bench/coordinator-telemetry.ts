// The coordinator's cost of GPU telemetry, on real processes over loopback:
//   coordinator_cpu_pct_200_agents_heartbeat_only  a coordinator process with 200 agents' control
//                                sessions heartbeating once a second (the GpuUsage list, no telemetry)
//   coordinator_cpu_pct_200_agents_telemetry       the same sessions, each heartbeat now carrying a
//                                telemetry delta in which `changing` of the host's 8 GPUs have new
//                                usage values (8: every GPU, every second: busy GPUs sampled at 1 s)
//   metrics_scrape_ms_p50/max    GET /metrics (one series per GPU: 1600 GPUs) during the telemetry
//                                window, scraped every 15 s as Prometheus would
// The sessions are raw control clients (a libp2p node each that says hello with 8-GPU facts and then
// heartbeats; 4 load processes of 50), so what is measured is the coordinator's side only. CPU is %
// of one core over the window (bench/lib/proc-usage.ts); RSS the largest sample. No Redis.
// Usage: npm run bench -- coordinator-telemetry [agents=200] [window=60] [changing=8] [period=1000]
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { sleep } from '../common/daemon/sleep.js'
import { FrameChannel } from '../common/mesh/frames.js'
import { createMeshNode, type MeshNode } from '../common/mesh/node.js'
import { AgentFrame, CONTROL_PROTOCOL, CoordinatorFrame, type Probe } from '../protocol/control.js'
import type { HostFacts } from '../protocol/host-facts.js'
import type { GpuTelemetry, TelemetryDelta } from '../protocol/telemetry.js'
import { cleanEnv } from '../test/helpers/agent.js'
import { eventually as waitFor, factsFor } from '../test/helpers/coordinator.js'
import { withHarness } from './lib/harness.js'
import { measure } from './lib/proc-usage.js'
import { fleetReady, joinTokens, killChildren, readyHosts, startLoopbackCoordinator, stopChild, track } from './mesh.js'
import { percentile, round1 } from './stats.js'

const SELF = fileURLToPath(import.meta.url)
/** Sent to the load processes: heartbeats carry telemetry from now on. */
const TELEMETRY_ON: NodeJS.Signals = 'SIGUSR2'

interface Options {
  agents: number
  window: number
  changing: number
  period: number
}

function options(args: string[]): Options {
  const o: Options = { agents: 200, window: 60, changing: 8, period: 1000 }
  const order: Array<keyof Options> = ['agents', 'window', 'changing', 'period']
  args.forEach((a, i) => {
    const [k, v] = a.includes('=') ? (a.split('=', 2) as [string, string]) : [order[i] as string, a]
    if (!(k in o) || !Number.isFinite(Number(v)) || Number(v) <= 0)
      throw new Error(`bench coordinator-telemetry: bad argument ${a} (${order.join(', ')})`)
    o[k as keyof Options] = Number(v)
  })
  return o
}

function log(line: string): void {
  process.stderr.write(`[coordinator-telemetry ${new Date().toISOString().slice(11, 19)}] ${line}\n`)
}

// ---------------------------------------------------------------- load process

interface LoadConfig {
  coordinator: string
  clusterKeyFile: string
  facts: HostFacts
  periodMs: number
  changing: number
  agents: Array<{ name: string; token: string }>
}

/** A busy GPU's usage at step `step` (values move every step, as power and temperature do). */
function usage(index: number, step: number): NonNullable<GpuTelemetry['usage']> {
  return {
    utilizationPct: (index * 7 + step * 13) % 101,
    memoryUsedMiB: 1000 + ((index * 997 + step * 31) % 70_000),
    temperatureC: 40 + ((index + step) % 40),
    powerW: 100 + ((index * 11 + step * 17) % 500) + 0.25,
    at: new Date().toISOString()
  }
}

function gpuTable(gpus: number, step: number): GpuTelemetry[] {
  return Array.from({ length: gpus }, (_, index) => ({
    index,
    uuid: `GPU-bench-${index}`,
    pciBusId: `00000000:${(0x18 + index).toString(16)}:00.0`,
    health: { state: 'healthy' as const, reasons: [], since: '2026-01-01T00:00:00.000Z' },
    usage: usage(index, step),
    xids: { last: null, counts: {} }
  }))
}

type Channel = FrameChannel<typeof CoordinatorFrame, typeof AgentFrame>

/** One raw agent: a libp2p node of its own that says hello and waits for its welcome. */
async function connect(
  config: LoadConfig,
  clusterKey: Uint8Array,
  agent: { name: string; token: string },
  stopped: AbortSignal
): Promise<Channel> {
  const node = await createMeshNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    clusterKey,
    role: 'agent'
  })
  stopped.addEventListener('abort', () => {
    Promise.resolve(node.stop()).catch(() => {})
  })
  const stream = await node.dialProtocol(multiaddr(config.coordinator), CONTROL_PROTOCOL)
  const channel = new FrameChannel(stream, CoordinatorFrame, AgentFrame)
  await channel.send({
    v: 1,
    type: 'hello',
    name: agent.name,
    agentVersion: 'bench',
    facts: { ...config.facts, hostname: agent.name },
    running: [],
    epoch: 0,
    joinToken: agent.token
  })
  const welcome = await channel.receive(AbortSignal.timeout(120_000))
  if (welcome?.type !== 'welcome') throw new Error(`${agent.name}: no welcome (${JSON.stringify(welcome)})`)
  // Probes of a suspect pool peer are answered as an agent does (a ping over a new connection): on a loaded
  // machine some heartbeats run late, and an unanswered probe would take the late host down. The rest
  // (acks, assignments) is read and dropped.
  void (async () => {
    for (let f = await channel.receive().catch(() => null); f !== null; f = await channel.receive().catch(() => null))
      if (f.type === 'probe') void answerProbe(node, channel, f)
  })()
  return channel
}

async function answerProbe(node: MeshNode, channel: Channel, p: Probe): Promise<void> {
  const started = performance.now()
  let reachable = false
  const addr = p.multiaddrs[0]
  if (addr !== undefined)
    try {
      const target = multiaddr(addr.includes('/p2p/') ? addr : `${addr}/p2p/${p.target}`)
      await node.services.ping.ping(target as never, { signal: AbortSignal.timeout(p.timeoutMs), force: true } as never)
      reachable = true
    } catch {}
  const rttMs = reachable ? performance.now() - started : null
  await channel
    .send({ v: 1, type: 'probe-result', requestId: p.requestId, target: p.target, reachable, rttMs })
    .catch(() => {})
}

/** A heartbeat every period (with a telemetry delta once `telemetry()` says so) until stopped. */
async function heartbeats(
  config: LoadConfig,
  channel: Channel,
  telemetry: () => boolean,
  stopped: AbortSignal
): Promise<void> {
  const gpus = config.facts.gpus.length
  let seq = 0
  let sentTable = false
  // Spread over the period, as independent agents are.
  await sleep(Math.random() * config.periodMs)
  while (!stopped.aborted) {
    const step = seq
    let delta: TelemetryDelta | undefined
    if (telemetry()) {
      if (!sentTable) delta = { full: true, gpus: gpuTable(gpus, step) }
      else
        delta = {
          full: false,
          gpus: Array.from({ length: Math.min(config.changing, gpus) }, (_, i) => {
            const index = (step * config.changing + i) % gpus
            return { index, usage: usage(index, step) }
          })
        }
      sentTable = true
    }
    const legacy = Array.from({ length: gpus }, (_, index) => {
      const u = usage(index, step)
      return { index, utilizationPct: u.utilizationPct, memoryUsedMiB: u.memoryUsedMiB }
    })
    await channel
      .send({ v: 1, type: 'heartbeat', seq: seq++, gpus: legacy, ...(delta === undefined ? {} : { telemetry: delta }) })
      .catch(() => {})
    await sleep(config.periodMs)
  }
}

async function loadMain(configFile: string): Promise<void> {
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as LoadConfig
  const clusterKey = readFileSync(config.clusterKeyFile)
  const stop = new AbortController()
  let telemetry = false
  process.on(TELEMETRY_ON, () => {
    telemetry = true
  })
  const quit = () => {
    stop.abort()
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', quit)
  process.on('SIGINT', quit)
  // One after another, as agents joining a coordinator do over time (200 hellos at once time out on 2 cores).
  for (const a of config.agents) {
    if (stop.signal.aborted) return
    try {
      const channel = await connect(config, clusterKey, a, stop.signal)
      void heartbeats(config, channel, () => telemetry, stop.signal)
    } catch (err) {
      process.stderr.write(`${a.name}: ${(err as Error).message}\n`)
    }
  }
  process.stdout.write(`${config.agents.length} sessions started\n`)
}

// ---------------------------------------------------------------- the bench

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const o = options(args)
  return await withHarness(
    { name: 'coordinator-telemetry', log, onExit: () => killChildren() },
    async ({ dir, cleanup, databaseUrl }) => {
      const c = await startLoopbackCoordinator(dir, await databaseUrl('telemetry'))
      cleanup.push(async () => {
        await stopChild(c.child)
      })
      const facts = await factsFor('h100-8x-nv18-nics')
      const tokens = await joinTokens(c.api, o.agents)
      const perProcess = 50
      const loads: ChildProcess[] = []
      for (let p = 0; p * perProcess < o.agents; p++) {
        const config: LoadConfig = {
          coordinator: c.multiaddrs[0] as string,
          clusterKeyFile: c.clusterKeyFile,
          facts,
          periodMs: o.period,
          changing: o.changing,
          agents: tokens
            .slice(p * perProcess, (p + 1) * perProcess)
            .map((token, i) => ({ name: `gpus-${p}-${i}`, token }))
        }
        const file = join(dir, `load-${p}.json`)
        writeFileSync(file, JSON.stringify(config))
        const fd = openSync(join(dir, `load-${p}.log`), 'a')
        loads.push(track(spawn(process.execPath, [SELF, 'load', file], { env: cleanEnv(), stdio: ['ignore', fd, fd] })))
        closeSync(fd)
      }
      cleanup.push(async () => {
        await Promise.all(loads.map(async (l) => await stopChild(l)))
      })
      await fleetReady(c.api, loads, o.agents, 600_000, `${o.agents} sessions to join`)
      log(`${o.agents} sessions joined; settling`)
      await sleep(5000)
      const idle = await measure(c.pid, o.window)
      log(`heartbeats only: ${idle.cpuPct} % CPU, RSS max ${idle.rssMbMax} MB`)

      for (const l of loads) l.kill(TELEMETRY_ON)
      const gpuSeries = async () =>
        (String((await c.api.call('GET', '/metrics')).body).match(/^DCGM_FI_DEV_GPU_UTIL\{/gm) ?? []).length
      await waitFor(
        async () => ((await gpuSeries()) === o.agents * facts.gpus.length ? true : undefined),
        120_000,
        'every GPU on /metrics'
      )
      await sleep(5000)
      const scrapes: number[] = []
      const scraping = (async () => {
        for (let i = 0; i < Math.floor(o.window / 15); i++) {
          await sleep(15_000)
          const t0 = performance.now()
          await c.api.call('GET', '/metrics', undefined, 30_000)
          scrapes.push(performance.now() - t0)
        }
      })()
      const busy = await measure(c.pid, o.window)
      await scraping
      const after = await readyHosts(c.api)
      log(
        `telemetry (${o.changing} of ${facts.gpus.length} GPUs changing per heartbeat): ${busy.cpuPct} % CPU, RSS max ${busy.rssMbMax} MB; /metrics ${scrapes.map((s) => s.toFixed(0)).join(', ')} ms; ready after ${after}`
      )
      return {
        bench: 'coordinator-telemetry',
        coordinator_cpu_pct_200_agents_heartbeat_only: idle.cpuPct,
        coordinator_cpu_pct_200_agents_telemetry: busy.cpuPct,
        coordinator_rss_mb_200_agents_telemetry: busy.rssMbMax,
        metrics_scrape_ms_p50: round1(percentile(scrapes, 0.5)),
        metrics_scrape_ms_max: round1(Math.max(...scrapes)),
        agents: o.agents,
        gpus: o.agents * facts.gpus.length,
        changing_gpus_per_heartbeat: o.changing,
        heartbeat_ms: o.period,
        ready_after_window: after,
        window_s: o.window
      }
    }
  )
}

// `node dist/bench/coordinator-telemetry.js load <config.json>`: one load process of raw sessions.
if (
  process.argv[1] !== undefined &&
  pathToFileURL(process.argv[1]).href === import.meta.url &&
  process.argv[2] === 'load'
) {
  await loadMain(process.argv[3] as string)
}
