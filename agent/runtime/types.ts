// What the agent's control session asks of the runtime, and what it hears
// back. The runtime owns the placements' processes (or containers), their
// logs and their record in the state directory.
import type { EventEmitter } from 'node:events'
import type { Assignment, RunningPlacement } from '../../protocol/control.js'

export type { Assignment, RunningPlacement }

export interface RuntimeOptions {
  /** Agent state directory; placements live under <stateDir>/placements/<id>/. */
  stateDir: string
  /** Milliseconds between SIGTERM and SIGKILL when stopping (default 10 000). */
  stopGraceMs?: number
  /** docker executable (default: `docker` from PATH; the agent's --docker / GPUMESH_DOCKER). */
  docker?: string
  /** The agent's environment, which placements inherit without its GPUMESH_* settings (default: this process's). */
  env?: NodeJS.ProcessEnv
  /** Where a placement's stdout.log and stderr.log rotate (default 64 MiB; one previous file kept). */
  logMaxBytes?: number
}

/**
 * Emits 'status' (RunningPlacement) on every change of a placement's state:
 * starting -> running -> exited (with code) | failed (with reason) | stopped;
 * 'lost' for a placement found in the state directory whose process is gone
 * and whose end could not be read.
 */
export interface Runtime extends EventEmitter {
  /** Starts a placement; starting one that already runs is a no-op. */
  start: (assignment: Assignment) => Promise<void>
  /**
   * Stops a placement: SIGTERM to its process group, SIGKILL after the grace period. Resolves once it is gone.
   * It ends `stopped`, or `failed` when the agent stops it for failing (the coordinator then restarts it).
   */
  stop: (placementId: string, reason: string, as?: 'stopped' | 'failed') => Promise<void>
  /** Placements known now, with their states. */
  list: () => RunningPlacement[]
  /** The assignment a known placement runs (its GPUs, command); undefined for unknown ones. */
  assignment: (placementId: string) => Assignment | undefined
  /** When a known placement's process started (ms since the epoch; null before it runs), across agent restarts. */
  startedAt: (placementId: string) => number | null
  /** At agent start: re-adopts placements still running per the state directory, reports the others. */
  recover: () => Promise<RunningPlacement[]>
  /** Stops watching (timers, handles) without stopping the workloads: they outlive the agent. */
  close: () => Promise<void>
}
