// Fencing, directly: a real agent against a scripted coordinator on
// 127.0.0.1 that plays a partition (it goes silent, as one behind a cut link
// does: the old connection never errors) and its heal (a new session, a
// higher epoch, a placement list without the stale copy), then sends an
// assignment from the old epoch through the control protocol.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { Assignment } from '../protocol/control.js'
import { eventually } from './helpers/coordinator.js'
import { placementLog, scriptedCoordinator, startTestAgent } from './helpers/mesh.js'
import { alive } from './helpers/process.js'

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

t.test('a partitioned agent: new epoch on heal, its stale copy killed, an old-epoch assignment refused', async (t) => {
  const stale = assignment(1, 'echo $$; exec sleep 600')
  const oldEpoch = assignment(2, 'echo old-epoch; exec sleep 600')
  const current = assignment(3, 'echo current; exec sleep 600')
  const hellos: Array<{ epoch: number; running: string[] }> = []
  let healed = false
  const { target } = await scriptedCoordinator(t, async (channel) => {
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
  })

  const agent = await startTestAgent(t, target, 'h100-8x-nv18-nics', 'fenced', { mdns: false })
  const { stateDir } = agent
  const state = (id: string) => agent.runtime.list().find((p) => p.placementId === id)?.state
  const log = (id: string) => placementLog(stateDir, id)

  const pid = await eventually(
    () =>
      state(stale.placementId) === 'running' && /^\d+$/m.test(log(stale.placementId))
        ? Number(log(stale.placementId).trim())
        : undefined,
    15_000,
    'the placement of epoch 1 to run'
  )
  t.ok(alive(pid), `its process ${pid} runs`)

  await eventually(() => healed, 30_000, 'the agent to give up the silent session and say hello again')
  t.same(
    hellos[1],
    { epoch: 1, running: [stale.placementId] },
    'through the partition it kept epoch 1 and its placement running'
  )
  await eventually(() => state(current.placementId) === 'running', 15_000, 'the assignment of epoch 2 to run')
  await eventually(
    () => state(stale.placementId) === 'stopped',
    15_000,
    'the stale copy, not on the list of epoch 2, to be stopped (fenced)'
  )
  t.notOk(alive(pid), `its process ${pid} is gone`)
  t.equal(state(oldEpoch.placementId), undefined, 'the assignment from epoch 1 was refused: never started')
  t.equal(log(oldEpoch.placementId), '', 'and never ran')
  t.same(
    JSON.parse(readFileSync(join(stateDir, 'agent.json'), 'utf8')),
    { hostId: HOST_ID, epoch: 2 },
    'the agent obeys epoch 2 now, on disk too'
  )
  // Placements outlive their agent by design: the test stops the one it leaves running.
  await agent.runtime.stop(current.placementId, 'the test is over')
})
