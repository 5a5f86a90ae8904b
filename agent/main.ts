#!/usr/bin/env node
// gpumesh-agent: `detect` prints this host's facts; `run` (the default) is
// the daemon. Every flag has a GPUMESH_* environment variable.
import { Command, Option } from 'commander'
import { EXIT_CONFIG, EXIT_SOFTWARE, multiaddrs, positiveInt } from '../common/cli.js'
import { exitCodeFor } from '../common/config-error.js'
import { daemonShutdown } from '../common/daemon/shutdown.js'
import { peerAddresses } from '../common/mesh/peer-address.js'
import { HostFacts } from '../protocol/host-facts.js'
import { schemaErrors } from '../protocol/validate.js'
import { VERSION } from '../common/version.js'
import { detect, type DetectOptions } from './detect/detect.js'
import { poolLabelOption } from './detect/pool.js'

interface DetectFlags {
  nvidiaSmi?: string
  smiTimeout: number
  poolLabel?: string
  json?: boolean
}

const detectOptions = (cmd: Command) =>
  cmd
    .addOption(new Option('--nvidia-smi <path>', 'nvidia-smi to run (default: from PATH)').env('GPUMESH_NVIDIA_SMI'))
    .addOption(
      new Option('--smi-timeout <ms>', 'deadline for each nvidia-smi call')
        .env('GPUMESH_NVIDIA_SMI_TIMEOUT_MS')
        .argParser(positiveInt)
        .default(10_000)
    )
    .addOption(
      new Option('--pool-label <label>', 'operator label appended to the pool key (at most 63 characters)')
        .env('GPUMESH_POOL_LABEL')
        .argParser(poolLabelOption)
    )

const toDetectOptions = (o: DetectFlags): DetectOptions => ({
  env: process.env,
  agentVersion: VERSION,
  timeoutMs: o.smiTimeout,
  ...(o.nvidiaSmi === undefined ? {} : { nvidiaSmi: o.nvidiaSmi }),
  ...(o.poolLabel === undefined ? {} : { poolLabel: o.poolLabel })
})

const program = new Command('gpumesh-agent')
  .description('gpumesh host agent: detects GPUs, joins the mesh, runs placements')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG)
  })

detectOptions(program.command('detect'))
  .description(
    "print this host's facts (GPUs, topology, NICs, disks, pool key, warnings) and exit; exits 0 even without a GPU driver"
  )
  .option('--json', 'print the HostFacts document instead of the summary')
  .action(async (o: DetectFlags) => {
    const facts = await detect(toDetectOptions(o))
    const errors = schemaErrors(HostFacts, facts)
    if (errors.length > 0) {
      process.stderr.write(
        `gpumesh-agent: detected facts do not match the HostFacts schema (a bug):\n  ${errors.join('\n  ')}\n`
      )
      process.exitCode = EXIT_SOFTWARE
      return
    }
    // Loaded only when used: `detect` is short-lived and its memory is a budget.
    const { renderFacts } = o.json === true ? { renderFacts: null } : await import('../common/render-facts.js')
    process.stdout.write(renderFacts === null ? `${JSON.stringify(facts, null, 2)}\n` : renderFacts(facts))
  })

interface RunFlags extends DetectFlags {
  stateDir: string
  listen: string[]
  coordinator?: string[]
  clusterKeyFile?: string
  joinToken?: string
  nodeName?: string
  mdns: boolean
  detectInterval: number
  docker?: string
  placementLogMaxBytes?: number
  kmsg?: string
  telemetryIntervalMs?: number
  healthPolicy?: string
}

detectOptions(program.command('run', { isDefault: true }))
  .description('run the agent daemon in the foreground until SIGTERM/SIGINT: join the mesh, enroll, run placements')
  .addOption(
    new Option('--state-dir <dir>', 'state folder: peer key, enrollment, placements and their logs')
      .env('GPUMESH_STATE_DIR')
      .default('/var/lib/gpumesh/agent')
  )
  .addOption(
    new Option('--listen <multiaddrs>', 'libp2p listen addresses, comma-separated')
      .env('GPUMESH_LISTEN')
      .argParser(multiaddrs)
      .default(['/ip4/0.0.0.0/tcp/7472'], '/ip4/0.0.0.0/tcp/7472')
  )
  .addOption(
    new Option('--coordinator <multiaddrs>', 'coordinator multiaddr(s) ending in /p2p/<peer id>')
      .env('GPUMESH_COORDINATOR')
      .argParser(peerAddresses)
  )
  .addOption(
    new Option('--cluster-key-file <path>', "the cluster's private-network key (swarm.key)").env(
      'GPUMESH_CLUSTER_KEY_FILE'
    )
  )
  .addOption(
    new Option(
      '--join-token <token>',
      'enrollment token, used on the first start only (one token may enroll a fleet: see --uses)'
    ).env('GPUMESH_JOIN_TOKEN')
  )
  .addOption(
    new Option('--node-name <name>', 'name the host registers under (default: hostname)').env('GPUMESH_NODE_NAME')
  )
  .addOption(new Option('--no-mdns', 'do not discover peers by multicast DNS').env('GPUMESH_NO_MDNS'))
  .addOption(
    new Option('--detect-interval <seconds>', 're-detect period')
      .env('GPUMESH_DETECT_INTERVAL')
      .argParser(positiveInt)
      .default(60)
  )
  .addOption(
    new Option('--docker <path>', 'docker client for placements with driver docker (default: docker from PATH)').env(
      'GPUMESH_DOCKER'
    )
  )
  .addOption(
    new Option(
      '--placement-log-max-bytes <bytes>',
      "where a placement's stdout.log and stderr.log rotate (one previous file kept)"
    )
      .env('GPUMESH_PLACEMENT_LOG_MAX_BYTES')
      .argParser(positiveInt)
  )
  .addOption(
    new Option('--kmsg <path>', 'kernel messages to follow for GPU XIDs (a regular file is followed like tail -f)')
      .env('GPUMESH_KMSG')
      .default('/dev/kmsg')
  )
  .addOption(
    new Option('--telemetry-interval-ms <ms>', 'GPU sampling period of the nvidia-smi loop')
      .env('GPUMESH_TELEMETRY_INTERVAL_MS')
      .argParser(positiveInt)
      .default(5000)
  )
  .addOption(
    new Option('--health-policy <file>', 'GPU health policy (JSON) laid over the defaults; see docs/health.md').env(
      'GPUMESH_HEALTH_POLICY'
    )
  )
  .action(async (o: RunFlags) => {
    const { createLogger, loggerSettings } = await import('../common/log.js')
    const log = createLogger('gpumesh-agent', loggerSettings(process.env))
    const missing = [
      o.coordinator === undefined ? 'GPUMESH_COORDINATOR (--coordinator)' : null,
      o.clusterKeyFile === undefined ? 'GPUMESH_CLUSTER_KEY_FILE (--cluster-key-file)' : null
    ].filter((m) => m !== null)
    if (missing.length > 0) {
      log.fatal(`cannot start: set ${missing.join(' and ')}`)
      process.exitCode = EXIT_CONFIG
      return
    }
    const { startAgent } = await import('./daemon.js')
    log.info({ version: VERSION, stateDir: o.stateDir }, 'gpumesh-agent starting')
    let agent: Awaited<ReturnType<typeof startAgent>>
    try {
      agent = await startAgent({
        stateDir: o.stateDir,
        listen: o.listen,
        coordinators: o.coordinator as string[],
        clusterKeyFile: o.clusterKeyFile as string,
        detect: toDetectOptions(o),
        detectIntervalMs: o.detectInterval * 1000,
        mdns: o.mdns,
        log,
        ...(o.docker === undefined ? {} : { docker: o.docker }),
        ...(o.placementLogMaxBytes === undefined ? {} : { logMaxBytes: o.placementLogMaxBytes }),
        telemetry: {
          ...(o.kmsg === undefined ? {} : { kmsgPath: o.kmsg }),
          ...(o.telemetryIntervalMs === undefined ? {} : { periodMs: o.telemetryIntervalMs }),
          ...(o.healthPolicy === undefined ? {} : { policyFile: o.healthPolicy })
        },
        ...(o.joinToken === undefined ? {} : { joinToken: o.joinToken }),
        ...(o.nodeName === undefined ? {} : { name: o.nodeName })
      })
    } catch (err) {
      log.fatal({ err: (err as Error).message, code: (err as { code?: string }).code }, 'cannot start')
      process.exitCode = exitCodeFor(err)
      return
    }
    const { systemdNotifier } = await import('../common/systemd.js')
    const systemd = systemdNotifier(process.env)
    systemd.ready(`serving as ${agent.node.peerId.toString()}`)
    // The control loop dials or heartbeats at least every few seconds; silence means it is stuck.
    systemd.watchdog(() => Date.now() - agent.control.lastProgress < 45_000)
    // A revoked host ends the agent for good: 78, which systemd does not restart.
    const revoked = agent.fatal.then(async (err) => {
      log.fatal({ code: err.code }, err.message)
      await agent.stop()
      process.exitCode = exitCodeFor(err)
    })
    await Promise.race([daemonShutdown(log, systemd, agent.stop, 'stopping (placements keep running)'), revoked])
  })

await program.parseAsync(process.argv)
