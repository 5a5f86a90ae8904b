// A live GPU values file for the nvidia-smi double (share/nvidia-smi-replay:
// gpu-values.csv), which tests rewrite while the agent samples it. Defaults
// are an idle H100 as share/nvidia-smi/h100-1x-query-gpu-csv-1.txt prints it.
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export type GpuValues = Record<string, string | number>

/** The bus ids of the public XID lines in test/fixtures/kmsg (GPU 0..3). */
export const FIXTURE_BUSES = ['00000000:03:00.0', '00000000:05:00.0', '00000000:44:00.0', '00000000:65:00.0']

export function idleGpu(
  index: number,
  bus = FIXTURE_BUSES[index] ?? `00000000:${(0x80 + index).toString(16)}:00.0`
): GpuValues {
  return {
    index,
    uuid: `GPU-00000000-0000-0000-0000-00000000000${index}`,
    name: 'NVIDIA H100 80GB HBM3',
    driver_version: '590.48.01',
    'mig.mode.current': 'Disabled',
    'pci.bus_id': bus,
    'utilization.gpu': 0,
    'utilization.memory': 0,
    'memory.used': 0,
    'memory.total': 81559,
    'temperature.gpu': 41,
    'power.draw': 69.85,
    'clocks_event_reasons.active': '0x0000000000000001',
    'ecc.errors.uncorrected.volatile.total': 0,
    'ecc.errors.corrected.volatile.total': 0,
    'retired_pages.pending': 'No',
    'pcie.link.gen.current': 5,
    'pcie.link.gen.max': 5,
    'pcie.link.width.current': 16,
    'pcie.link.width.max': 16,
    'remapped_rows.correctable': 0,
    'remapped_rows.uncorrectable': 0,
    'remapped_rows.pending': 0,
    'remapped_rows.failure': 0
  }
}

/** Writes the file whole and renames it into place, so the double never reads half of it. */
export function writeGpuValues(dir: string, gpus: GpuValues[], drop: string[] = []): void {
  const fields = Object.keys(gpus[0] ?? idleGpu(0)).filter((f) => !drop.includes(f))
  const lines = [fields.join(', '), ...gpus.map((g) => fields.map((f) => String(g[f] ?? '[N/A]')).join(', '))]
  const tmp = join(dir, '.gpu-values.csv.tmp')
  writeFileSync(tmp, `${lines.join('\n')}\n`)
  renameSync(tmp, join(dir, 'gpu-values.csv'))
}

/** A fresh fixture folder holding only gpu-values.csv. */
export function valuesMachine(gpus: GpuValues[], drop: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-values-'))
  writeGpuValues(dir, gpus, drop)
  return dir
}
