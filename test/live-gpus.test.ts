// The coordinator folds the agent's telemetry deltas back into whole tables:
// across random sequences of GPU tables, what the agent sends and what the
// coordinator rebuilds are the same table after every report.
import t from 'tap'
import { telemetryDelta } from '../agent/health/delta.js'
import { LiveGpus } from '../coordinator/telemetry/live-gpus.js'
import type { GpuTelemetry } from '../protocol/telemetry.js'
import { Mismatches } from './helpers/mismatches.js'

/** A small deterministic generator, so a failure names a seed that reproduces it. */
function random(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

function table(r: () => number, step: number): GpuTelemetry[] {
  const count = 1 + Math.floor(r() * 8)
  const gpus: GpuTelemetry[] = []
  for (let index = 0; index < count; index++) {
    const state = r() < 0.7 ? 'healthy' : r() < 0.5 ? 'degraded' : 'failed'
    gpus.push({
      index,
      uuid: `GPU-${index}`,
      pciBusId: `00000000:${(0x18 + index).toString(16)}:00.0`,
      health: { state, reasons: state === 'healthy' ? [] : ['xid-79'], since: new Date(step * 1000).toISOString() },
      usage:
        r() < 0.1
          ? null
          : {
              utilizationPct: Math.floor(r() * 3) * 50,
              memoryUsedMiB: Math.floor(r() * 2) * 1024,
              temperatureC: 40,
              powerW: 100,
              at: new Date(step * 1000).toISOString()
            },
      xids: r() < 0.8 ? { last: null, counts: {} } : { last: 79, counts: { '79': step } }
    })
  }
  return gpus
}

t.test('deltas rebuild the agent table on the coordinator, report after report', async (t) => {
  const m = new Mismatches()
  for (let seed = 1; seed <= 50; seed++) {
    const r = random(seed)
    const live = new LiveGpus()
    let reported: GpuTelemetry[] | null = null
    for (let step = 0; step < 20; step++) {
      // A new control session (every 7th report here) starts from the whole table again.
      if (step % 7 === 6) reported = null
      const now = table(r, step)
      const d = telemetryDelta(reported, now)
      reported = now
      if (d !== null) live.apply('host-a', d)
      // Usage timestamps travel only with a changed value: compare without them.
      const strip = (gs: GpuTelemetry[]) => gs.map((g) => ({ ...g, usage: g.usage && { ...g.usage, at: '' } }))
      m.check(`seed ${seed} step ${step}`, 'the rebuilt table', strip(live.gpus('host-a')), strip(now))
    }
  }
  t.same(m.list, [], 'every rebuilt table equals what the agent had')
})

t.test('listeners hear each change with the GPU before and after; a forgotten host has no table', async (t) => {
  const live = new LiveGpus()
  const heard: string[] = []
  live.onChange((cs) => {
    for (const c of cs)
      heard.push(`${c.hostId}/${c.index}: ${c.before?.health.state ?? '-'} -> ${c.after?.health.state ?? '-'}`)
  })
  const [g0, g1] = table(random(3), 0)
    .concat(table(random(4), 0))
    .slice(0, 2) as [GpuTelemetry, GpuTelemetry]
  const a = { ...g0, index: 0, health: { ...g0.health, state: 'healthy' as const } }
  const b = { ...g1, index: 1, health: { ...g1.health, state: 'healthy' as const } }
  live.apply('h', { full: true, gpus: [a, b] })
  live.apply('h', {
    full: false,
    gpus: [{ index: 1, health: { state: 'failed', reasons: ['xid-79'], since: a.health.since } }]
  })
  live.apply('h', { full: false, gpus: [{ index: 5, health: a.health }] }) // a part for a GPU never reported: dropped
  live.apply('h', { full: false, gpus: [], removed: [0] })
  t.same(heard, ['h/0: - -> healthy', 'h/1: - -> healthy', 'h/1: healthy -> failed', 'h/0: healthy -> -'])
  live.forget('h')
  t.same(live.gpus('h'), [], 'forgotten')
})
