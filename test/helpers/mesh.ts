// Agents in this process, joined to a test coordinator over libp2p on
// 127.0.0.1, each with its own state directory and fixture-machine facts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Test } from 'tap'
import { createLogger } from '../../common/log.js'
import { createClusterKey } from '../../common/mesh/cluster-key.js'
import { FrameChannel } from '../../common/mesh/frames.js'
import { createMeshNode, type MeshNode } from '../../common/mesh/node.js'
import { startAgent, type Agent, type AgentOptions } from '../../agent/daemon.js'
import { AgentFrame, CONTROL_PROTOCOL, CoordinatorFrame } from '../../protocol/control.js'
import type { TestCoordinator } from './coordinator.js'
import { factsFor } from './coordinator.js'
import { cleanEnv } from './agent.js'
import { eventually } from './eventually.js'
import { MACHINES, NVIDIA_SMI_DOUBLE } from './fixtures.js'
import { stopOnce } from './stop-once.js'

export interface TestAgent extends Agent {
  stateDir: string
  name: string
  /** Stops the agent as a crash would: the mesh node dies, no goodbye. */
  crash: () => Promise<void>
}

export async function joinToken(c: TestCoordinator, pool?: string): Promise<string> {
  const r = await c.call('POST', '/v1/join-tokens', pool === undefined ? {} : { pool })
  if (r.status !== 201) throw new Error(`join token: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.token as string
}

/** Where an agent joins: a test coordinator, or a scripted one (its addresses and cluster key file). */
export type JoinTarget = TestCoordinator | { coordinators: string[]; clusterKeyFile: string }

export async function startTestAgent(
  t: Test,
  c: JoinTarget,
  machine: string,
  name: string,
  options: Partial<AgentOptions> & { stateDir?: string } = {}
): Promise<TestAgent> {
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), `gpumesh-agent-${name}-`))
  const facts = options.facts ?? (await factsFor(machine))
  facts.hostname = name
  const log = createLogger(`agent-${name}`, { level: process.env.GPUMESH_TEST_LOG ?? 'silent', stream: 'stderr' })
  const agent = await startAgent({
    stateDir,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    ...('mesh' in c ? { coordinators: c.mesh.multiaddrs(), clusterKeyFile: join(c.stateDir, 'cluster.key') } : c),
    name,
    facts,
    detect: { agentVersion: 'test', timeoutMs: 2000 },
    stopGraceMs: 1000,
    log,
    ...options
  })
  const once = stopOnce()
  const stop = async () => {
    await once(async () => {
      await agent.stop()
    })
  }
  t.teardown(async () => {
    // Workloads outlive agents by design; the test's own are ended here, while the runtime is open (a closed
    // one stops nothing) and after the control session (no new assignment starts meanwhile). An agent the
    // test stopped leaves them to the agent it started next on its state directory.
    await once(async () => {
      await agent.control.stop()
      await Promise.all(
        agent.runtime
          .list()
          .filter((p) => p.state === 'running' || p.state === 'starting')
          .map(async (p) => await agent.runtime.stop(p.placementId, 'test over').catch(() => {}))
      )
      await agent.stop()
    })
    if (options.stateDir === undefined) rmSync(stateDir, { recursive: true, force: true })
  })
  return {
    ...agent,
    stateDir,
    name,
    stop,
    crash: async () => {
      await once(async () => {
        agent.membership.stop()
        await agent.node.stop()
        await agent.control.stop()
        await agent.runtime.close()
      })
    }
  }
}

/** A placement's stdout so far ('' before it has any) in an agent's state directory. */
export function placementLog(stateDir: string, placementId: string): string {
  try {
    return readFileSync(join(stateDir, 'placements', placementId, 'stdout.log'), 'utf8')
  } catch {
    return ''
  }
}

/** Agents on `machine`, each with a join token of its own, once every one has joined. */
export async function joinedAgents(
  t: Test,
  c: TestCoordinator,
  machine: string,
  names: string[]
): Promise<TestAgent[]> {
  const agents: TestAgent[] = []
  for (const name of names) agents.push(await startTestAgent(t, c, machine, name, { joinToken: await joinToken(c) }))
  await eventually(() => agents.every((a) => a.control.hostId !== null), 10_000, `${names.join(', ')} to join`)
  return agents
}

/** A bare libp2p node on loopback (a raw peer, or a scripted coordinator), stopped at teardown. */
export async function bareNode(
  t: Test,
  clusterKey: Uint8Array,
  options: { role?: 'agent' | 'coordinator'; privateKey?: PrivateKey } = {}
): Promise<MeshNode> {
  const node = await createMeshNode({
    privateKey: options.privateKey ?? (await generateKeyPair('Ed25519')),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    clusterKey,
    role: options.role ?? 'agent'
  })
  t.teardown(async () => {
    await node.stop()
  })
  return node
}

/** The cluster key of a test coordinator, as an agent with access to it reads it. */
export const clusterKeyOf = (c: TestCoordinator): Uint8Array => readFileSync(join(c.stateDir, 'cluster.key'))

/** The coordinator's side of a control session, as a scripted coordinator holds it. */
export type ScriptedSession = FrameChannel<typeof AgentFrame, typeof CoordinatorFrame>

/**
 * A coordinator played by the test: a bare node with a cluster key of its own (both gone at teardown)
 * whose `serve` answers each control session an agent opens. `target` is where a test agent joins it.
 */
export async function scriptedCoordinator(
  t: Test,
  serve: (session: ScriptedSession) => Promise<void>
): Promise<{ node: MeshNode; target: { coordinators: string[]; clusterKeyFile: string } }> {
  const clusterKeyFile = join(mkdtempSync(join(tmpdir(), 'gpumesh-scripted-')), 'cluster.key')
  t.teardown(() => rmSync(dirname(clusterKeyFile), { recursive: true, force: true }))
  const node = await bareNode(t, await createClusterKey(clusterKeyFile), { role: 'coordinator' })
  await node.handle(CONTROL_PROTOCOL, (stream) => {
    // A session the agent dropped ends the script; the test checks what the agent did.
    serve(new FrameChannel(stream, AgentFrame, CoordinatorFrame)).catch(() => {})
  })
  return { node, target: { coordinators: node.getMultiaddrs().map(String), clusterKeyFile } }
}

/** Opens a control stream from `node` to the coordinator `c`. */
export async function dialControl(
  node: MeshNode,
  c: TestCoordinator,
  signal?: AbortSignal
): Promise<FrameChannel<typeof CoordinatorFrame, typeof AgentFrame>> {
  const stream = await node.dialProtocol(
    multiaddr(c.mesh.multiaddrs()[0] as string),
    CONTROL_PROTOCOL,
    signal === undefined ? {} : { signal }
  )
  return new FrameChannel(stream, CoordinatorFrame, AgentFrame)
}

/** A raw agent's control session: `node` says hello to `c` as `name` (L40S facts) with `joinToken`. */
export async function sayHello(
  node: MeshNode,
  c: TestCoordinator,
  name: string,
  joinToken: string
): Promise<FrameChannel<typeof CoordinatorFrame, typeof AgentFrame>> {
  const channel = await dialControl(node, c)
  await channel.send({
    v: 1,
    type: 'hello',
    name,
    agentVersion: 'test',
    facts: { ...(await factsFor('l40s-1x')), hostname: name },
    running: [],
    epoch: 0,
    joinToken
  })
  return channel
}

/** Where a `gpumesh-agent run` process joins: a coordinator's addresses, its cluster key, a join token. */
export interface ProcessJoinTarget {
  coordinators: string[]
  clusterKeyFile: string
  joinToken: string
}

/** The environment of a `gpumesh-agent run` process joining `target` on loopback, replaying `machine` (no mDNS). */
export function agentEnv(
  target: ProcessJoinTarget,
  stateDir: string,
  machine: string,
  extra: Record<string, string> = {}
): Record<string, string> {
  return cleanEnv({
    GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE,
    GPUMESH_SMI_FIXTURE: join(MACHINES, machine),
    // A loaded CI machine can take over the 10 s default to answer a replay while the agent also
    // starts its host probes; a host whose driver does not answer joins with no GPUs (and a known
    // one is quarantined), which is right on real hardware and wrong for these tests.
    GPUMESH_NVIDIA_SMI_TIMEOUT_MS: '30000',
    GPUMESH_STATE_DIR: stateDir,
    GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
    GPUMESH_COORDINATOR: target.coordinators.join(','),
    GPUMESH_CLUSTER_KEY_FILE: target.clusterKeyFile,
    GPUMESH_JOIN_TOKEN: target.joinToken,
    GPUMESH_NO_MDNS: '1',
    ...extra
  })
}

/** Where a `gpumesh-agent run` process joins the in-process test coordinator `c`, with a fresh join token. */
export async function processJoinTarget(c: TestCoordinator): Promise<ProcessJoinTarget> {
  return {
    coordinators: c.mesh.multiaddrs(),
    clusterKeyFile: join(c.stateDir, 'cluster.key'),
    joinToken: await joinToken(c)
  }
}

/** agentEnv for the in-process test coordinator `c`, with a fresh join token. */
export async function agentProcessEnv(
  c: TestCoordinator,
  stateDir: string,
  machine: string,
  extra: Record<string, string> = {}
): Promise<Record<string, string>> {
  return agentEnv(await processJoinTarget(c), stateDir, machine, extra)
}
