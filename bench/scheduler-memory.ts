// Scheduler throughput in memory: scheduleAll over a 10,000-host fleet and a
// 50,000-workload stream (bench/scheduler-fleet.ts), no store involved.
// Usage: npm run bench -- scheduler-memory [hosts] [workloads] [seed] [runs]
// Each run schedules the same untouched snapshot (scheduleAll does not change
// it); the figure is the median run, index building included.
import { scheduleAll } from '../coordinator/scheduler/place.js'
import type { Decision, Snapshot } from '../coordinator/scheduler/types.js'
import { buildFleet, buildWorkloads } from '../test/helpers/fleet.js'

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const hosts = Number(args[0] ?? 10_000)
  const workloads = Number(args[1] ?? 50_000)
  const seed = Number(args[2] ?? 1)
  const runs = Number(args[3] ?? 5)
  const fleet = buildFleet(hosts, seed)
  const stream = buildWorkloads(workloads, seed + 1, fleet.pools)
  const times: number[] = []
  let decisions: Decision[] = []
  for (let i = 0; i < runs; i++) {
    const started = process.hrtime.bigint()
    decisions = scheduleAll(stream, fleet)
    times.push(Number(process.hrtime.bigint() - started) / 1e6)
  }
  checkNoDoubleBooking(fleet, decisions)
  // Refusals are cheap once the fleet is full; time the decisions that place on their own too.
  const placing = stream.filter((_, i) => decisions[i]?.reason === null)
  const placingStarted = process.hrtime.bigint()
  scheduleAll(placing, fleet)
  const placingMs = Number(process.hrtime.bigint() - placingStarted) / 1e6
  const sorted = [...times].sort((a, b) => a - b)
  const median = sorted[Math.floor(sorted.length / 2)] as number
  const placed = decisions.filter((d) => d.reason === null).length
  const partial = decisions.filter((d) => d.reason !== null && d.assignments.length > 0).length
  return {
    bench: 'scheduler-memory',
    hosts,
    workloads,
    runs,
    decisions_per_s: Math.round(workloads / (median / 1000)),
    ms_median: Math.round(median),
    placing_decisions_per_s: Math.round(placing.length / (placingMs / 1000)),
    ms_first: Math.round(times[0] as number),
    placed,
    partial,
    pending: workloads - placed,
    gpus_free_before: fleet.hosts.filter((h) => h.schedulable).reduce((n, h) => n + h.free.size, 0),
    gpus_requested: stream.reduce(
      (n, w) =>
        n + w.spec.gpus * (w.spec.kind === 'endpoint' ? w.spec.replicas : w.spec.kind === 'recipe' ? w.spec.hosts : 1),
      0
    ),
    gpus_assigned: decisions.reduce((n, d) => n + d.assignments.reduce((m, a) => m + a.gpus.length, 0), 0),
    node: process.version
  }
}

/** A benchmark of a scheduler that double-books would measure nothing. */
function checkNoDoubleBooking(snapshot: Snapshot, decisions: Decision[]): void {
  const free = new Map(snapshot.hosts.map((h) => [h.id, new Set(h.free)]))
  for (const d of decisions) {
    for (const a of d.assignments) {
      const f = free.get(a.hostId)
      for (const g of a.gpus) {
        if (f?.delete(g) !== true)
          throw new Error(`GPU ${g} of ${a.hostId} assigned twice or not free (${d.workloadId})`)
      }
    }
  }
}
