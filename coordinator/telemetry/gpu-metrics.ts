// Per-GPU series on /metrics, named and labelled as NVIDIA's dcgm-exporter
// names them (DESIGN "GPU health and telemetry"), so dashboards and alerts
// written for dcgm-exporter work on gpumesh unchanged; plus gpumesh's own
// health and XID series with the same labels (less modelName, whose camelCase
// only the DCGM names keep, for compatibility). Built at scrape time from the
// GPU tables of the agents with a session on THIS coordinator (another
// coordinator reports its own; a host whose session ended or that was
// revoked has no series) and the hosts' facts in PostgreSQL (name, pool,
// model, memory total).
import client from 'prom-client'
import type { Gpu } from '../../protocol/host-facts.js'
import { GpuHealthState, type GpuTelemetry } from '../../protocol/telemetry.js'
import type { Pool } from '../store/db.js'
import type { LiveTelemetry } from './live-gpus.js'

/** dcgm-exporter's labels (less MIG's), and the pool. */
export interface GpuLabels {
  gpu: string
  UUID: string
  pci_bus_id: string
  device: string
  modelName: string
  Hostname: string
  pool: string
}

export interface GpuSample {
  labels: GpuLabels
  gpu: GpuTelemetry
  /** From the host's facts (nvidia-smi memory.total when the agent detected it). */
  memoryTotalMiB: number | null
}

const HEALTH_STATES = GpuHealthState.anyOf.map((s) => s.const)

/** Names dashboards and alerts may query; test/grafana-dashboard checks the shipped dashboard against them. */
export const GPU_METRIC_NAMES = [
  'DCGM_FI_DEV_GPU_UTIL',
  'DCGM_FI_DEV_FB_USED',
  'DCGM_FI_DEV_FB_FREE',
  'DCGM_FI_DEV_GPU_TEMP',
  'DCGM_FI_DEV_POWER_USAGE',
  'DCGM_FI_DEV_XID_ERRORS',
  'gpumesh_gpu_health',
  'gpumesh_gpu_xid_total'
] as const

/** Joins live GPU tables with the hosts' rows: one sample per GPU of a live (not revoked) host. */
export async function gpuSamples(pool: Pool, live: LiveTelemetry): Promise<GpuSample[]> {
  const tables = new Map([...live()].filter(([, gpus]) => gpus.length > 0))
  if (tables.size === 0) return []
  const { rows } = await pool.query<{ id: string; name: string; pool: string; gpus: Gpu[] | null }>(
    `select id, name, pool_key as pool, facts->'gpus' as gpus from hosts where id = any($1::uuid[]) and revoked_at is null`,
    [[...tables.keys()]]
  )
  const samples: GpuSample[] = []
  for (const host of rows) {
    const facts = new Map((host.gpus ?? []).map((g) => [g.index, g]))
    for (const gpu of tables.get(host.id) ?? []) {
      const fact = facts.get(gpu.index)
      samples.push({
        labels: {
          gpu: String(gpu.index),
          UUID: gpu.uuid ?? fact?.uuid ?? '',
          pci_bus_id: gpu.pciBusId ?? fact?.pciBusId ?? '',
          device: `nvidia${gpu.index}`,
          modelName: fact?.name ?? '',
          Hostname: host.name,
          pool: host.pool
        },
        gpu,
        memoryTotalMiB: fact?.memoryMiB ?? null
      })
    }
  }
  return samples
}

/** `f`'s promise shared by the calls made while it is in flight: the collectors of one scrape run together. */
function sharedWhileInFlight<T>(f: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | null = null
  return async () => {
    pending ??= f().finally(() => {
      pending = null
    })
    return await pending
  }
}

const LABELS = ['gpu', 'UUID', 'pci_bus_id', 'device', 'modelName', 'Hostname', 'pool'] as const
const OWN_LABELS = ['gpu', 'UUID', 'pci_bus_id', 'device', 'Hostname', 'pool'] as const

type Value = (s: GpuSample) => number | null | undefined

/** dcgm-exporter's gauges: name, its help text, the value (none: no series for that GPU). */
const DCGM: Array<[name: (typeof GPU_METRIC_NAMES)[number], help: string, value: Value]> = [
  ['DCGM_FI_DEV_GPU_UTIL', 'GPU utilization (in %).', (s) => s.gpu.usage?.utilizationPct],
  ['DCGM_FI_DEV_FB_USED', 'Framebuffer memory used (in MiB).', (s) => s.gpu.usage?.memoryUsedMiB],
  [
    'DCGM_FI_DEV_FB_FREE',
    'Framebuffer memory free (in MiB).',
    (s) => {
      const used = s.gpu.usage?.memoryUsedMiB
      return used == null || s.memoryTotalMiB === null ? null : Math.max(0, s.memoryTotalMiB - used)
    }
  ],
  ['DCGM_FI_DEV_GPU_TEMP', 'GPU temperature (in C).', (s) => s.gpu.usage?.temperatureC],
  ['DCGM_FI_DEV_POWER_USAGE', 'Power draw (in W).', (s) => s.gpu.usage?.powerW],
  // dcgm-exporter's meaning: the last XID seen (0: none), not a count.
  ['DCGM_FI_DEV_XID_ERRORS', 'Value of the last XID error encountered.', (s) => s.gpu.xids.last ?? 0]
]

const own = ({ modelName: _, ...rest }: GpuLabels) => rest

/** Registers the per-GPU families on `registry`. */
export function registerGpuMetrics(registry: client.Registry, pool: Pool, live: LiveTelemetry): void {
  const samples = sharedWhileInFlight(async () => await gpuSamples(pool, live))
  for (const [name, help, value] of DCGM)
    new client.Gauge({
      name,
      help,
      labelNames: LABELS,
      registers: [registry],
      async collect() {
        const all = await samples()
        this.reset()
        for (const s of all) {
          const v = value(s)
          if (v != null) this.set(s.labels, v)
        }
      }
    })
  new client.Gauge({
    name: 'gpumesh_gpu_health',
    help: "1 for the GPU's health state now (healthy, degraded, failed), 0 for the others",
    labelNames: [...OWN_LABELS, 'state'],
    registers: [registry],
    async collect() {
      const all = await samples()
      this.reset()
      for (const s of all)
        for (const state of HEALTH_STATES) this.set({ ...own(s.labels), state }, s.gpu.health.state === state ? 1 : 0)
    }
  })
  new client.Counter({
    name: 'gpumesh_gpu_xid_total',
    help: 'XIDs the kernel logged for the GPU since its agent started (this boot), by XID',
    labelNames: [...OWN_LABELS, 'xid'],
    registers: [registry],
    async collect() {
      const all = await samples()
      this.reset()
      for (const s of all)
        for (const [xid, n] of Object.entries(s.gpu.xids.counts)) this.inc({ ...own(s.labels), xid }, n)
    }
  })
}
