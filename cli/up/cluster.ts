// A whole cluster in one process on one machine (`gpumesh up`): a
// coordinator with embedded PostgreSQL, an agent for this host and N
// simulated GPU hosts, all on 127.0.0.1 over the real mesh (libp2p, cluster
// key, join tokens). State lives in one folder, so a second `up` finds its
// database, tokens and identities again. stop() ends the workloads' processes
// too: a local cluster leaves nothing running behind it.
import { chmod, mkdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { startAgent, type Agent } from '../../agent/daemon.js'
import type { Logger } from '../../common/log.js'
import { VERSION } from '../../common/version.js'
import type { Host, JoinToken, Pool } from '../../protocol/api.js'
import { ApiClient } from '../client.js'
import { startCoordinator, type Coordinator } from '../../coordinator/server.js'
import { machinesFor } from './machines.js'
import { simulatedFacts } from './simulated.js'
import { sleep } from '../../common/daemon/sleep.js'

export interface LocalClusterOptions {
  stateDir: string
  /** host:port of the admin API. */
  apiListen: string
  /** host:port of the gateway (default 127.0.0.1:7480). */
  gatewayListen?: string
  /** Simulated GPU hosts to add. */
  simulate: number
  /** Their fixture machines, in turn (default: a mix of H100, A100, L40S, GB200...). */
  machines?: string[]
  /** Also run an agent for this machine's own GPUs (or pool cpu). */
  localAgent: boolean
  /** External PostgreSQL instead of the embedded one. */
  databaseUrl?: string
  /** The agents' docker client (default: docker from PATH). */
  docker?: string
  log: Logger
  /** Progress for a person watching: one short line per step. */
  progress: (step: string) => void
}

export interface LocalHost {
  name: string
  machine: string | null
  agent: Agent
}

export interface LocalCluster {
  coordinator: Coordinator
  api: string
  adminToken: string
  hosts: LocalHost[]
  client: ApiClient
  /** Hosts and pools as the coordinator sees them. */
  snapshot: () => Promise<{ hosts: Host[]; pools: Pool[] }>
  stop: () => Promise<void>
}

const JOIN_TIMEOUT_MS = 60_000
const WORKLOAD_STOP_MS = 15_000

export async function startLocalCluster(o: LocalClusterOptions): Promise<LocalCluster> {
  const machines = machinesFor(o.simulate, o.machines)
  const hosts: LocalHost[] = []
  let coordinator: Coordinator | null = null
  const stop = async () => {
    // Workloads first (their agents report them stopped), then agents, then the coordinator and its database.
    await Promise.all(
      hosts.map(async (h) => {
        await stopWorkloads(h.agent)
      })
    )
    await Promise.all(
      hosts.map(async (h) => {
        await h.agent.stop().catch((err: Error) => o.log.warn({ err: err.message, host: h.name }, 'agent stop failed'))
      })
    )
    hosts.length = 0
    await coordinator?.stop()
    coordinator = null
  }
  try {
    await mkdir(o.stateDir, { recursive: true, mode: 0o700 })
    // As root, embedded PostgreSQL runs as the postgres user, who must get through this folder to its own.
    if (process.getuid?.() === 0 && o.databaseUrl === undefined)
      await chmod(o.stateDir, ((await stat(o.stateDir)).mode & 0o777) | 0o711)
    o.progress(
      o.databaseUrl === undefined
        ? `starting the coordinator with embedded PostgreSQL in ${join(o.stateDir, 'coordinator')}`
        : 'starting the coordinator'
    )
    coordinator = await startCoordinator(
      {
        stateDir: join(o.stateDir, 'coordinator'),
        apiListen: o.apiListen,
        ...(o.gatewayListen === undefined ? {} : { gatewayListen: o.gatewayListen }),
        listen: ['/ip4/127.0.0.1/tcp/0'],
        // Simulated hosts live as long as this process: never stale while it runs.
        staleHostSeconds: 0,
        ...(o.databaseUrl === undefined ? {} : { databaseUrl: o.databaseUrl })
      },
      o.log
    )
    const adminToken = (await readFile(join(o.stateDir, 'coordinator', 'admin.token'), 'utf8')).trim()
    const client = new ApiClient({ api: coordinator.api, token: adminToken })
    const info = JSON.parse(await readFile(join(o.stateDir, 'coordinator', 'coordinator.json'), 'utf8')) as {
      multiaddrs: string[]
    }
    const clusterKeyFile = join(o.stateDir, 'coordinator', 'cluster.key')

    const plan: Array<{ name: string; machine: string | null }> = [
      ...(o.localAgent ? [{ name: 'local', machine: null }] : []),
      ...machines.map((machine, i) => ({ name: `sim-${i + 1}-${machine}`, machine }))
    ]
    for (const p of plan) {
      o.progress(
        p.machine === null
          ? 'starting an agent for this machine (detecting its GPUs)'
          : `starting simulated host ${p.name}`
      )
      // A host that joined before (same state folder) needs no token: its peer id is its credential.
      const token = await client.request<JoinToken>('POST', '/v1/join-tokens', { ttlSeconds: 600 })
      const agent = await startAgent({
        stateDir: join(o.stateDir, 'agents', p.name),
        listen: ['/ip4/127.0.0.1/tcp/0'],
        coordinators: info.multiaddrs,
        clusterKeyFile,
        joinToken: token.token,
        name: p.name,
        detect: { agentVersion: VERSION, timeoutMs: 10_000 },
        ...(p.machine === null ? {} : { facts: await simulatedFacts(p.machine, p.name, VERSION) }),
        mdns: false,
        stopGraceMs: 5000,
        ...(o.docker === undefined ? {} : { docker: o.docker }),
        log: o.log.child({ host: p.name })
      })
      hosts.push({ name: p.name, machine: p.machine, agent })
    }

    const snapshot = async () => ({
      hosts: (await client.get<{ items: Host[] }>('/v1/hosts?limit=500')).items,
      pools: (await client.get<{ items: Pool[] }>('/v1/pools?limit=500')).items
    })
    o.progress(`waiting for ${hosts.length} host${hosts.length === 1 ? '' : 's'} to join`)
    const deadline = Date.now() + JOIN_TIMEOUT_MS
    for (;;) {
      const { hosts: seen } = await snapshot()
      const ready = seen.filter((h) => h.state === 'ready' && hosts.some((l) => l.name === h.name))
      if (ready.length === hosts.length) break
      if (Date.now() > deadline)
        throw new Error(
          `only ${ready.length} of ${hosts.length} hosts joined within ${JOIN_TIMEOUT_MS / 1000} s; see the log`
        )
      await sleep(200)
    }
    return { coordinator, api: coordinator.api, adminToken, hosts, client, snapshot, stop }
  } catch (err) {
    await stop().catch(() => {})
    throw err
  }
}

/** Stops every placement the agent runs and waits (bounded) until they are gone. */
async function stopWorkloads(agent: Agent): Promise<void> {
  const live = () => agent.runtime.list().filter((p) => p.state === 'starting' || p.state === 'running')
  await Promise.all(
    live().map(async (p) => {
      await agent.runtime.stop(p.placementId, 'the local cluster is stopping').catch(() => {})
    })
  )
  const deadline = Date.now() + WORKLOAD_STOP_MS
  while (live().length > 0 && Date.now() < deadline) await sleep(100)
}
