// What differs between the ways a placement runs (driver `process`: the
// command on the host; `docker`: a container through the docker client):
// the command the wrapper runs, how a running placement is stopped, and
// whether one the agent lost track of (an agent restart) runs on.
import type { Assignment } from './types.js'

/** A running placement as a driver sees it. */
export interface DriverTarget {
  /** Its container's name (docker), else null. */
  container: string | null
  /** Its process group, once verified to be ours; null for a container watched without its client. */
  pgid: number | null
}

/** A placement still running after an agent restart, watched by `watcher` until it ends. */
export interface Readopted {
  watcher: { kill: () => boolean }
  /** Its exit code when it ends (null: unknown). */
  exitCode: Promise<number | null>
}

export interface Driver {
  /** argv and environment of the command the wrapper runs; a LaunchError says why it cannot run. */
  command: (a: Assignment, dir: string) => Promise<{ argv: string[]; env: Record<string, string> }>
  /** SIGTERM (or its equivalent), SIGKILL after `graceMs`; `ended` settles when the end has been seen. */
  stop: (target: DriverTarget, graceMs: number, ended: Promise<unknown>) => Promise<void>
  /**
   * After an agent restart, a placement whose process is gone and left no
   * exit code: whether it runs on elsewhere (a container without its client).
   * A Readopted, null when it does not, or a string when the driver cannot tell (why).
   */
  readopt: (target: DriverTarget) => Promise<Readopted | string | null>
}
