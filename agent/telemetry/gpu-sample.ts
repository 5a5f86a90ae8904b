// One GPU's values from one period of `nvidia-smi --query-gpu=<fields>
// --format=csv,noheader,nounits`. The field list is not fixed: a driver that
// does not know a field makes the whole call fail, so the sampler drops it
// and the values it would have carried stay null.
import { present } from '../detect/nvidia/text.js'

export interface GpuSample {
  index: number
  uuid: string | null
  pciBusId: string | null
  utilizationPct: number | null
  memoryUtilizationPct: number | null
  memoryUsedMiB: number | null
  memoryTotalMiB: number | null
  temperatureC: number | null
  powerW: number | null
  /** Bit mask of clock event (throttle) reasons, as NVML defines the bits. */
  clockEventReasons: number | null
  eccUncorrectedVolatile: number | null
  eccCorrectedVolatile: number | null
  retiredPagesPending: boolean | null
  pcieGenCurrent: number | null
  pcieGenMax: number | null
  pcieWidthCurrent: number | null
  pcieWidthMax: number | null
  /** When the line was read (ms since the epoch). */
  at: number
}

type Kind = 'int' | 'number' | 'mask' | 'flag' | 'text'
type Key = Exclude<keyof GpuSample, 'index' | 'at'>

/** What the sampler asks for, in this order, and where each lands. */
export const SAMPLE_FIELDS: ReadonlyArray<{ field: string; key: Key | 'index'; kind: Kind }> = [
  { field: 'index', key: 'index', kind: 'int' },
  { field: 'uuid', key: 'uuid', kind: 'text' },
  { field: 'pci.bus_id', key: 'pciBusId', kind: 'text' },
  { field: 'utilization.gpu', key: 'utilizationPct', kind: 'number' },
  { field: 'utilization.memory', key: 'memoryUtilizationPct', kind: 'number' },
  { field: 'memory.used', key: 'memoryUsedMiB', kind: 'number' },
  { field: 'memory.total', key: 'memoryTotalMiB', kind: 'number' },
  { field: 'temperature.gpu', key: 'temperatureC', kind: 'number' },
  { field: 'power.draw', key: 'powerW', kind: 'number' },
  { field: 'clocks_event_reasons.active', key: 'clockEventReasons', kind: 'mask' },
  { field: 'ecc.errors.uncorrected.volatile.total', key: 'eccUncorrectedVolatile', kind: 'int' },
  { field: 'ecc.errors.corrected.volatile.total', key: 'eccCorrectedVolatile', kind: 'int' },
  { field: 'retired_pages.pending', key: 'retiredPagesPending', kind: 'flag' },
  { field: 'pcie.link.gen.current', key: 'pcieGenCurrent', kind: 'int' },
  { field: 'pcie.link.gen.max', key: 'pcieGenMax', kind: 'int' },
  { field: 'pcie.link.width.current', key: 'pcieWidthCurrent', kind: 'int' },
  { field: 'pcie.link.width.max', key: 'pcieWidthMax', kind: 'int' }
]

/** The name a field had before the driver renamed it (R535 renamed the throttle reasons to clock event reasons). */
export const OLDER_NAME: Readonly<Record<string, string>> = {
  'clocks_event_reasons.active': 'clocks_throttle_reasons.active'
}

const BY_FIELD = new Map(SAMPLE_FIELDS.map((f) => [f.field, f]))
for (const [now, before] of Object.entries(OLDER_NAME)) {
  const f = BY_FIELD.get(now)
  if (f !== undefined) BY_FIELD.set(before, { ...f, field: before })
}

/** One cell: null for `[N/A]`, `[Not Supported]` and friends, or when it does not read as its kind. */
export function cell(text: string | undefined, kind: Kind): string | number | boolean | null {
  const t = present(text)
  if (t === null) return null
  switch (kind) {
    case 'text':
      return t
    case 'flag':
      // retired_pages.pending prints Yes/No; the remapped-rows query 0/1 in some drivers.
      return /^(yes|1|true)$/i.test(t) ? true : /^(no|0|false)$/i.test(t) ? false : null
    case 'mask': {
      if (!/^(0x)?[0-9a-f]+$/i.test(t)) return null
      const n = Number.parseInt(t.replace(/^0x/i, ''), 16)
      return Number.isFinite(n) ? n : null
    }
    default: {
      // Units are tolerated (a capture without nounits): "1024 MiB", "69.85 W", "35 %".
      const m = /^(-?\d+(?:\.\d+)?)\s*(?:MiB|W|%|C|MHz)?$/.exec(t)
      if (m === null) return null
      const n = Number(m[1])
      return kind === 'int' ? Math.round(n) : n
    }
  }
}

function emptySample(index: number, at: number): GpuSample {
  return {
    index,
    uuid: null,
    pciBusId: null,
    utilizationPct: null,
    memoryUtilizationPct: null,
    memoryUsedMiB: null,
    memoryTotalMiB: null,
    temperatureC: null,
    powerW: null,
    clockEventReasons: null,
    eccUncorrectedVolatile: null,
    eccCorrectedVolatile: null,
    retiredPagesPending: null,
    pcieGenCurrent: null,
    pcieGenMax: null,
    pcieWidthCurrent: null,
    pcieWidthMax: null,
    at
  }
}

/**
 * One output line for `fields` (in the order they were asked); null when the
 * line is not a sample (a header, an error message, a torn line).
 */
export function parseSampleLine(line: string, fields: readonly string[], at: number): GpuSample | null {
  const cells = line.split(',').map((c) => c.trim())
  if (cells.length !== fields.length) return null
  const indexAt = fields.indexOf('index')
  const index = indexAt < 0 ? null : cells[indexAt]
  if (index === undefined || index === null || !/^\d+$/.test(index)) return null
  const sample = emptySample(Number(index), at)
  const values = sample as unknown as Record<string, unknown>
  fields.forEach((field, i) => {
    const f = BY_FIELD.get(field)
    if (f === undefined || f.key === 'index') return
    values[f.key] = cell(cells[i], f.kind)
  })
  return sample
}
