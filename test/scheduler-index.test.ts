// The leader keeps one SnapshotIndex alive between passes and updates it
// host by host (upsert/remove). Whatever the history, it must decide like an
// index built fresh from the same hosts: same fit (free GPUs left), same GPU
// choice score, same reasons. Host identity may differ only among equals.
import t from 'tap'
import { buildFleet, buildWorkloads, prng } from './helpers/fleet.js'
import { SnapshotIndex } from '../coordinator/scheduler/host-index.js'
import { placeOn } from '../coordinator/scheduler/place.js'
import type { Decision, SchedHost } from '../coordinator/scheduler/types.js'

function fingerprint(d: Decision, hosts: Map<string, SchedHost>, index: SnapshotIndex): string {
  const parts = d.assignments.map(
    (a) => `${hosts.get(a.hostId)?.pool}:${a.gpus.length}:left=${index.free(a.hostId)?.size}`
  )
  return `${parts.sort().join(',')}|${d.reason ?? ''}`
}

t.test('an index updated in place decides like a fresh one', async (t) => {
  const fleet = buildFleet(400, 5)
  const random = prng(9)
  const live = new SnapshotIndex(fleet)
  // History: hosts change state and free GPUs, some leave, new ones join.
  const hosts = new Map(fleet.hosts.map((h) => [h.id, h]))
  for (let i = 0; i < 300; i++) {
    const victim = fleet.hosts[Math.floor(random() * fleet.hosts.length)] as SchedHost
    const r = random()
    if (r < 0.1) {
      live.remove(victim.id)
      hosts.delete(victim.id)
    } else if (r < 0.2) {
      const copy: SchedHost = { ...victim, id: `new-${i}`, free: new Set(victim.gpus.map((g) => g.index)) }
      live.upsert(copy)
      hosts.set(copy.id, copy)
    } else if (hosts.has(victim.id)) {
      const changed: SchedHost = {
        ...victim,
        schedulable: random() > 0.1,
        free: new Set(victim.gpus.map((g) => g.index).filter(() => random() > 0.4)),
        // GPU health comes and goes too: failed GPUs shrink the host, degraded ones change its choices.
        failed: new Set(victim.gpus.map((g) => g.index).filter(() => random() < 0.1)),
        degraded: new Set(victim.gpus.map((g) => g.index).filter(() => random() < 0.1))
      }
      live.upsert(changed)
      hosts.set(changed.id, changed)
    }
  }
  const fresh = new SnapshotIndex({ hosts: [...hosts.values()] })
  const stream = buildWorkloads(600, 13, fleet.pools)
  const differ: Array<{ workload: string; live: string; fresh: string }> = []
  let placed = 0
  for (const w of stream) {
    const a = fingerprint(placeOn(live, w), hosts, live)
    const b = fingerprint(placeOn(fresh, w), hosts, fresh)
    if (a !== b) differ.push({ workload: w.id, live: a, fresh: b })
    if (a.endsWith('|')) placed++
  }
  t.same(differ, [], 'every workload decided alike by both indexes')
  // The comparison means something only if the stream both places and refuses.
  t.ok(placed > 0 && placed < stream.length, `${placed} of ${stream.length} workloads placed in full`)
  t.equal(live.free('no-such-host'), undefined)
})
