// The agent's runtime: starts, watches, stops and re-adopts placements, and
// keeps their record in the state directory (see state.ts for the layout).
//
// A placement's state goes starting -> running -> exited | failed | stopped
// (or lost: found in the state directory with its process gone and no exit
// status recorded); each change is written to placement.json first, then
// emitted as 'status'. Exit codes are reported as they are: the coordinator
// decides what a non-zero exit means.
//
// Processes outlive the runtime (see process-driver.ts). The runtime watches
// its own children through their exit, and processes it re-adopted after a
// restart (no longer its children) by polling /proc every 500 ms; the wrapper
// wrote their exit status to a file either way. When a placement's main
// process ends, whatever is left in its process group is killed before the
// end is reported: the coordinator frees the GPUs on that report.
import { EventEmitter } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { constants as osConstants } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import type { RunState } from '../../protocol/control.js'
import { containerName, dockerCommand, dockerDriver } from './docker-driver.js'
import type { Driver } from './driver.js'
import { deferred, newEntry, isFinal, type Ending, type Entry, type StopOutcome } from './entry.js'
import { dockerLaunchFailure } from './launch-failure.js'
import { DEFAULT_LOG_MAX_BYTES, launch, LaunchError, processDriver } from './process-driver.js'
import { holderArgs, MAX_SOCKET_PATH, socketPath } from '../session/paths.js'
import { portProblem } from '../serve/port-check.js'
import { groupMembers, signalGroup, waitGroupEmpty } from './proc.js'
import { endedToPrune } from './prune.js'
import { endedSincePolled, recoverPlacements, type RecoveryHost } from './recovery.js'
import { placementDir, readExitCode, RECORD_FILE, RECORD_VERSION, writeRecord, type PlacementRecord } from './state.js'
import type { Assignment, Runtime, RuntimeOptions, RunningPlacement } from './types.js'
import { assignmentProblem, isUuid } from './validate.js'

export { isFinal }

export const DEFAULT_STOP_GRACE_MS = 10_000
/** How often re-adopted processes (not our children) are checked. */
export const POLL_MS = 500
/** How long leftovers of a process group get to die after SIGKILL before the end is reported anyway. */
const GROUP_KILL_WAIT_MS = 5_000
/** How long the log keepers (process-driver.ts) get to write what the command left in their pipes. */
const LOG_DRAIN_MS = 2_000

class PlacementRuntime extends EventEmitter implements Runtime {
  readonly #stateDir: string
  readonly #graceMs: number
  readonly #logMaxBytes: number
  readonly #drivers: Record<'process' | 'docker', Driver>
  readonly #entries = new Map<string, Entry>()
  readonly #closed = deferred()
  #isClosed = false
  #poll: NodeJS.Timeout | null = null

  constructor(options: RuntimeOptions) {
    super()
    this.#stateDir = resolve(options.stateDir)
    this.#graceMs = options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS
    this.#logMaxBytes = options.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES
    const docker = dockerCommand(options.docker)
    // The agent's environment is the placements' (minus its GPUMESH_* settings): what they inherit, not configuration.
    const agentEnv = options.env ?? process.env
    this.#drivers = {
      process: processDriver(agentEnv),
      // A relative path is relative to the agent, not to the placement's folder it runs in.
      docker: dockerDriver(docker.includes('/') && !isAbsolute(docker) ? resolve(docker) : docker, agentEnv)
    }
    this.#recovery.stateDir = this.#stateDir
  }

  start = async (assignment: Assignment): Promise<void> => {
    if (this.#isClosed) throw new Error('runtime is closed')
    const rawId = (assignment as { placementId?: unknown } | null)?.placementId
    const id = typeof rawId === 'string' ? rawId : String(rawId)
    // Known: running, ended, or on disk from an earlier agent. A placement
    // id is one run; starting it again would run it twice.
    if (this.#entries.has(id)) return
    if (isUuid(id) && existsSync(join(placementDir(this.#stateDir, id), RECORD_FILE))) return
    const problem = assignmentProblem(assignment)
    const dir = isUuid(id) ? placementDir(this.#stateDir, id) : null
    const now = new Date().toISOString()
    const record: PlacementRecord | null =
      dir === null
        ? null
        : {
            version: RECORD_VERSION,
            assignment,
            state: 'starting',
            exitCode: null,
            reason: null,
            pid: null,
            startTime: null,
            bootId: null,
            container: assignment.run?.driver === 'docker' ? containerName(id) : null,
            createdAt: now,
            startedAt: null,
            endedAt: null,
            stopRequested: null
          }
    const entry = newEntry(id, dir, record)
    this.#entries.set(id, entry) // before any await: a concurrent start of the same id is a no-op
    try {
      if (dir !== null) await mkdir(dir, { recursive: true, mode: 0o750 })
      if (problem !== null) {
        // Refused: never run, but recorded, so that it stays known.
        await this.#end(entry, { state: 'failed', exitCode: null, reason: problem })
        return
      }
      await this.#transition(entry, { state: 'starting' })
      const { argv, env } = await this.#prepare(assignment, dir as string)
      if (this.#isClosed) throw new LaunchError('runtime closed before it started')
      const { subprocess, identity } = launch(dir as string, id, argv, env, this.#logMaxBytes)
      entry.child = subprocess
      entry.identity = identity
      entry.pgid = identity.pid
      entry.watch = 'child'
      await this.#transition(entry, {
        state: 'running',
        pid: identity.pid,
        startTime: identity.startTime,
        bootId: identity.bootId,
        startedAt: new Date().toISOString()
      })
      entry.started.resolve()
      // Registered after 'running' is out: an instant exit still reports in order.
      void subprocess.then((r) =>
        this.#finish(entry, {
          exitCode: r.exitCode ?? null,
          signal: r.signal ?? null,
          detail: r.failed && r.exitCode === undefined && r.signal === undefined ? r.shortMessage : undefined
        })
      )
    } catch (err) {
      if (entry.child !== null) throw err // cannot happen: nothing after launch throws
      await this.#end(entry, {
        state: 'failed',
        exitCode: null,
        reason: err instanceof LaunchError ? err.message : `cannot start: ${(err as Error).message}`
      })
    }
  }

  stop = async (placementId: string, reason: string, as: StopOutcome = 'stopped'): Promise<void> => {
    const e = this.#entries.get(placementId)
    if (e === undefined || this.#isClosed) return
    await Promise.race([e.started.promise, this.#closed.promise])
    if (isFinal(e.status.state) || this.#isClosed) return
    if (e.stopping === null) {
      e.stopping = { reason, killAt: Date.now() + this.#graceMs, as }
      if (e.record !== null) {
        e.record.stopRequested = { reason, at: new Date().toISOString(), ...(as === 'failed' ? { as } : {}) }
        await this.#persist(e)
      }
      void this.#driverStop(e).catch((err: unknown) => this.#warn(`stopping ${e.id}: ${(err as Error).message}`))
    }
    await Promise.race([e.ended.promise, this.#closed.promise])
  }

  list = (): RunningPlacement[] => [...this.#entries.values()].map((e) => ({ ...e.status }))

  assignment = (placementId: string): Assignment | undefined => this.#entries.get(placementId)?.record?.assignment

  startedAt = (placementId: string): number | null => {
    const at = this.#entries.get(placementId)?.record?.startedAt
    return at === undefined || at === null ? null : Date.parse(at)
  }

  recover = async (): Promise<RunningPlacement[]> => {
    if (this.#isClosed) throw new Error('runtime is closed')
    const found = await recoverPlacements(this.#recovery)
    await this.#prune()
    return found
  }

  close = async (): Promise<void> => {
    if (this.#isClosed) return
    this.#isClosed = true
    this.#closed.resolve()
    if (this.#poll !== null) clearInterval(this.#poll)
    this.#poll = null
    for (const e of this.#entries.values()) {
      e.child?.unref() // the workload keeps running; the agent may exit without waiting for it
      e.watcher?.kill() // a `docker wait` of ours; the next runtime starts its own
    }
    await Promise.all([...this.#entries.values()].map(async (e) => await e.writes))
  }

  // ---------------------------------------------------------------- internals

  /** The command line and environment for the wrapper; throws LaunchError with the reason it cannot run. */
  async #prepare(a: Assignment, dir: string): Promise<{ argv: string[]; env: Record<string, string> }> {
    const taken = a.port === undefined ? null : await portProblem(a.port)
    if (taken !== null) throw new LaunchError(taken)
    const { argv, env } = await this.#driverOf(a).command(a, dir)
    // A session's command runs in a pseudo-terminal that `gpumesh attach` reaches (agent/session/holder.ts).
    if (a.session !== undefined) {
      if (socketPath(dir).length > MAX_SOCKET_PATH)
        throw new LaunchError(
          `session socket path ${socketPath(dir)} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter state directory`
        )
      return { argv: [process.execPath, ...holderArgs(a.placementId, a.session, argv)], env }
    }
    return { argv, env }
  }

  /** Records a change (placement.json first), then reports it. */
  async #transition(e: Entry, patch: Partial<PlacementRecord> & { state: RunState }): Promise<void> {
    if (this.#isClosed) return
    if (e.record !== null) Object.assign(e.record, patch)
    e.status = {
      placementId: e.id,
      state: patch.state,
      exitCode: patch.exitCode ?? (isFinal(patch.state) ? e.status.exitCode : null),
      reason: patch.reason ?? (isFinal(patch.state) ? e.status.reason : null)
    }
    await this.#persist(e)
    if (this.#isClosed) return
    this.emit('status', { ...e.status })
  }

  /** The final transition; settles `started` and `ended`. */
  async #end(e: Entry, final: { state: RunState; exitCode: number | null; reason: string | null }): Promise<void> {
    await this.#transition(e, { ...final, endedAt: new Date().toISOString() })
    e.started.resolve()
    e.ended.resolve()
    await this.#prune()
  }

  /** Forgets ended placements beyond the last few of their replica, folders and all (prune.ts). */
  async #prune(): Promise<void> {
    for (const old of endedToPrune(this.#entries.values())) {
      if (this.#isClosed) return
      this.#entries.delete(old.id)
      await old.writes
      await rm(old.dir as string, { recursive: true, force: true }).catch((err: unknown) => {
        this.#warn(`cannot remove ${old.dir as string}: ${(err as Error).message}`)
      })
    }
  }

  async #persist(e: Entry): Promise<void> {
    if (e.record === null || e.dir === null || this.#isClosed) return
    const snapshot = structuredClone(e.record)
    const dir = e.dir
    // One write at a time per placement, in order.
    e.writes = e.writes
      .then(async () => await writeRecord(dir, snapshot))
      .catch((err: unknown) => {
        this.#warn(`cannot write ${join(dir, RECORD_FILE)}: ${(err as Error).message}`)
      })
    await e.writes
  }

  #warn(message: string): void {
    if (this.listenerCount('warning') > 0) this.emit('warning', message)
  }

  #driverOf(a: Assignment): Driver {
    return a.run.driver === 'docker' ? this.#drivers.docker : this.#drivers.process
  }

  async #driverStop(e: Entry): Promise<void> {
    const ended = Promise.race([e.ended.promise, this.#closed.promise])
    const driver = e.record === null ? this.#drivers.process : this.#driverOf(e.record.assignment)
    await driver.stop({ container: e.record?.container ?? null, pgid: e.pgid }, this.#graceMs, ended)
  }

  /** What recovery (recovery.ts) may do to this runtime. */
  readonly #recovery: RecoveryHost = {
    stateDir: '',
    entries: this.#entries,
    driverOf: (r) => this.#driverOf(r.assignment),
    transition: async (e, patch) => {
      await this.#transition(e, patch)
    },
    end: async (e, final) => {
      await this.#end(e, final)
    },
    finish: async (e, how) => {
      await this.#finish(e, how)
    },
    poll: () => {
      this.#ensurePolling()
    },
    stop: async (id, reason, as) => {
      await this.stop(id, reason, as)
    },
    report: (status) => {
      this.emit('status', status)
    }
  }

  #ensurePolling(): void {
    if (this.#poll !== null || this.#isClosed) return
    this.#poll = setInterval(() => {
      const { ended, watching } = endedSincePolled(this.#entries.values())
      for (const e of ended) void this.#finish(e, null)
      if (watching === 0 && this.#poll !== null) {
        clearInterval(this.#poll)
        this.#poll = null
      }
    }, POLL_MS)
  }

  /** The main process ended: clear its process group, read how it ended, record and report it. */
  async #finish(e: Entry, how: Ending | null): Promise<void> {
    if (e.finishing || this.#isClosed) return
    e.finishing = true
    e.watch = null
    const pgid = e.pgid
    const cancelled = () => this.#isClosed
    if (pgid !== null) {
      // Stopping: the rest of the group got SIGTERM too and has the rest of the grace. Either way the log
      // keepers end by themselves once the command's output is written, unless something still holds the pipe.
      await waitGroupEmpty(pgid, Math.max(e.stopping?.killAt ?? 0, Date.now() + LOG_DRAIN_MS), cancelled)
      // Only signalled while it has members: an empty group's id could be reused.
      if (groupMembers(pgid).length > 0) signalGroup(pgid, 'SIGKILL')
      await waitGroupEmpty(pgid, Date.now() + GROUP_KILL_WAIT_MS, cancelled)
    }
    if (this.#isClosed) return // the next runtime reads the end from the state directory
    const recorded = e.dir === null ? null : await readExitCode(e.dir)
    let exitCode = recorded
    let reason: string | null = null
    if (exitCode === null && how !== null) {
      if (typeof how.exitCode === 'number') exitCode = how.exitCode
      else if (typeof how.signal === 'string') {
        const n = (osConstants.signals as Record<string, number | undefined>)[how.signal]
        exitCode = n === undefined ? null : 128 + n
        reason = `killed by ${how.signal}`
      }
    }
    const launchFailure =
      e.stopping === null && exitCode !== null && e.record?.assignment.run.driver === 'docker'
        ? await dockerLaunchFailure(exitCode, e.dir)
        : null
    if (e.stopping !== null) await this.#end(e, { state: e.stopping.as, exitCode, reason: e.stopping.reason })
    else if (launchFailure !== null) await this.#end(e, { state: 'failed', exitCode, reason: launchFailure })
    else if (exitCode !== null) await this.#end(e, { state: 'exited', exitCode, reason })
    else
      await this.#end(e, {
        state: 'lost',
        exitCode: null,
        reason: how?.detail ?? 'its process ended without recording an exit code'
      })
  }
}

export function createRuntime(options: RuntimeOptions): Runtime {
  return new PlacementRuntime(options)
}
