// The agent daemon (`gpumesh-agent run`, a real process) samples its GPUs
// with the long-lived nvidia-smi loop and its heartbeats carry the values: a
// change the test writes to the double's values file reaches a coordinator
// (played by the test) in a heartbeat, from the same nvidia-smi process.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { LiveGpus } from '../coordinator/telemetry/live-gpus.js'
import type { GpuUsage } from '../protocol/control.js'
import type { TelemetryDelta } from '../protocol/telemetry.js'
import { eventually } from './helpers/eventually.js'
import { idleGpu } from './helpers/gpu-values.js'
import { scriptedCoordinator } from './helpers/mesh.js'
import { telemetryAgent } from './helpers/telemetry-agent.js'

const HOST_ID = '00000000-0000-4000-8000-0000000000c1'

t.test('heartbeats carry what the nvidia-smi loop samples, as it changes', async (t) => {
  const heartbeats: GpuUsage[][] = []
  // The telemetry deltas, folded as the coordinator folds them.
  const live = new LiveGpus()
  const deltas: TelemetryDelta[] = []
  const { target } = await scriptedCoordinator(t, async (channel) => {
    const hello = await channel.receive()
    if (hello?.type !== 'hello') return
    await channel.send({ v: 1, type: 'welcome', hostId: HOST_ID, epoch: 1, heartbeatMs: 200, placements: [] })
    for (let f = await channel.receive(); f !== null; f = await channel.receive()) {
      if (f.type !== 'heartbeat') continue
      heartbeats.push(f.gpus)
      if (f.telemetry !== undefined) {
        deltas.push(f.telemetry)
        live.apply(HOST_ID, f.telemetry)
      }
      await channel.send({ v: 1, type: 'heartbeat-ack', seq: f.seq })
    }
  })
  const gpus = [idleGpu(0), idleGpu(1)]
  const { child, dir, write } = telemetryAgent(
    t,
    { ...target, joinToken: 'gmj_scripted-coordinator-takes-any' },
    gpus,
    {
      GPUMESH_NODE_NAME: 'telemetry'
    }
  )
  const last = () => heartbeats.at(-1) ?? []
  await eventually(() => last().length === 2 && last()[1]?.memoryUsedMiB === 0, 45_000, 'heartbeats with both GPUs')
  gpus[1] = { ...gpus[1], 'utilization.gpu': 64, 'memory.used': 30000 }
  write(gpus)
  await eventually(() => last()[1]?.utilizationPct === 64, 15_000, 'the new utilization in a heartbeat')
  const loops = readFileSync(join(dir, 'calls.log'), 'utf8')
    .split('\n')
    .filter((l) => l.includes(' -lms 300'))
  t.same(
    { heartbeat: last(), loops: loops.length },
    {
      heartbeat: [
        { index: 0, utilizationPct: 0, memoryUsedMiB: 0 },
        { index: 1, utilizationPct: 64, memoryUsedMiB: 30000 }
      ],
      loops: 1
    },
    'both values from one nvidia-smi loop'
  )
  const table = live.gpus(HOST_ID)
  t.same(
    {
      fullTables: deltas.filter((d) => d.full).length,
      gpus: table.map((g) => ({ index: g.index, health: g.health.state, util: g.usage?.utilizationPct })),
      // The delta that brought GPU 1's new utilization names only GPU 1: GPU 0 did not change.
      changeNamed: deltas.find((d) => d.gpus.some((g) => g.usage?.utilizationPct === 64))?.gpus.map((g) => g.index)
    },
    {
      fullTables: 1,
      gpus: [
        { index: 0, health: 'healthy', util: 0 },
        { index: 1, health: 'healthy', util: 64 }
      ],
      changeNamed: [1]
    },
    'the deltas rebuild the table: one whole table first, then only what changed'
  )
  child.kill('SIGTERM')
  t.equal((await child).exitCode, 0, 'exits 0 on SIGTERM, nvidia-smi loop and all')
})
