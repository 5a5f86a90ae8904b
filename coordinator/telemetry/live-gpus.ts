// Every host's GPU table as its agent last reported it (DESIGN "GPU health
// and telemetry"): the heartbeat carries a TelemetryDelta, and this is where
// the deltas are folded back into whole tables. In memory only, per
// coordinator: a new control session starts with a full table, so nothing
// here has to survive a restart. Health that must outlive it is stored in
// PostgreSQL by whoever listens to onChange.
import type { GpuTelemetry, TelemetryDelta } from '../../protocol/telemetry.js'

/** What one delta changed on one host: the GPUs' tables before and after (null: absent). */
export interface GpuChange {
  hostId: string
  index: number
  before: GpuTelemetry | null
  after: GpuTelemetry | null
}

/** The GPU tables of the hosts whose agents hold a session on this coordinator now. */
export type LiveTelemetry = () => Iterable<[hostId: string, gpus: GpuTelemetry[]]>

export type GpuChangeListener = (changes: readonly GpuChange[]) => void

/** Folds `delta` into `table` (index → GPU); returns what changed. A partial change for an unknown GPU is dropped. */
export function applyTelemetryDelta(
  table: Map<number, GpuTelemetry>,
  delta: TelemetryDelta
): Array<{ index: number; before: GpuTelemetry | null; after: GpuTelemetry | null }> {
  const changes: Array<{ index: number; before: GpuTelemetry | null; after: GpuTelemetry | null }> = []
  if (delta.full) {
    const present = new Set(delta.gpus.map((g) => g.index))
    for (const [index, before] of table)
      if (!present.has(index)) {
        table.delete(index)
        changes.push({ index, before, after: null })
      }
  }
  for (const change of delta.gpus) {
    const before = table.get(change.index) ?? null
    const base = delta.full ? null : before
    const merged = { ...(base ?? {}), ...change } as Partial<GpuTelemetry>
    if (!isWhole(merged)) continue
    table.set(change.index, merged)
    changes.push({ index: change.index, before, after: merged })
  }
  for (const index of delta.removed ?? []) {
    const before = table.get(index)
    if (before === undefined) continue
    table.delete(index)
    changes.push({ index, before, after: null })
  }
  return changes
}

const isWhole = (g: Partial<GpuTelemetry>): g is GpuTelemetry =>
  g.index !== undefined &&
  g.uuid !== undefined &&
  g.pciBusId !== undefined &&
  g.health !== undefined &&
  g.usage !== undefined &&
  g.xids !== undefined

export class LiveGpus {
  private readonly hosts = new Map<string, Map<number, GpuTelemetry>>()
  private readonly listeners = new Set<GpuChangeListener>()

  /** Applies one host's delta and tells the listeners what changed. */
  apply(hostId: string, delta: TelemetryDelta): readonly GpuChange[] {
    let table = this.hosts.get(hostId)
    if (table === undefined) {
      table = new Map()
      this.hosts.set(hostId, table)
    }
    const changes = applyTelemetryDelta(table, delta).map((c) => ({ hostId, ...c }))
    if (changes.length > 0) for (const l of this.listeners) l(changes)
    return changes
  }

  /** One host's GPUs, by index; empty when it never reported. */
  gpus(hostId: string): GpuTelemetry[] {
    return [...(this.hosts.get(hostId)?.values() ?? [])].sort((a, b) => a.index - b.index)
  }

  /** Every host that reported, with its GPUs. */
  *all(): Iterable<[hostId: string, gpus: GpuTelemetry[]]> {
    for (const hostId of this.hosts.keys()) yield [hostId, this.gpus(hostId)]
  }

  /** A host removed from the cluster (or forgotten): its table goes. Usage of a host that is merely down is kept until its next full report. */
  forget(hostId: string): void {
    this.hosts.delete(hostId)
  }

  onChange(listener: GpuChangeListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}
