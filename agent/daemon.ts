// The agent daemon's composition: identity and cluster key from the state
// directory, host facts, the runtime (re-adopting what survived a restart),
// the mesh node, gossip membership, GPU telemetry and health (one long-lived
// nvidia-smi loop and the kernel's XIDs) and the control session, plus
// periodic re-detection. stop() leaves workloads running.
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { ConfigError } from '../common/config-error.js'
import { Loop } from '../common/daemon/loop.js'
import { Started } from '../common/daemon/startable.js'
import type { Logger } from '../common/log.js'
import { readClusterKey } from '../common/mesh/cluster-key.js'
import { loadOrCreateIdentity } from '../common/mesh/identity.js'
import { createMeshNode, type MeshNode } from '../common/mesh/node.js'
import type { HostFacts } from '../protocol/host-facts.js'
import { type DetectAtStartOptions, detectAtStart, driverSilent } from './detect/at-start.js'
import { detect, type DetectOptions } from './detect/detect.js'
import { findNvidiaSmi } from './detect/nvidia/run.js'
import { detectInSubprocess } from './detect/subprocess.js'
import { GpuMonitor } from './health/gpu-monitor.js'
import { loadHealthPolicy } from './health/policy.js'
import { ControlClient } from './mesh/control.js'
import { Membership } from './mesh/membership.js'
import { AgentState } from './mesh/state.js'
import { createRuntime } from './runtime/runtime.js'
import { ReadinessProber } from './serve/readiness.js'
import { LogsServer } from './logs/server.js'
import { SessionRelay } from './session/relay.js'
import { GatewayRelay } from './gateway/relay.js'
import type { Runtime } from './runtime/types.js'

export interface AgentOptions {
  stateDir: string
  listen: string[]
  /** Coordinator multiaddrs ending in /p2p/<peer id> (GPUMESH_COORDINATOR). */
  coordinators: string[]
  clusterKeyFile: string
  joinToken?: string
  /** The name the host registers under (GPUMESH_NODE_NAME; default: hostname). */
  name?: string
  detect: DetectOptions
  /** Facts to use instead of detecting (simulated hosts: many agents in one process). */
  facts?: HostFacts
  detectIntervalMs?: number
  /** Tries before joining when nvidia-smi does not answer (at-start.ts). */
  detectRetry?: DetectAtStartOptions
  mdns?: boolean
  docker?: string
  stopGraceMs?: number
  /** Where placement logs rotate (GPUMESH_PLACEMENT_LOG_MAX_BYTES; default 64 MiB). */
  logMaxBytes?: number
  /** GPU telemetry and health (docs/health.md): GPUMESH_KMSG, GPUMESH_TELEMETRY_INTERVAL_MS, GPUMESH_HEALTH_POLICY. */
  telemetry?: { kmsgPath?: string; periodMs?: number; policyFile?: string }
  log: Logger
}

export interface Agent {
  node: MeshNode
  runtime: Runtime
  control: ControlClient
  membership: Membership
  sessions: SessionRelay
  readiness: ReadinessProber
  logs: LogsServer
  gateway: GatewayRelay
  /** Per-GPU health and live usage; clearHealth() is the admin's clear. */
  gpus: GpuMonitor
  facts: () => HostFacts
  /** Resolves when the agent must end for good (its host was revoked; its placements are stopped): exit 78. */
  fatal: Promise<ConfigError>
  stop: () => Promise<void>
}

export async function startAgent(o: AgentOptions): Promise<Agent> {
  await mkdir(o.stateDir, { recursive: true, mode: 0o700 })
  const clusterKey = await readClusterKey(o.clusterKeyFile)
  const privateKey = await loadOrCreateIdentity(join(o.stateDir, 'peer.key'))
  const state = await AgentState.load(o.stateDir)
  const healthPolicy = await loadHealthPolicy(o.telemetry?.policyFile)
  let facts = o.facts ?? (await detectAtStart(o.detect, o.log, o.detectRetry))
  const name = o.name ?? facts.hostname
  const started = new Started(o.log)
  try {
    const runtime = createRuntime({
      stateDir: o.stateDir,
      ...(o.docker === undefined ? {} : { docker: o.docker }),
      ...(o.stopGraceMs === undefined ? {} : { stopGraceMs: o.stopGraceMs }),
      ...(o.logMaxBytes === undefined ? {} : { logMaxBytes: o.logMaxBytes })
    })
    started.add('runtime', runtime.close)
    const adopted = await runtime.recover()
    if (adopted.length > 0)
      o.log.info(
        { placements: adopted.map((p) => `${p.placementId}:${p.state}`) },
        're-adopted placements from the state directory'
      )

    // No bootstrap module: its dial races ours and one of the two connections is later closed under the session.
    const node = await createMeshNode({
      privateKey,
      listen: o.listen,
      clusterKey,
      mdns: o.mdns ?? false,
      role: 'agent'
    })
    started.add('mesh node', async () => {
      await node.stop()
    })
    // Attaches to session placements, from the coordinator only.
    const sessions = await started.start(
      'session relay',
      new SessionRelay({ node, runtime, stateDir: o.stateDir, coordinators: o.coordinators, log: o.log })
    )
    // Placement logs, to the coordinator only.
    const logs = await started.start(
      'logs server',
      new LogsServer({ node, runtime, stateDir: o.stateDir, coordinators: o.coordinators, log: o.log })
    )
    // Gateway calls to this host's endpoint replicas, from the coordinator only.
    const gateway = await started.start(
      'gateway relay',
      new GatewayRelay({ node, runtime, coordinators: o.coordinators, log: o.log })
    )
    const membership = await started.start(
      'membership',
      new Membership(node, { name, pool: facts.pool.key, gpus: facts.gpus.length }, o.log)
    )
    const binary = o.facts === undefined ? await findNvidiaSmi(o.detect.nvidiaSmi, o.detect.env?.PATH) : null
    // Simulated hosts (injected facts) and hosts without nvidia-smi have no GPUs of their own to watch.
    // A health change goes out in a heartbeat at once (the control session starts after this).
    let control: ControlClient | undefined
    const gpus = await started.start(
      'GPU telemetry',
      new GpuMonitor({
        binary,
        stateDir: o.stateDir,
        policy: healthPolicy,
        gpus: () => facts.gpus,
        onHealthChange: () => control?.heartbeatNow(),
        log: o.log,
        ...(o.detect.env === undefined ? {} : { env: o.detect.env }),
        ...(o.telemetry?.kmsgPath === undefined ? {} : { kmsgPath: o.telemetry.kmsgPath }),
        ...(o.telemetry?.periodMs === undefined ? {} : { periodMs: o.telemetry.periodMs })
      })
    )
    // Before the control session: its hello carries the readiness of what runs.
    const readiness = await started.start('readiness probes', new ReadinessProber({ runtime, log: o.log }))
    control = await started.start(
      'control session',
      new ControlClient({
        node,
        runtime,
        readiness,
        state,
        log: o.log,
        coordinators: o.coordinators,
        name,
        agentVersion: o.detect.agentVersion,
        ...(o.joinToken === undefined ? {} : { joinToken: o.joinToken }),
        facts: () => facts,
        usage: () => gpus.current(),
        telemetry: gpus,
        clearHealth: async (index) => await gpus.clearHealth(index)
      })
    )

    if (o.facts === undefined) {
      // Only the GPUs are looked at each period (a few nvidia-smi calls, in this process); the
      // host sources (systeminformation: tens of subprocesses) run again only when the GPUs changed.
      await started.start(
        're-detection',
        new Loop(
          async () => {
            try {
              const gpusOnly = await detect({ ...o.detect, hostSources: [] })
              // A driver that did not answer this time says nothing about the GPUs: not a change.
              if (driverSilent(gpusOnly) && facts.gpus.length > 0) {
                o.log.warn(
                  { why: gpusOnly.warnings.find((w) => w.code === 'source.failed')?.message },
                  'nvidia-smi did not answer: keeping the last GPU facts'
                )
                return
              }
              if (JSON.stringify([gpusOnly.gpus, gpusOnly.pool]) === JSON.stringify([facts.gpus, facts.pool])) return
              const next = await detectInSubprocess(o.detect)
              facts = next
              o.log.warn({ pool: next.pool.key, gpus: next.gpus.length }, 'host facts changed')
              membership.setPool(next.pool.key)
              await control.sendFacts(next)
            } catch (err) {
              o.log.warn({ err: (err as Error).message }, 're-detection failed')
            }
          },
          { name: 're-detection', everyMs: o.detectIntervalMs ?? 60_000, immediate: false, log: o.log }
        )
      )
    }
    o.log.info(
      { peerId: node.peerId.toString(), name, pool: facts.pool.key, listen: node.getMultiaddrs().map(String) },
      'agent started'
    )

    return {
      node,
      runtime,
      control,
      membership,
      sessions,
      readiness,
      logs,
      gateway,
      gpus,
      facts: () => facts,
      fatal: control.fatal,
      // In reverse: re-detection, control, readiness probes, GPU telemetry, membership, logs, gateway, sessions, the node, the runtime (workloads keep running).
      stop: async () => {
        await started.stop()
      }
    }
  } catch (err) {
    await started.stop()
    throw err
  }
}
