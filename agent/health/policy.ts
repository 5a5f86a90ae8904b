// The GPU health policy is data: which XIDs fail a GPU, what each condition
// does to it, which clock-event bits mean a slowdown, and how many samples in
// a row a degraded condition needs. Operators override any part of it with a
// JSON file (GPUMESH_HEALTH_POLICY, or --health-policy); docs/health.md has
// the table and the file's format.
import { readFile } from 'node:fs/promises'
import { Type, type Static } from '@sinclair/typebox'
import { ConfigError } from '../../common/config-error.js'
import { Literals } from '../../protocol/schema.js'
import { schemaErrors } from '../../protocol/validate.js'

export const Severity = Literals('failed', 'degraded', 'ignore')
export type Severity = Static<typeof Severity>

/** Conditions read from nvidia-smi; XIDs are handled by their lists. */
export const CONDITIONS = [
  'gpu-missing',
  'ecc-uncorrected',
  'row-remap-failure',
  'row-remap-pending',
  'retired-pages-pending',
  'thermal-slowdown',
  'power-slowdown',
  'hw-slowdown',
  'pcie-degraded',
  'ecc-corrected-rising'
] as const
export type Condition = (typeof CONDITIONS)[number]

const XidList = Type.Array(Type.Integer({ minimum: 1, maximum: 99999 }), { maxItems: 1000 })

export const HealthPolicyFile = Type.Object(
  {
    /** XIDs that fail the GPU until it is reset or an admin clears it. */
    fatalXids: Type.Optional(XidList),
    /** XIDs caused by the application (counted, no health change); documentation more than policy: every XID that is not fatal is only counted. */
    applicationXids: Type.Optional(XidList),
    conditions: Type.Optional(
      Type.Partial(
        Type.Object(Object.fromEntries(CONDITIONS.map((c) => [c, Severity])) as Record<Condition, typeof Severity>),
        {
          additionalProperties: false
        }
      )
    ),
    /** Bit (as hex, e.g. "0x20") of clocks_event_reasons.active -> the condition it raises. */
    clockEventReasons: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^0x[0-9a-fA-F]{1,16}$' }),
        Literals('thermal-slowdown', 'power-slowdown', 'hw-slowdown')
      )
    ),
    /** A degraded condition counts once it held on this many samples in a row, and stops once it was absent as often. */
    hysteresisSamples: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    /** PCIe generation below its max counts only while utilization.gpu is above this (idle GPUs lower their link speed to save power). */
    pcieGenBusyAbovePct: Type.Optional(Type.Number({ minimum: 0, maximum: 100 }))
  },
  { additionalProperties: false }
)
export type HealthPolicyFile = Static<typeof HealthPolicyFile>

export interface HealthPolicy {
  fatalXids: ReadonlySet<number>
  applicationXids: ReadonlySet<number>
  conditions: Readonly<Record<Condition, Severity>>
  clockEventReasons: ReadonlyArray<{ bit: number; condition: Condition }>
  hysteresisSamples: number
  pcieGenBusyAbovePct: number
}

/** The defaults (DESIGN "GPU health and telemetry"; bits as NVML's nvmlClocksEventReason*). */
export const DEFAULT_POLICY = {
  fatalXids: [48, 62, 64, 74, 79, 92, 94, 95, 119, 120],
  applicationXids: [13, 31, 43, 45, 68],
  conditions: {
    'gpu-missing': 'failed',
    'ecc-uncorrected': 'failed',
    'row-remap-failure': 'failed',
    'row-remap-pending': 'failed',
    'retired-pages-pending': 'failed',
    'thermal-slowdown': 'degraded',
    'power-slowdown': 'degraded',
    'hw-slowdown': 'degraded',
    'pcie-degraded': 'degraded',
    'ecc-corrected-rising': 'degraded'
  },
  clockEventReasons: {
    '0x8': 'hw-slowdown',
    '0x20': 'thermal-slowdown',
    '0x40': 'thermal-slowdown',
    '0x80': 'power-slowdown'
  },
  hysteresisSamples: 2,
  pcieGenBusyAbovePct: 0
} satisfies Required<HealthPolicyFile>

/** The defaults with `override` laid over them (lists and maps are replaced, conditions merged one by one). */
export function healthPolicy(override: HealthPolicyFile = {}): HealthPolicy {
  const clock = override.clockEventReasons ?? DEFAULT_POLICY.clockEventReasons
  return {
    fatalXids: new Set(override.fatalXids ?? DEFAULT_POLICY.fatalXids),
    applicationXids: new Set(override.applicationXids ?? DEFAULT_POLICY.applicationXids),
    conditions: { ...DEFAULT_POLICY.conditions, ...override.conditions } as Record<Condition, Severity>,
    clockEventReasons: Object.entries(clock).map(([bit, condition]) => ({
      bit: Number.parseInt(bit.slice(2), 16),
      condition
    })),
    hysteresisSamples: override.hysteresisSamples ?? DEFAULT_POLICY.hysteresisSamples,
    pcieGenBusyAbovePct: override.pcieGenBusyAbovePct ?? DEFAULT_POLICY.pcieGenBusyAbovePct
  }
}

/** The policy from a JSON file (unset: the defaults); a file that cannot be used is a ConfigError naming what is wrong. */
export async function loadHealthPolicy(file: string | undefined): Promise<HealthPolicy> {
  if (file === undefined || file === '') return healthPolicy()
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new ConfigError(
      `cannot read the GPU health policy ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      {
        code: 'ERR_HEALTH_POLICY',
        cause: err
      }
    )
  }
  const errors = schemaErrors(HealthPolicyFile, parsed)
  if (errors.length > 0)
    throw new ConfigError(`the GPU health policy ${file} is not valid: ${errors.join('; ')}`, {
      code: 'ERR_HEALTH_POLICY'
    })
  return healthPolicy(parsed as HealthPolicyFile)
}
