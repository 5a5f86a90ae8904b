// Per-GPU health from what the sources saw, by the policy: pure state, no
// I/O (the monitor feeds it and persists admin clears). A condition of
// severity `failed` counts from the sample that shows it until the one that
// does not; a `degraded` one needs `hysteresisSamples` samples in a row to
// count and as many without it to stop. Fatal XIDs stay until the GPU is
// seen reset (it went missing and came back, or its volatile ECC counters
// went down: both reset with the GPU or the driver) or an admin clears it.
import type { GpuHealth, GpuHealthState, GpuLiveUsage, GpuTelemetry } from '../../protocol/telemetry.js'
import type { GpuSample } from '../telemetry/gpu-sample.js'
import type { RemappedRows } from '../telemetry/remapped-rows.js'
import { busKey, type XidEvent } from '../telemetry/xid.js'
import { CONDITIONS, type Condition, type HealthPolicy } from './policy.js'

/** What an admin clear leaves behind, per GPU bus: XIDs up to `seq` (this boot) and uncorrected ECC up to `eccUncorrected` no longer fail it. */
export interface ClearMark {
  seq: number
  eccUncorrected: number
}

interface Streak {
  on: number
  off: number
  active: boolean
}

interface GpuRecord {
  index: number
  uuid: string | null
  pciBusId: string | null
  bus: string | null
  present: boolean
  sample: GpuSample | null
  remap: RemappedRows | null
  /** Fatal XIDs in force: code -> kernel sequence number. */
  fatal: Map<number, number>
  xidLast: number | null
  xidCounts: Record<string, number>
  eccBaseline: number
  streaks: Map<Condition, Streak>
  state: GpuHealthState
  reasons: string[]
  since: number
}

export class HealthTracker {
  private readonly gpus = new Map<number, GpuRecord>()

  constructor(
    private readonly policy: HealthPolicy,
    private readonly marks: Map<string, ClearMark> = new Map(),
    private readonly now: () => number = Date.now
  ) {}

  /** A GPU the host has (from its facts), before any sample. */
  know(index: number, ids: { uuid?: string | null; pciBusId?: string | null } = {}): void {
    const r = this.record(index)
    if (ids.uuid !== undefined && ids.uuid !== null) r.uuid = ids.uuid
    if (ids.pciBusId !== undefined && ids.pciBusId !== null) this.setBus(r, ids.pciBusId)
  }

  /** One period's samples; a GPU known before and absent here is missing. Returns the indices whose health changed. */
  observeBlock(samples: readonly GpuSample[]): number[] {
    const changed: number[] = []
    const seen = new Map(samples.map((s) => [s.index, s]))
    for (const index of new Set([...this.gpus.keys(), ...seen.keys()])) {
      const r = this.record(index)
      const s = seen.get(index) ?? null
      if (s !== null) {
        if (s.uuid !== null) r.uuid = s.uuid
        if (s.pciBusId !== null) this.setBus(r, s.pciBusId)
        if (this.wasReset(r, s)) {
          r.fatal.clear()
          r.eccBaseline = 0
        }
      }
      const previous = r.sample
      r.present = s !== null
      if (s !== null) r.sample = s
      const raw = this.conditions(r, s === null ? null : previous)
      for (const c of CONDITIONS) {
        if (this.policy.conditions[c] !== 'degraded') continue
        const st = r.streaks.get(c) ?? { on: 0, off: 0, active: false }
        if (raw.has(c)) {
          st.on++
          st.off = 0
        } else {
          st.off++
          st.on = 0
        }
        if (st.on >= this.policy.hysteresisSamples) st.active = true
        if (st.off >= this.policy.hysteresisSamples) st.active = false
        r.streaks.set(c, st)
      }
      if (this.settle(r, raw)) changed.push(index)
    }
    return changed
  }

  observeRemapped(rows: readonly RemappedRows[]): number[] {
    const changed: number[] = []
    for (const row of rows) {
      const r = this.byBus(row.bus)
      if (r === undefined) continue
      r.remap = row
      if (this.settle(r, this.conditions(r, null, true))) changed.push(r.index)
    }
    return changed
  }

  /** An XID from the kernel; null when no known GPU has its bus (yet). Otherwise the GPU's index and whether its health changed. */
  observeXid(event: XidEvent & { seq: number }): { index: number; changed: boolean } | null {
    const r = this.byBus(event.bus)
    if (r === undefined) return null
    r.xidLast = event.code
    r.xidCounts[String(event.code)] = (r.xidCounts[String(event.code)] ?? 0) + 1
    const mark = this.marks.get(event.bus)
    if (this.policy.fatalXids.has(event.code) && !(mark !== undefined && event.seq <= mark.seq))
      r.fatal.set(event.code, event.seq)
    return { index: r.index, changed: this.settle(r, this.conditions(r, null, true)) }
  }

  /**
   * An admin's clear: fatal XIDs up to kernel sequence `seq` and the
   * uncorrected ECC count seen now stop failing the GPU. A condition that
   * still holds (a pending remap, a missing GPU) fails it again at once.
   */
  clear(index: number, seq: number): { health: GpuHealth; bus: string | null; mark: ClearMark } | null {
    const r = this.gpus.get(index)
    if (r === undefined) return null
    r.fatal.clear()
    r.eccBaseline = r.sample?.eccUncorrectedVolatile ?? 0
    r.streaks.clear()
    const mark = { seq, eccUncorrected: r.eccBaseline }
    if (r.bus !== null) this.marks.set(r.bus, mark)
    this.settle(r, this.conditions(r, null, true))
    return { health: this.health(r), bus: r.bus, mark }
  }

  indices(): number[] {
    return [...this.gpus.keys()].sort((a, b) => a - b)
  }

  snapshot(): GpuTelemetry[] {
    return this.indices().map((i) => {
      const r = this.gpus.get(i) as GpuRecord
      return {
        index: r.index,
        uuid: r.uuid,
        pciBusId: r.pciBusId,
        health: this.health(r),
        usage: this.usage(r),
        xids: { last: r.xidLast, counts: { ...r.xidCounts } }
      }
    })
  }

  private health(r: GpuRecord): GpuHealth {
    return { state: r.state, reasons: [...r.reasons], since: new Date(r.since).toISOString() }
  }

  private usage(r: GpuRecord): GpuLiveUsage | null {
    const s = r.sample
    if (!r.present || s === null) return null
    return {
      utilizationPct: s.utilizationPct === null ? null : Math.min(100, Math.max(0, s.utilizationPct)),
      memoryUsedMiB: s.memoryUsedMiB === null ? null : Math.max(0, Math.round(s.memoryUsedMiB)),
      temperatureC: s.temperatureC,
      powerW: s.powerW === null ? null : Math.max(0, s.powerW),
      at: new Date(s.at).toISOString()
    }
  }

  private record(index: number): GpuRecord {
    let r = this.gpus.get(index)
    if (r === undefined) {
      r = {
        index,
        uuid: null,
        pciBusId: null,
        bus: null,
        present: true,
        sample: null,
        remap: null,
        fatal: new Map(),
        xidLast: null,
        xidCounts: {},
        eccBaseline: 0,
        streaks: new Map(),
        state: 'healthy',
        reasons: [],
        since: this.now()
      }
      this.gpus.set(index, r)
    }
    return r
  }

  private setBus(r: GpuRecord, pciBusId: string): void {
    const bus = busKey(pciBusId)
    r.pciBusId = pciBusId
    if (bus === null || bus === r.bus) return
    r.bus = bus
    r.eccBaseline = Math.max(r.eccBaseline, this.marks.get(bus)?.eccUncorrected ?? 0)
  }

  private byBus(bus: string): GpuRecord | undefined {
    for (const r of this.gpus.values()) if (r.bus === bus) return r
    return undefined
  }

  /** A reset shows as the GPU coming back after it was missing, or as a volatile ECC counter going down. */
  private wasReset(r: GpuRecord, s: GpuSample): boolean {
    if (!r.present) return true
    const down = (now: number | null, before: number | null | undefined) =>
      now !== null && before !== null && before !== undefined && now < before
    return (
      down(s.eccUncorrectedVolatile, r.sample?.eccUncorrectedVolatile) ||
      down(s.eccCorrectedVolatile, r.sample?.eccCorrectedVolatile)
    )
  }

  /**
   * The conditions that hold now. `previous` is the sample before this one
   * (for rising counts); `keep`: not a new sample, so only the conditions
   * that fail at once are looked at (the degraded ones keep their streaks).
   */
  private conditions(r: GpuRecord, previous: GpuSample | null, keep = false): Set<Condition> {
    const raw = new Set<Condition>()
    if (!r.present) {
      raw.add('gpu-missing')
      return raw
    }
    const s = r.sample
    if (r.remap?.failure === true) raw.add('row-remap-failure')
    if (r.remap?.pending === true) raw.add('row-remap-pending')
    if (s === null) return raw
    if (s.eccUncorrectedVolatile !== null && s.eccUncorrectedVolatile > r.eccBaseline) raw.add('ecc-uncorrected')
    if (s.retiredPagesPending === true) raw.add('retired-pages-pending')
    if (keep) return raw
    if (s.clockEventReasons !== null)
      for (const { bit, condition } of this.policy.clockEventReasons)
        if ((s.clockEventReasons & bit) !== 0) raw.add(condition)
    const below = (now: number | null, max: number | null) => now !== null && max !== null && now < max
    if (
      below(s.pcieWidthCurrent, s.pcieWidthMax) ||
      (below(s.pcieGenCurrent, s.pcieGenMax) && (s.utilizationPct ?? 0) > this.policy.pcieGenBusyAbovePct)
    )
      raw.add('pcie-degraded')
    const before = previous?.eccCorrectedVolatile
    if (s.eccCorrectedVolatile !== null && before !== null && before !== undefined && s.eccCorrectedVolatile > before)
      raw.add('ecc-corrected-rising')
    return raw
  }

  /** Recomputes reasons and state; true when the health changed. */
  private settle(r: GpuRecord, raw: Set<Condition>): boolean {
    const failing: string[] = [...r.fatal.keys()].sort((a, b) => a - b).map((c) => `xid-${c}`)
    const degrading: string[] = []
    for (const c of CONDITIONS) {
      const severity = this.policy.conditions[c]
      if (severity === 'failed' && raw.has(c)) failing.push(c)
      if (severity === 'degraded' && r.streaks.get(c)?.active === true) degrading.push(c)
    }
    const state: GpuHealthState = failing.length > 0 ? 'failed' : degrading.length > 0 ? 'degraded' : 'healthy'
    const reasons = [...failing, ...degrading]
    const changed = state !== r.state || reasons.join() !== r.reasons.join()
    if (state !== r.state) r.since = this.now()
    r.state = state
    r.reasons = reasons
    return changed
  }
}
