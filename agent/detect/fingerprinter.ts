// The interface every fact source implements (Nomad's fingerprinters are the
// model): one small module per source, each returning the part of the facts
// it knows. A source that throws becomes a warning; the others still count.
import type { Cpu, Disk, NetworkInterface, Os, RdmaDevice } from '../../protocol/host-facts.js'
import type { GpuInventory } from './nvidia/inventory.js'
import type { TopoMatrix } from './nvidia/parse-topo.js'
import type { SmiRunner } from './nvidia/run.js'

export interface HostPart {
  hostname: string
  cpu: Partial<Cpu>
  memoryBytes: number
  disks: Disk[]
  networkInterfaces: NetworkInterface[]
  rdmaDevices: RdmaDevice[]
  os: Os
}

export interface Fragment {
  inventory?: GpuInventory
  topology?: TopoMatrix
  host?: Partial<HostPart>
  /** What the source skipped or found damaged; reported as warnings. */
  problems?: string[]
}

export interface DetectContext {
  /** Runs nvidia-smi; null when there is none on this host. */
  smi: SmiRunner | null
  /** Root under which /sys is read (tests point it at a fixture tree). */
  sysfsRoot: string
}

export interface Fingerprinter {
  /** Shown in warnings: `nvidia-smi topo -m`, `disks`, ... */
  readonly name: string
  /** Runs only after the first pass, when GPU identity is still incomplete. */
  readonly fallback?: boolean
  fingerprint: (ctx: DetectContext) => Promise<Fragment>
}
