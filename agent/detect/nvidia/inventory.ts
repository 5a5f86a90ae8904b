// What the identity parsers (query-gpu, -L, -q -x, -q, the summary table,
// nvlink -s) each know about a host's GPUs, in one shape so they can be merged.
import type { MigDevice, NvLink } from '../../../protocol/host-facts.js'

export interface GpuRecord {
  /** nvidia-smi index; null when the source only gives an order (-q -x, -q). */
  index: number | null
  uuid?: string | null
  name?: string | null
  /** The summary table cuts long names with "..."; such a name is a last resort. */
  nameTruncated?: boolean
  memoryMiB?: number | null
  pciBusId?: string | null
  migMode?: 'enabled' | 'disabled' | null
  migDevices?: MigDevice[]
  nvlink?: NvLink | null
}

export interface GpuInventory {
  gpus: GpuRecord[]
  driverVersion?: string | null
  cudaVersion?: string | null
}

export function migMode(text: string | null): 'enabled' | 'disabled' | null {
  if (text === null) return null
  if (/^enabled$/i.test(text)) return 'enabled'
  if (/^disabled$/i.test(text)) return 'disabled'
  return null
}
