#!/usr/bin/env node
// gpumesh-coordinator: runs the control plane in the foreground until
// SIGTERM/SIGINT, which stop it cleanly (embedded PostgreSQL included).
import { Command, InvalidArgumentError, Option } from 'commander'
import { EXIT_CONFIG, multiaddrs, nonNegativeInt, positiveInt } from '../common/cli.js'
import { ConfigError, exitCodeFor } from '../common/config-error.js'
import { daemonShutdown } from '../common/daemon/shutdown.js'
import { createLogger, loggerSettings } from '../common/log.js'
import { systemdNotifier } from '../common/systemd.js'
import { VERSION } from '../common/version.js'
import { DEFAULT_LIMITS } from './gateway/forward.js'
import { parseListen, startCoordinator } from './server.js'
import { watchdogCheck } from './watchdog.js'

function listenAddress(value: string): string {
  try {
    parseListen(value)
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message)
  }
  return value
}

interface Flags {
  stateDir: string
  apiListen: string
  listen: string[]
  clusterKeyFile?: string
  databaseUrl?: string
  redisUrl?: string
  adminToken?: string
  leaderRetry: number
  heartbeatMs: number
  agentGraceSeconds: number
  staleHostSeconds: number
  tlsCert?: string
  tlsKey?: string
  allowInsecure: boolean
  requestTimeoutMs: number
  gatewayListen: string
  gatewayTimeoutMs: number
  gatewayMaxBodyBytes: number
  gatewayMaxResponseBytes: number
}

/** GPUMESH_ALLOW_INSECURE=1 allows (as it always has; other values do not); the flag alone allows too. */
const onOff = (value: string): boolean => value === '1' || value === 'true'

const program = new Command('gpumesh-coordinator')
  .description('gpumesh coordinator: PostgreSQL state, GPU scheduler, Redis events, admin API')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG)
  })

program
  .command('run', { isDefault: true })
  .description('run the coordinator in the foreground until SIGTERM/SIGINT')
  .addOption(
    new Option('--state-dir <dir>', 'state folder (embedded PostgreSQL, admin token, coordinator.json)')
      .env('GPUMESH_STATE_DIR')
      .default('/var/lib/gpumesh/coordinator')
  )
  .addOption(
    new Option('--api-listen <host:port>', 'admin HTTP address')
      .env('GPUMESH_API_LISTEN')
      .default('127.0.0.1:7470')
      .argParser(listenAddress)
  )
  .addOption(
    new Option('--listen <multiaddrs>', 'libp2p listen addresses, comma-separated')
      .env('GPUMESH_LISTEN')
      .argParser(multiaddrs)
      .default(['/ip4/0.0.0.0/tcp/7471'], '/ip4/0.0.0.0/tcp/7471')
  )
  .addOption(
    new Option(
      '--cluster-key-file <path>',
      'private-network key (swarm.key); unset = <state>/cluster.key, created on first start'
    ).env('GPUMESH_CLUSTER_KEY_FILE')
  )
  .addOption(new Option('--database-url <url>', 'external PostgreSQL 16+; unset = embedded').env('DATABASE_URL'))
  .addOption(new Option('--redis-url <url>', 'Redis for events and usage statistics; unset = none').env('REDIS_URL'))
  .addOption(
    new Option('--admin-token <token>', 'bootstrap admin token; unset = generated into <state>/admin.token').env(
      'GPUMESH_ADMIN_TOKEN'
    )
  )
  .addOption(
    new Option('--leader-retry <ms>', 'how often a follower tries to take the scheduler lock')
      .env('GPUMESH_LEADER_RETRY_MS')
      .argParser(positiveInt)
      .default(1000)
  )
  .addOption(
    new Option('--heartbeat-ms <ms>', "agents' heartbeat period; failure detection follows it")
      .env('GPUMESH_HEARTBEAT_MS')
      .argParser(positiveInt)
      .default(1000)
  )
  .addOption(
    new Option(
      '--agent-grace-seconds <s>',
      "how long a host whose agent's connection closed (a restart: the host answered) keeps its work while the agent is waited for"
    )
      .env('GPUMESH_AGENT_GRACE_SECONDS')
      .argParser(nonNegativeInt)
      .default(30)
  )
  .addOption(
    new Option('--stale-host-seconds <s>', 'a host no coordinator has heard from for this long is down (0 = never)')
      .env('GPUMESH_STALE_HOST_SECONDS')
      .argParser(nonNegativeInt)
      .default(60)
  )
  .addOption(
    new Option(
      '--tls-cert <file>',
      'PEM certificate: serve the API and session attach over HTTPS/wss (with --tls-key)'
    ).env('GPUMESH_TLS_CERT')
  )
  .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('GPUMESH_TLS_KEY'))
  .addOption(
    new Option('--allow-insecure [on]', 'serve session attach over plain ws to other machines (without TLS)')
      .env('GPUMESH_ALLOW_INSECURE')
      .argParser(onOff)
      .default(false)
  )
  .addOption(
    new Option('--request-timeout-ms <ms>', "how long a request's headers and body may take to arrive")
      .env('GPUMESH_REQUEST_TIMEOUT_MS')
      .argParser(positiveInt)
      .default(30_000)
  )
  .addOption(
    new Option('--gateway-listen <host:port>', 'gateway address: calls to endpoints (/<endpoint>/<path>)')
      .env('GPUMESH_GATEWAY_LISTEN')
      .default('127.0.0.1:7480')
      .argParser(listenAddress)
  )
  .addOption(
    new Option('--gateway-timeout-ms <ms>', 'a gateway call with no byte either way for this long ends (504)')
      .env('GPUMESH_GATEWAY_TIMEOUT_MS')
      .argParser(positiveInt)
      .default(DEFAULT_LIMITS.timeoutMs)
  )
  .addOption(
    new Option('--gateway-max-body-bytes <n>', 'largest request body through the gateway (413 over it)')
      .env('GPUMESH_GATEWAY_MAX_BODY_BYTES')
      .argParser(positiveInt)
      .default(DEFAULT_LIMITS.maxBodyBytes)
  )
  .addOption(
    new Option('--gateway-max-response-bytes <n>', 'largest response body through the gateway (cut over it)')
      .env('GPUMESH_GATEWAY_MAX_RESPONSE_BYTES')
      .argParser(positiveInt)
      .default(DEFAULT_LIMITS.maxResponseBytes)
  )
  .action(async (o: Flags) => {
    const log = createLogger('gpumesh-coordinator', loggerSettings(process.env))
    log.info({ version: VERSION, stateDir: o.stateDir }, 'gpumesh-coordinator starting')
    let coordinator
    let onFatal: (err: Error) => void = () => {}
    const fatal = new Promise<Error>((resolve) => {
      onFatal = resolve
    })
    try {
      const cert = o.tlsCert ?? ''
      const key = o.tlsKey ?? ''
      if ((cert === '') !== (key === ''))
        throw new ConfigError('set both --tls-cert and --tls-key (GPUMESH_TLS_CERT and GPUMESH_TLS_KEY), or neither')
      coordinator = await startCoordinator(
        {
          stateDir: o.stateDir,
          apiListen: o.apiListen,
          listen: o.listen,
          leaderRetryMs: o.leaderRetry,
          heartbeatMs: o.heartbeatMs,
          agentGraceMs: o.agentGraceSeconds * 1000,
          staleHostSeconds: o.staleHostSeconds,
          tls: cert === '' ? null : { certFile: cert, keyFile: key },
          allowInsecure: o.allowInsecure === true,
          onFatal,
          requestTimeoutMs: o.requestTimeoutMs,
          gatewayListen: o.gatewayListen,
          gatewayLimits: {
            timeoutMs: o.gatewayTimeoutMs,
            maxBodyBytes: o.gatewayMaxBodyBytes,
            maxResponseBytes: o.gatewayMaxResponseBytes
          },
          ...(o.clusterKeyFile === undefined ? {} : { clusterKeyFile: o.clusterKeyFile }),
          ...(o.databaseUrl === undefined ? {} : { databaseUrl: o.databaseUrl }),
          ...(o.redisUrl === undefined ? {} : { redisUrl: o.redisUrl }),
          ...(o.adminToken === undefined ? {} : { adminToken: o.adminToken })
        },
        log
      )
    } catch (err) {
      log.fatal({ err: (err as Error).message, code: (err as { code?: string }).code }, 'cannot start')
      process.exitCode = exitCodeFor(err)
      return
    }
    const running = coordinator
    const systemd = systemdNotifier(process.env)
    const status = `API on ${running.api}`
    systemd.ready(status)
    systemd.watchdog(watchdogCheck(running, systemd, status))
    // A database lost for good: stop what is left and exit 1, for systemd (Restart=on-failure) to start afresh.
    const lost = fatal.then(async () => {
      systemd.stopping()
      process.exitCode = 1
      await running.stop()
    })
    await Promise.race([daemonShutdown(log, systemd, running.stop), lost])
  })

await program.parseAsync(process.argv)
