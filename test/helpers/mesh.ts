// Agents in this process, joined to a test coordinator over libp2p on
// 127.0.0.1, each with its own state directory and fixture-machine facts.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { createLogger } from '../../common/log.js'
import { startAgent, type Agent, type AgentOptions } from '../../agent/daemon.js'
import type { TestCoordinator } from './coordinator.js'
import { factsFor } from './coordinator.js'
import { cleanEnv } from './agent.js'
import { MACHINES, NVIDIA_SMI_DOUBLE } from './fixtures.js'

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

export async function startTestAgent(
  t: Test,
  c: TestCoordinator,
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
    coordinators: c.mesh.multiaddrs(),
    clusterKeyFile: join(c.stateDir, 'cluster.key'),
    name,
    facts,
    detect: { agentVersion: 'test', timeoutMs: 2000 },
    stopGraceMs: 1000,
    log,
    ...options
  })
  let stopped = false
  const stop = async () => {
    if (!stopped) {
      stopped = true
      await agent.stop()
    }
  }
  t.teardown(async () => {
    await stop()
    // Workloads outlive agents by design; the test's own are ended here.
    for (const p of agent.runtime.list())
      if (p.state === 'running' || p.state === 'starting')
        await agent.runtime.stop(p.placementId, 'test over').catch(() => {})
    if (options.stateDir === undefined) rmSync(stateDir, { recursive: true, force: true })
  })
  return {
    ...agent,
    stateDir,
    name,
    stop,
    crash: async () => {
      stopped = true
      agent.membership.stop()
      await agent.node.stop()
      await agent.control.stop()
      await agent.runtime.close()
    }
  }
}

/** Where a `gpumesh-agent run` process joins: a coordinator's addresses, its cluster key, a join token. */
export interface JoinTarget {
  coordinators: string[]
  clusterKeyFile: string
  joinToken: string
}

/** The environment of a `gpumesh-agent run` process joining `target` on loopback, replaying `machine` (no mDNS). */
export function agentEnv(
  target: JoinTarget,
  stateDir: string,
  machine: string,
  extra: Record<string, string> = {}
): Record<string, string> {
  return cleanEnv({
    GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE,
    GPUMESH_SMI_FIXTURE: join(MACHINES, machine),
    GPUMESH_STATE_DIR: stateDir,
    GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
    GPUMESH_COORDINATOR: target.coordinators.join(','),
    GPUMESH_CLUSTER_KEY_FILE: target.clusterKeyFile,
    GPUMESH_JOIN_TOKEN: target.joinToken,
    GPUMESH_NO_MDNS: '1',
    ...extra
  })
}

/** agentEnv for the in-process test coordinator `c`, with a fresh join token. */
export async function agentProcessEnv(
  c: TestCoordinator,
  stateDir: string,
  machine: string,
  extra: Record<string, string> = {}
): Promise<Record<string, string>> {
  const target = {
    coordinators: c.mesh.multiaddrs(),
    clusterKeyFile: join(c.stateDir, 'cluster.key'),
    joinToken: await joinToken(c)
  }
  return agentEnv(target, stateDir, machine, extra)
}
