// The scheduler's input and output. The scheduler is pure: it reads a
// snapshot and returns decisions; the store persists them (and the database
// refuses any GPU that became taken in the meantime).
import type { EndpointSpec, RecipeSpec, SessionSpec } from '../../protocol/workload.js'

export type PoolKind = 'static' | 'inference' | 'training'

export interface SchedGpu {
  index: number
  /** NUMA node nearest the GPU; null when unknown. */
  numaNode: number | null
}

export interface SchedHost {
  id: string
  /** Name for people (reasons mention it). */
  name: string
  pool: string
  poolKind: PoolKind
  /** false for hosts that are cordoned, draining, suspect, down or quarantined. */
  schedulable: boolean
  gpus: SchedGpu[]
  /** GPU indices not held by any active placement (failed ones may be among them: see `failed`). */
  free: Set<number>
  /** GPUs whose health is failed: never placed on, not counted in the pool's capacity. */
  failed?: ReadonlySet<number>
  /** GPUs whose health is degraded: used only when no equal fit has healthy ones. */
  degraded?: ReadonlySet<number>
  /** From the host's facts: labels and matrix of `nvidia-smi topo -m`, NVLink domains. */
  topology: {
    labels: string[]
    matrix: Array<Array<string | null>>
    nvlinkDomains: number[][]
  }
}

export interface Snapshot {
  hosts: SchedHost[]
}

/** A workload as the scheduler sees it: its spec and what is already placed. */
export type SchedWorkload = { id: string } & (
  | {
      spec: EndpointSpec /** Replica numbers already placed. */
      placedReplicas: number[] /** Hosts already holding a replica (spread). */
      usedHosts: string[]
    }
  | { spec: RecipeSpec; placedReplicas: number[]; usedHosts: string[] }
  | { spec: SessionSpec; placedReplicas: number[]; usedHosts: string[] }
)

export interface Assignment {
  hostId: string
  /** GPU indices on that host, ascending. */
  gpus: number[]
  /** Replica number (endpoint) or rank (recipe); 0 for a session. */
  replica: number
}

export interface Decision {
  workloadId: string
  /** What to persist now; empty when nothing could be placed. */
  assignments: Assignment[]
  /** Why (part of) the workload stays pending, for people; null when fully placed. */
  reason: string | null
}

/** An outbox event as the fleet picture reads it: what it is about, and the host it names. */
export interface FleetEvent {
  id: number
  type: string
  subjectId: string
  host: string | undefined
}

/** Where the fleet picture is read from (store/snapshot.ts, over PostgreSQL); the scheduler itself does no I/O. */
export interface SnapshotSource {
  /** Every live host, or only those of `ids` that are still live. */
  hosts: (ids?: string[]) => Promise<SchedHost[]>
  /** Outbox events after `id`, in id order, at most `limit`. */
  eventsAfter: (id: number, limit: number) => Promise<FleetEvent[]>
  lastEventId: () => Promise<number>
}
