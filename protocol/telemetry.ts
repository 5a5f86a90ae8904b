// Per-GPU health and live usage, as the agent reports them (DESIGN "GPU
// health and telemetry"). The heartbeat will carry a TelemetryDelta: only the
// GPUs whose health, usage or XID counts changed since the last report, so an
// idle 8-GPU host sends next to nothing each second.
import { Type, type Static } from '@sinclair/typebox'
import { Literals, Nullable } from './schema.js'

export const GpuHealthState = Literals('healthy', 'degraded', 'failed')

/** Reasons are short kebab-case words: xid-79, ecc-uncorrected, thermal-slowdown, gpu-missing, ... */
export const GpuHealthReason = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,63}$' })

export const GpuHealth = Type.Object(
  {
    state: GpuHealthState,
    /** Every condition that holds now, the failing ones first. */
    reasons: Type.Array(GpuHealthReason, { maxItems: 32 }),
    /** When the state last changed (a new reason with the same state keeps it). */
    since: Type.String({ format: 'date-time' })
  },
  { additionalProperties: false }
)

export const GpuLiveUsage = Type.Object(
  {
    utilizationPct: Nullable(Type.Number({ minimum: 0, maximum: 100 })),
    memoryUsedMiB: Nullable(Type.Integer({ minimum: 0 })),
    temperatureC: Nullable(Type.Number()),
    powerW: Nullable(Type.Number({ minimum: 0 })),
    /** When nvidia-smi printed these values. */
    at: Type.String({ format: 'date-time' })
  },
  { additionalProperties: false }
)

/** XIDs the kernel logged for the GPU since the agent started (this boot): all of them, fatal or not. */
export const GpuXids = Type.Object(
  {
    last: Nullable(Type.Integer({ minimum: 0 })),
    counts: Type.Record(Type.String({ pattern: '^[0-9]{1,5}$' }), Type.Integer({ minimum: 0 }))
  },
  { additionalProperties: false }
)

export const GpuTelemetry = Type.Object(
  {
    index: Type.Integer({ minimum: 0 }),
    uuid: Nullable(Type.String({ maxLength: 128 })),
    /** As nvidia-smi prints it (00000000:18:00.0). */
    pciBusId: Nullable(Type.String({ maxLength: 32 })),
    health: GpuHealth,
    /** null until the first sample, and while the GPU is missing. */
    usage: Nullable(GpuLiveUsage),
    xids: GpuXids
  },
  { additionalProperties: false }
)

/** One GPU's changes: index always, and only the parts that changed. */
export const GpuTelemetryChange = Type.Object(
  {
    index: Type.Integer({ minimum: 0 }),
    uuid: Type.Optional(Nullable(Type.String({ maxLength: 128 }))),
    pciBusId: Type.Optional(Nullable(Type.String({ maxLength: 32 }))),
    health: Type.Optional(GpuHealth),
    usage: Type.Optional(Nullable(GpuLiveUsage)),
    xids: Type.Optional(GpuXids)
  },
  { additionalProperties: false }
)

export const TelemetryDelta = Type.Object(
  {
    /** true: this is the whole table (the first report of a session); the receiver replaces what it had. */
    full: Type.Boolean(),
    gpus: Type.Array(GpuTelemetryChange, { maxItems: 256 }),
    /** GPU indices no longer reported at all (the host's GPUs changed). */
    removed: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 256 })),
    /** Said once each: e.g. a field this driver's nvidia-smi does not know. */
    warnings: Type.Optional(Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 }))
  },
  { additionalProperties: false }
)

export type GpuHealthState = Static<typeof GpuHealthState>
export type GpuHealth = Static<typeof GpuHealth>
export type GpuLiveUsage = Static<typeof GpuLiveUsage>
export type GpuXids = Static<typeof GpuXids>
export type GpuTelemetry = Static<typeof GpuTelemetry>
export type GpuTelemetryChange = Static<typeof GpuTelemetryChange>
export type TelemetryDelta = Static<typeof TelemetryDelta>
