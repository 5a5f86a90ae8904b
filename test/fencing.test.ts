// Fencing, directly: a real agent against a scripted coordinator on
// 127.0.0.1 that plays a partition (it goes silent, as one behind a cut link
// does: the old connection never errors) and its heal (a new session, a
// higher epoch, a placement list without the stale copy), then sends an
// assignment from the old epoch through the control protocol.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import t from 'tap'
import { startAgent } from '../agent/daemon.js'
import { createLogger } from '../common/log.js'
import { createClusterKey } from '../common/mesh/cluster-key.js'
import { FrameChannel } from '../common/mesh/frames.js'
import { createMeshNode } from '../common/mesh/node.js'
import { AgentFrame, CONTROL_PROTOCOL, CoordinatorFrame, type Assignment } from '../protocol/control.js'
import { eventually, factsFor } from './helpers/coordinator.js'

const HOST_ID = '00000000-0000-4000-8000-0000000000a1'
const WORKLOAD_ID = '00000000-0000-4000-8000-0000000000b1'

function assignment(n: number, script: string): Assignment {
  return {
    placementId: `00000000-0000-4000-8000-00000000000${n}`,
    workloadId: WORKLOAD_ID,
    workloadName: 'chat',
    replica: n,
    gpus: [n - 1],
    run: { driver: 'process', command: ['sh', '-c', script] },
    env: {}
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('a partitioned agent: new epoch on heal, its stale copy killed, an old-epoch assignment refused', async (t) => {
  const clusterKeyFile = join(mkdtempSync(join(tmpdir(), 'gpumesh-fencing-')), 'cluster.key')
  const coordinator = await createMeshNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    clusterKey: await createClusterKey(clusterKeyFile),
    role: 'coordinator'
  })
  t.teardown(async () => {
    await coordinator.stop()
    rmSync(dirname(clusterKeyFile), { recursive: true, force: true })
  })

  const stale = assignment(1, 'echo $$; exec sleep 600')
  const oldEpoch = assignment(2, 'echo old-epoch; exec sleep 600')
  const current = assignment(3, 'echo current; exec sleep 600')
  const hellos: Array<{ epoch: number; running: string[] }> = []
  let healed = false
  await coordinator.handle(CONTROL_PROTOCOL, (stream) => {
    void (async () => {
      const channel = new FrameChannel(stream, AgentFrame, CoordinatorFrame)
      const hello = await channel.receive()
      if (hello?.type !== 'hello') return
      hellos.push({
        epoch: hello.epoch,
        running: hello.running.filter((p) => p.state === 'running').map((p) => p.placementId)
      })
      if (hellos.length === 1) {
        // Before the partition: epoch 1, one placement. Then silence: heartbeats go unanswered.
        await channel.send({ v: 1, type: 'welcome', hostId: HOST_ID, epoch: 1, heartbeatMs: 200, placements: [stale] })
        return
      }
      // The heal: the host registered again (epoch 2); its placement was moved elsewhere meanwhile.
      await channel.send({ v: 1, type: 'welcome', hostId: HOST_ID, epoch: 2, heartbeatMs: 200, placements: [] })
      healed = true
      // Frames are handled in order: once the current one runs, the old one has been seen (and must have been refused).
      await channel.send({ v: 1, type: 'assign', epoch: 1, placement: oldEpoch })
      await channel.send({ v: 1, type: 'assign', epoch: 2, placement: current })
      for (let f = await channel.receive(); f !== null; f = await channel.receive()) {
        if (f.type === 'heartbeat') await channel.send({ v: 1, type: 'heartbeat-ack', seq: f.seq })
      }
    })().catch(() => {})
  })

  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-agent-fencing-'))
  const agent = await startAgent({
    stateDir,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    coordinators: coordinator.getMultiaddrs().map(String),
    clusterKeyFile,
    name: 'fenced',
    facts: await factsFor('h100-8x-nv18-nics'),
    detect: { agentVersion: 'test', timeoutMs: 2000 },
    stopGraceMs: 1000,
    mdns: false,
    log: createLogger('agent-fenced', { level: process.env.GPUMESH_TEST_LOG ?? 'silent', stream: 'stderr' })
  })
  t.teardown(async () => {
    await agent.stop()
    // Workloads outlive agents by design; the test's own are ended here.
    for (const p of agent.runtime.list())
      if (p.state === 'running' || p.state === 'starting')
        await agent.runtime.stop(p.placementId, 'test over').catch(() => {})
    rmSync(stateDir, { recursive: true, force: true })
  })
  const state = (id: string) => agent.runtime.list().find((p) => p.placementId === id)?.state
  const log = (id: string) => {
    try {
      return readFileSync(join(stateDir, 'placements', id, 'stdout.log'), 'utf8')
    } catch {
      return ''
    }
  }

  const pid = await eventually(
    () =>
      state(stale.placementId) === 'running' && /^\d+$/m.test(log(stale.placementId))
        ? Number(log(stale.placementId).trim())
        : undefined,
    15_000,
    'the placement of epoch 1 to run'
  )
  t.ok(isAlive(pid), `its process ${pid} runs`)

  await eventually(
    () => (healed ? true : undefined),
    30_000,
    'the agent to give up the silent session and say hello again'
  )
  t.same(
    hellos[1],
    { epoch: 1, running: [stale.placementId] },
    'through the partition it kept epoch 1 and its placement running'
  )
  await eventually(
    () => (state(current.placementId) === 'running' ? true : undefined),
    15_000,
    'the assignment of epoch 2 to run'
  )
  await eventually(
    () => (state(stale.placementId) === 'stopped' ? true : undefined),
    15_000,
    'the stale copy, not on the list of epoch 2, to be stopped (fenced)'
  )
  t.notOk(isAlive(pid), `its process ${pid} is gone`)
  t.equal(state(oldEpoch.placementId), undefined, 'the assignment from epoch 1 was refused: never started')
  t.equal(log(oldEpoch.placementId), '', 'and never ran')
  t.same(
    JSON.parse(readFileSync(join(stateDir, 'agent.json'), 'utf8')),
    { hostId: HOST_ID, epoch: 2 },
    'the agent obeys epoch 2 now, on disk too'
  )
})
