// What changed since the last report: the heartbeat carries this instead of
// the whole table. Usage counts as changed when a value changed, not its
// timestamp, so an idle GPU costs nothing after the first report.
import { isDeepStrictEqual } from 'node:util'
import type { GpuLiveUsage, GpuTelemetry, GpuTelemetryChange, TelemetryDelta } from '../../protocol/telemetry.js'

const sameUsage = (a: GpuLiveUsage | null, b: GpuLiveUsage | null): boolean =>
  a === null || b === null ? a === b : isDeepStrictEqual({ ...a, at: '' }, { ...b, at: '' })

/**
 * The delta from `before` (what the receiver has; null: nothing, so the
 * whole table) to `now`; null when nothing changed and there is no new warning.
 */
export function telemetryDelta(
  before: readonly GpuTelemetry[] | null,
  now: readonly GpuTelemetry[],
  newWarnings: readonly string[] = []
): TelemetryDelta | null {
  const warnings = newWarnings.length > 0 ? { warnings: [...newWarnings] } : {}
  if (before === null) return { full: true, gpus: now.map((g) => ({ ...g })), ...warnings }
  const had = new Map(before.map((g) => [g.index, g]))
  const gpus: GpuTelemetryChange[] = []
  for (const g of now) {
    const b = had.get(g.index)
    if (b === undefined) {
      gpus.push({ ...g })
      continue
    }
    const change: GpuTelemetryChange = { index: g.index }
    if (g.uuid !== b.uuid) change.uuid = g.uuid
    if (g.pciBusId !== b.pciBusId) change.pciBusId = g.pciBusId
    if (!isDeepStrictEqual(g.health, b.health)) change.health = g.health
    if (!sameUsage(g.usage, b.usage)) change.usage = g.usage
    if (!isDeepStrictEqual(g.xids, b.xids)) change.xids = g.xids
    if (Object.keys(change).length > 1) gpus.push(change)
  }
  const present = new Set(now.map((g) => g.index))
  const removed = before.map((g) => g.index).filter((i) => !present.has(i))
  if (gpus.length === 0 && removed.length === 0 && newWarnings.length === 0) return null
  return { full: false, gpus, ...(removed.length > 0 ? { removed } : {}), ...warnings }
}
