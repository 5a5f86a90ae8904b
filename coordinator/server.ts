// The coordinator's composition root: database (embedded or external),
// migrations, bootstrap token, Redis, admin API, and the leader-only services
// (scheduler, Redis relay, usage statistics). stop() undoes it in reverse.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import { ConfigError } from '../common/config-error.js'
import { group, Started, type Startable } from '../common/daemon/startable.js'
import type { Logger } from '../common/log.js'
import type { Server } from 'node:http'
import { AttachHub } from './attach/route.js'
import { DEFAULT_LIMITS, type GatewayLimits, MeshGateway } from './gateway/forward.js'
import { createGatewayServer } from './gateway/listener.js'
import { ReadyReplicas } from './gateway/replicas.js'
import { MAX_GATEWAY_STREAMS } from '../protocol/gateway.js'
import { buildApp } from './http/app.js'
import { Leadership } from './leader.js'
import { MeshServer } from './mesh/server.js'
import { StaleHosts } from './mesh/stale-hosts.js'
import { createMetrics } from './metrics.js'
import type { LiveTelemetry } from './telemetry/live-gpus.js'
import { Notifier } from './events/notifier.js'
import { createRedis } from './events/redis.js'
import { RedisRelay } from './events/relay.js'
import { LiveGpusPublisher } from './events/live-gpus-publisher.js'
import { UsageRecorder } from './events/usage.js'
import { type Drain, RolloutLoop } from './rollout/loop.js'
import { SchedulerLoop } from './scheduler/loop.js'
import { checkServerVersion, createPool, type Pool } from './store/db.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './store/embedded.js'
import { migrate } from './store/migrate.js'
import { ensureBootstrapToken } from './store/tokens.js'

export interface CoordinatorOptions {
  stateDir: string
  /** host:port for the admin API; port 0 picks a free one. */
  apiListen: string
  databaseUrl?: string
  redisUrl?: string
  adminToken?: string
  leaderRetryMs?: number
  usageIntervalMs?: number
  /** libp2p listen multiaddrs (GPUMESH_LISTEN). */
  listen?: string[]
  /** swarm.key (GPUMESH_CLUSTER_KEY_FILE); unset = <state>/cluster.key, created on first start. */
  clusterKeyFile?: string
  /** Agents' heartbeat period; failure detection follows it. */
  heartbeatMs?: number
  /** How long a host whose agent closed its connection (a restart) is waited for before it may be declared down. */
  agentGraceMs?: number
  /** A host not heard from by any coordinator for this long is down (0 = never; hosts registered without an agent). */
  staleHostSeconds?: number
  /** PEM certificate and key files (--tls-cert/--tls-key, GPUMESH_TLS_CERT/GPUMESH_TLS_KEY): the API (and session attach) is served over HTTPS/wss. Default: none. */
  tls?: { certFile: string; keyFile: string } | null
  /** Serve session attach over plain ws to non-loopback clients (--allow-insecure, GPUMESH_ALLOW_INSECURE=1). */
  allowInsecure?: boolean
  /** The coordinator cannot go on: its embedded PostgreSQL died and could not be restarted. */
  onFatal?: (err: Error) => void
  /** How long a request's headers and body may take to arrive (--request-timeout-ms); default 30 s. */
  requestTimeoutMs?: number
  /** Waits for a replica's calls before scale-down or a rolling update stops it; default: the gateway's drain. */
  drain?: Drain
  /** host:port of the gateway (GPUMESH_GATEWAY_LISTEN); default 127.0.0.1:7480, port 0 picks a free one. */
  gatewayListen?: string
  /** The gateway's per-call limits (GPUMESH_GATEWAY_TIMEOUT_MS, _MAX_BODY_BYTES, _MAX_RESPONSE_BYTES). */
  gatewayLimits?: Partial<GatewayLimits>
}

const isLoopback = (host: string) => /^(127\.|::1$|localhost$)/.test(host)

export interface Coordinator {
  /** Base URL of the admin API. */
  api: string
  /** Base URL of the gateway (calls to endpoints). */
  gatewayUrl: string
  /** forward() and drain() (rolling updates drain a replica's calls before stopping it). */
  gateway: MeshGateway
  pool: Pool
  leadership: Leadership
  scheduler: SchedulerLoop
  mesh: MeshServer
  stop: () => Promise<void>
}

export function parseListen(
  listen: string,
  setting = 'GPUMESH_API_LISTEN',
  example = '127.0.0.1:7470'
): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen)
  const port = Number(m?.[3])
  if (m === null || port > 65535)
    throw new ConfigError(`${setting} must be host:port (e.g. ${example}), not ${JSON.stringify(listen)}`)
  return { host: m[1] ?? (m[2] as string), port }
}

export async function startCoordinator(options: CoordinatorOptions, log: Logger): Promise<Coordinator> {
  const listen = parseListen(options.apiListen)
  const gatewayListen = parseListen(
    options.gatewayListen ?? '127.0.0.1:7480',
    'GPUMESH_GATEWAY_LISTEN',
    '127.0.0.1:7480'
  )
  await mkdir(options.stateDir, { recursive: true, mode: 0o750 })
  const started = new Started(log)
  try {
    let url = options.databaseUrl
    if (url === undefined || url === '') {
      const embedded: EmbeddedDatabase = await startEmbeddedPostgres(
        options.stateDir,
        log,
        options.onFatal === undefined ? {} : { onGiveUp: options.onFatal }
      )
      started.add('embedded PostgreSQL', embedded.stop)
      url = embedded.url
    }
    const pool = createPool(url)
    started.add('database pool', async () => {
      await pool.end()
    })
    const version = await checkServerVersion(pool)
    await migrate(pool, log)
    log.info(
      { postgres: version, embedded: options.databaseUrl === undefined || options.databaseUrl === '' },
      'database ready'
    )
    const bootstrap = await ensureBootstrapToken(pool, options.stateDir, options.adminToken)
    if (bootstrap.file !== null) log.info({ file: bootstrap.file }, 'bootstrap admin token is in this file')

    let redis: Redis | null = null
    if (options.redisUrl !== undefined && options.redisUrl !== '') {
      const r = createRedis(options.redisUrl)
      redis = r
      r.on('error', () => {}) // reported by the relay and /readyz, not per reconnect attempt
      r.connect().catch((err: Error) =>
        log.warn({ err: err.message }, 'Redis not reachable yet; events wait in PostgreSQL')
      )
      started.add('Redis', () => {
        r.disconnect()
      })
    }

    const notifier = await started.start('notifier', new Notifier(url, log))
    let sessions = () => 0
    let mesh: MeshServer | null = null
    // Only hosts whose agents report here now: a table kept for a host that went away would be stale.
    const liveTelemetry: LiveTelemetry = function* () {
      if (mesh === null) return
      for (const hostId of mesh.sessions.keys()) yield [hostId, mesh.liveGpus.gpus(hostId)]
    }
    const metrics = createMetrics(pool, () => sessions(), liveTelemetry)

    mesh = new MeshServer(pool, notifier, log, {
      stateDir: options.stateDir,
      listen: options.listen ?? ['/ip4/0.0.0.0/tcp/7471'],
      ...(options.clusterKeyFile === undefined ? {} : { clusterKeyFile: options.clusterKeyFile }),
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
      ...(options.agentGraceMs === undefined ? {} : { agentGraceMs: options.agentGraceMs })
    })
    await started.start('mesh', mesh)
    sessions = () => mesh?.sessions.size ?? 0

    const scheduler = new SchedulerLoop(pool, notifier, log, metrics)
    // The gateway is built once the API serves; until then there are no calls to drain.
    let gatewayDrain: Drain = async () => {}
    const rollout = new RolloutLoop(pool, notifier, log, {
      drain: options.drain ?? (async (id, ms) => await gatewayDrain(id, ms))
    })
    const stale = new StaleHosts(pool, log, options.staleHostSeconds ?? 60)
    const relay = redis === null ? null : new RedisRelay(pool, redis, notifier, log, metrics)
    const usage =
      redis === null ? null : new UsageRecorder(pool, redis, log, options.usageIntervalMs, undefined, liveTelemetry)
    // Every coordinator, leader or not: only the one holding an agent's session has its GPU tables.
    if (redis !== null)
      await started.start('live GPU usage', new LiveGpusPublisher(redis, liveTelemetry, log, options.usageIntervalMs))
    const leaderServices = group(
      [
        ['scheduler', scheduler],
        ['rollout', rollout],
        ['stale hosts', stale],
        ...(relay === null ? [] : [['Redis relay', relay] as [string, Startable]]),
        ...(usage === null ? [] : [['usage statistics', usage] as [string, Startable]])
      ],
      log
    )
    const leadership = new Leadership(url, log, options.leaderRetryMs)
    leadership.on('elected', () => {
      metrics.leader.set(1)
      leaderServices
        .start()
        .catch((err: Error) => log.error({ err: err.message }, "cannot start the leader's services"))
    })
    leadership.on('deposed', () => {
      metrics.leader.set(0)
      void leaderServices.stop()
    })
    started.add('leader services', leaderServices.stop)
    await started.start('leadership', leadership)

    const tls = options.tls ?? null
    const allowInsecure = options.allowInsecure ?? false
    const https =
      tls === null ? undefined : { cert: await readTlsFile(tls.certFile), key: await readTlsFile(tls.keyFile) }
    if (https === undefined && !isLoopback(listen.host)) {
      log.warn(
        { listen: options.apiListen },
        `the admin API is plain HTTP on a non-loopback address: set --tls-cert and --tls-key (GPUMESH_TLS_CERT, GPUMESH_TLS_KEY); session attach from other machines is refused${allowInsecure ? ' unless --allow-insecure (GPUMESH_ALLOW_INSECURE=1), which is set' : ''}`
      )
    }
    const hub = new AttachHub()
    const attach = {
      hub,
      deps: {
        pool,
        hosts: { peerOf: (hostId: string) => mesh.sessions.get(hostId)?.peerId },
        dial: mesh.dialProtocol.bind(mesh),
        tls: https !== undefined,
        allowInsecure,
        log
      }
    }
    const app = await buildApp({
      pool,
      redis,
      notifier,
      metrics,
      log,
      attach,
      logs: attach.deps,
      gpus: { live: mesh.liveGpus, clearHealth: mesh.clearHealth.bind(mesh) },
      ...(https === undefined ? {} : { https }),
      ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs })
    })
    await app.listen({ host: listen.host, port: listen.port })
    started.add('admin API', async () => {
      await app.close()
    })
    const api = baseUrl(app.server, listen, https !== undefined)

    // The gateway: calls to endpoints, forwarded over the mesh to a ready replica.
    const replicas = await started.start('gateway replica set', new ReadyReplicas(pool, notifier, log))
    const limits = { ...DEFAULT_LIMITS, ...options.gatewayLimits }
    const gateway = new MeshGateway(
      replicas,
      (peerId, protocol, signal) => mesh.dialProtocol(peerId, protocol, signal, MAX_GATEWAY_STREAMS),
      metrics,
      log,
      limits
    )
    const gatewayServer = createGatewayServer(
      { pool, gateway, replicas, metrics, limits, log, secure: https !== undefined },
      https
    )
    await listenOn(gatewayServer, gatewayListen)
    started.add('gateway', async () => {
      gateway.close()
      await closeServer(gatewayServer)
    })
    gatewayDrain = async (id, ms) => await gateway.drain(id, ms)
    const gatewayUrl = baseUrl(gatewayServer, gatewayListen, https !== undefined)

    await writeReady(options.stateDir, { api, gateway: gatewayUrl, peerId: mesh.peerId, multiaddrs: mesh.multiaddrs() })
    log.info({ api, gateway: gatewayUrl, peerId: mesh.peerId }, 'gpumesh-coordinator ready')
    return {
      api,
      gatewayUrl,
      gateway,
      pool,
      leadership,
      scheduler,
      mesh,
      stop: async () => {
        await started.stop()
      }
    }
  } catch (err) {
    await started.stop()
    throw err
  }
}

/** The URL a listening server is reached at (the port it got when 0 was asked for). */
function baseUrl(server: Server, listen: { host: string; port: number }, tls: boolean): string {
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : listen.port
  return `${tls ? 'https' : 'http'}://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`
}

async function listenOn(server: Server, listen: { host: string; port: number }): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new ConfigError(`the gateway cannot listen on ${listen.host}:${listen.port}: the address is in use`)
          : err
      )
    )
    server.listen(listen.port, listen.host, () => resolve())
  })
}

/** Stops listening and ends every connection, streams in flight included (they would hold the stop up). */
async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  server.closeAllConnections()
  await closed
}

async function readTlsFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err) {
    throw new ConfigError(
      `cannot read the TLS file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err }
    )
  }
}

/** <state>/coordinator.json, written atomically once the coordinator serves. */
async function writeReady(stateDir: string, info: Record<string, unknown>): Promise<void> {
  const file = join(stateDir, 'coordinator.json')
  await writeFile(`${file}.tmp`, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o644 })
  await rename(`${file}.tmp`, file)
}
