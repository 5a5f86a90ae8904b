// The agent's GPU health and telemetry: the nvidia-smi sampler, the row-remap
// poller and the kernel-message follower feed one HealthTracker, and admin
// clears are kept in the state directory. current() answers as the old
// per-call UsageSampler did (GpuUsage[] for the heartbeat); snapshot() and
// delta() give the whole table and what changed since the last report.
import { CodedError } from '../../common/coded-error.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { GpuUsage } from '../../protocol/control.js'
import type { GpuHealth, GpuTelemetry, TelemetryDelta } from '../../protocol/telemetry.js'
import type { GpuSample } from '../telemetry/gpu-sample.js'
import { DEFAULT_TELEMETRY_PERIOD_MS, GpuSampler } from '../telemetry/gpu-sampler.js'
import { type KernelRecord, KernelLog } from '../telemetry/kernel-log.js'
import { RemappedRowsPoller } from '../telemetry/remapped-rows.js'
import { parseXid, type XidEvent } from '../telemetry/xid.js'
import { bootId } from '../runtime/proc.js'
import { ClearMarks } from './clear-marks.js'
import { telemetryDelta } from './delta.js'
import { type HealthPolicy, healthPolicy } from './policy.js'
import { type ClearMark, HealthTracker } from './tracker.js'

export class GpuHealthError extends CodedError<'ERR_GPU_UNKNOWN'> {}

export interface GpuMonitorOptions {
  /** nvidia-smi; null on a host without one, or a simulated one: then nothing is watched at all. */
  binary: string | null
  env?: NodeJS.ProcessEnv
  stateDir: string
  /** GPUMESH_KMSG; default /dev/kmsg. */
  kmsgPath?: string
  kmsgPollMs?: number
  periodMs?: number
  remappedEveryMs?: number
  policy?: HealthPolicy
  /** The host's GPUs from its facts: known before the first sample, so a GPU absent from it is missing. */
  gpus?: () => ReadonlyArray<{ index: number; uuid?: string | null; pciBusId?: string | null }>
  /** Called with the GPUs whose health changed (a heartbeat may go out at once). */
  onHealthChange?: (indices: number[]) => void
  log?: Logger
}

/** XIDs for a bus no GPU has (yet) are kept for a later sample, up to this many. */
const UNMAPPED_MAX = 1000

export class GpuMonitor implements Startable {
  private readonly marks = new Map<string, ClearMark>()
  private readonly tracker: HealthTracker
  private readonly kernel: KernelLog
  private readonly sampler: GpuSampler | null
  private readonly remapped: RemappedRowsPoller | null
  private clearMarks: ClearMarks | null = null
  private unmapped: Array<XidEvent & { seq: number }> = []
  private readonly warned: string[] = []
  private reported: GpuTelemetry[] | null = null
  private reportedWarnings = 0

  constructor(private readonly o: GpuMonitorOptions) {
    this.tracker = new HealthTracker(o.policy ?? healthPolicy(), this.marks)
    const warn = (w: string) => this.warn(w)
    this.kernel = new KernelLog({
      ...(o.kmsgPath === undefined ? {} : { path: o.kmsgPath }),
      ...(o.kmsgPollMs === undefined ? {} : { pollMs: o.kmsgPollMs }),
      onRecord: (r) => this.onKernelRecord(r),
      onWarning: warn,
      ...(o.log === undefined ? {} : { log: o.log })
    })
    const smi = { ...(o.env === undefined ? {} : { env: o.env }), ...(o.log === undefined ? {} : { log: o.log }) }
    this.sampler =
      o.binary === null
        ? null
        : new GpuSampler({
            binary: o.binary,
            periodMs: o.periodMs ?? DEFAULT_TELEMETRY_PERIOD_MS,
            expectedGpus: () => o.gpus?.().length ?? 0,
            onBlock: (b) => this.onBlock(b),
            onWarning: warn,
            ...smi
          })
    this.remapped =
      o.binary === null
        ? null
        : new RemappedRowsPoller({
            binary: o.binary,
            ...(o.remappedEveryMs === undefined ? {} : { everyMs: o.remappedEveryMs }),
            onRows: (rows) => this.changed(this.tracker.observeRemapped(rows)),
            onWarning: warn,
            ...smi
          })
  }

  /** Reads this boot's kernel messages before sampling starts, so a fatal XID already logged fails its GPU from the first sample. */
  async start(): Promise<void> {
    this.clearMarks = await ClearMarks.load(this.o.stateDir, bootId() ?? 'unknown')
    for (const [bus, m] of this.clearMarks.marks) this.marks.set(bus, m)
    for (const g of this.o.gpus?.() ?? []) this.tracker.know(g.index, g)
    if (this.o.binary === null) return
    await this.kernel.start()
    this.sampler?.start()
    this.remapped?.start()
  }

  async stop(): Promise<void> {
    await this.remapped?.stop()
    await this.sampler?.stop()
    await this.kernel.stop()
  }

  /** As the heartbeat's GpuUsage[] (the per-call UsageSampler's answer). */
  current(): GpuUsage[] {
    return this.tracker.snapshot().map((g) => ({
      index: g.index,
      utilizationPct: g.usage?.utilizationPct ?? null,
      memoryUsedMiB: g.usage?.memoryUsedMiB ?? null
    }))
  }

  snapshot(): GpuTelemetry[] {
    return this.tracker.snapshot()
  }

  /** What changed since the last delta() (the first: the whole table); null when nothing did. */
  delta(): TelemetryDelta | null {
    const now = this.tracker.snapshot()
    const d = telemetryDelta(this.reported, now, this.warned.slice(this.reportedWarnings))
    this.reported = now
    this.reportedWarnings = this.warned.length
    return d
  }

  /** The next delta() is the whole table again (a new control session). */
  resetReport(): void {
    this.reported = null
    this.reportedWarnings = 0
  }

  /** Warnings so far, each once (a field the driver does not know, kernel messages not readable...). */
  warnings(): readonly string[] {
    return this.warned
  }

  /** The nvidia-smi loop's pid while one runs. */
  get samplerPid(): number | null {
    return this.sampler?.pid ?? null
  }

  /** The fields the sampler asks for now. */
  get sampledFields(): readonly string[] {
    return this.sampler?.asked ?? []
  }

  /**
   * An admin's clear (the coordinator's clear-health): XIDs logged so far and
   * the uncorrected ECC count now stop failing the GPU, also after an agent
   * restart in this boot. Returns the GPU's health after it.
   */
  async clearHealth(index: number): Promise<GpuHealth> {
    const cleared = this.tracker.clear(index, this.kernel.lastSeq)
    if (cleared === null) throw new GpuHealthError('ERR_GPU_UNKNOWN', `this host has no GPU ${index}`)
    if (cleared.bus !== null) await this.clearMarks?.save(cleared.bus, cleared.mark)
    this.o.log?.warn({ gpu: index, health: cleared.health }, 'GPU health cleared by an admin')
    this.changed([index])
    return cleared.health
  }

  private warn(warning: string): void {
    if (!this.warned.includes(warning)) this.warned.push(warning)
  }

  private changed(indices: number[]): void {
    if (indices.length > 0) this.o.onHealthChange?.(indices)
  }

  private onBlock(samples: GpuSample[]): void {
    const changed = this.tracker.observeBlock(samples)
    if (this.unmapped.length > 0) {
      const waiting = this.unmapped
      this.unmapped = []
      for (const x of waiting) this.onXid(x, changed)
    }
    this.changed([...new Set(changed)])
  }

  private onKernelRecord(r: KernelRecord): void {
    const x = parseXid(r.message)
    if (x === null) return
    const changed: number[] = []
    this.onXid({ ...x, seq: r.seq }, changed)
    this.changed(changed)
  }

  private onXid(x: XidEvent & { seq: number }, changed: number[]): void {
    const seen = this.tracker.observeXid(x)
    if (seen === null) {
      if (this.unmapped.length < UNMAPPED_MAX) this.unmapped.push(x)
      return
    }
    this.o.log?.warn({ gpu: seen.index, xid: x.code, seq: x.seq, detail: x.detail.slice(0, 200) }, 'GPU XID')
    if (seen.changed) changed.push(seen.index)
  }
}
