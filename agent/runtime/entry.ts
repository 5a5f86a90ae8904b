// What the runtime keeps about one placement while the agent runs.
import type { RunState } from '../../protocol/control.js'
import type { ProcessIdentity } from './proc.js'
import type { PlacementRecord } from './state.js'
import type { RunningPlacement } from './types.js'

const FINAL: ReadonlySet<RunState> = new Set(['exited', 'failed', 'stopped', 'lost'])
export const isFinal = (s: RunState) => FINAL.has(s)

/** How a stopped placement ends: asked to stop, or stopped because it failed (the coordinator restarts it). */
export type StopOutcome = 'stopped' | 'failed'

export interface Deferred {
  promise: Promise<void>
  resolve: () => void
}
export function deferred(): Deferred {
  let resolve!: () => void
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** How the main process ended, when the runtime saw it end (as parent, or through `docker wait`). */
export interface Ending {
  exitCode?: number | null
  signal?: string | null
  detail?: string
}

export interface Entry {
  id: string
  /** null for a refused assignment whose id is no uuid: nothing of it goes to disk. */
  dir: string | null
  record: PlacementRecord | null
  status: RunningPlacement
  /** Settles once the placement has left 'starting'. */
  started: Deferred
  /** Settles once its end has been recorded and reported. */
  ended: Deferred
  /** The process group we may signal: set only once the pid was verified to be ours. */
  pgid: number | null
  identity: ProcessIdentity | null
  /** How its end is noticed: our child's exit, /proc polling, or a `docker wait`. */
  watch: 'child' | 'poll' | 'docker-wait' | null
  child: { unref: () => void } | null
  watcher: { kill: () => boolean } | null
  /** A stop under way: `as` is how it ends (failed: the agent gave up on it, e.g. never ready). */
  stopping: { reason: string; killAt: number; as: StopOutcome } | null
  finishing: boolean
  writes: Promise<void>
}

export function newEntry(id: string, dir: string | null, record: PlacementRecord | null): Entry {
  return {
    id,
    dir,
    record,
    status: {
      placementId: id,
      state: record?.state ?? 'starting',
      exitCode: record?.exitCode ?? null,
      reason: record?.reason ?? null
    },
    started: deferred(),
    ended: deferred(),
    pgid: null,
    identity: null,
    watch: null,
    child: null,
    watcher: null,
    stopping: null,
    finishing: false,
    writes: Promise.resolve()
  }
}
