// Re-adoption after an agent restart: every placement the state directory
// says is starting or running is adopted if its process is still the one
// that was started (pid, start time, boot), or still runs elsewhere (a
// container without its client); otherwise its end is read (the wrapper's
// exit code) and reported. Adopted processes are no longer the agent's
// children: their end is noticed by polling /proc.
import type { RunState } from '../../protocol/control.js'
import type { Driver } from './driver.js'
import { newEntry, isFinal, type Ending, type Entry, type StopOutcome } from './entry.js'
import { wrapperName } from './process-driver.js'
import { bootId, isAlive, mismatch, readCmdline, readProcStat, type ProcessIdentity } from './proc.js'
import {
  listPlacementDirs,
  placementDir,
  readExitCode,
  readPidFile,
  readRecord,
  RECORD_FILE,
  type PlacementRecord
} from './state.js'
import type { RunningPlacement } from './types.js'
import { isUuid } from './validate.js'

/** What recovery needs of the runtime. */
export interface RecoveryHost {
  stateDir: string
  entries: Map<string, Entry>
  driverOf: (r: PlacementRecord) => Driver
  transition: (e: Entry, patch: Partial<PlacementRecord> & { state: RunState }) => Promise<void>
  end: (e: Entry, final: { state: RunState; exitCode: number | null; reason: string | null }) => Promise<void>
  finish: (e: Entry, how: Ending | null) => Promise<void>
  /** Starts polling /proc for the entries watched by 'poll'. */
  poll: () => void
  stop: (placementId: string, reason: string, as?: StopOutcome) => Promise<void>
  report: (status: RunningPlacement) => void
}

/** Every placement of the state directory, adopted or with its end recorded; as they are now. */
export async function recoverPlacements(host: RecoveryHost): Promise<RunningPlacement[]> {
  const out: RunningPlacement[] = []
  for (const name of await listPlacementDirs(host.stateDir)) {
    if (!isUuid(name)) continue
    const known = host.entries.get(name)
    if (known !== undefined) {
      // recovered (or started) already: reported as it is now
      out.push({ ...known.status })
      continue
    }
    const dir = placementDir(host.stateDir, name)
    let record: PlacementRecord
    try {
      record = await readRecord(dir)
      if (record.assignment.placementId !== name) throw new Error(`it names placement ${record.assignment.placementId}`)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue // a folder without a record: nothing was started from it
      const e = newEntry(name, null, null) // unreadable: reported, left as it is on disk
      host.entries.set(name, e)
      e.status = {
        placementId: name,
        state: 'lost',
        exitCode: null,
        reason: `unreadable ${RECORD_FILE}: ${(err as Error).message}`
      }
      e.started.resolve()
      e.ended.resolve()
      host.report({ ...e.status })
      out.push({ ...e.status })
      continue
    }
    const e = newEntry(name, dir, record)
    host.entries.set(name, e)
    if (isFinal(record.state)) {
      e.started.resolve()
      e.ended.resolve()
    } else {
      await reattach(host, e, record)
    }
    out.push({ ...e.status })
  }
  return out
}

/** A placement the state directory says is starting or running: adopt it if its process is still ours, report its end otherwise. */
async function reattach(host: RecoveryHost, e: Entry, r: PlacementRecord): Promise<void> {
  const dir = e.dir as string
  let identity: ProcessIdentity | null =
    r.pid !== null && r.startTime !== null ? { pid: r.pid, startTime: r.startTime, bootId: r.bootId } : null
  if (identity === null) {
    // The agent stopped between starting it and recording its pid: the
    // wrapper wrote its pid, and its $0 names the placement.
    const pid = await readPidFile(dir)
    const s = pid === null ? null : readProcStat(pid)
    if (pid !== null && s !== null && s.state !== 'Z' && readCmdline(pid)?.includes(wrapperName(e.id)) === true) {
      identity = { pid, startTime: s.startTime, bootId: bootId() }
    }
  }
  if (identity !== null && isAlive(identity)) {
    e.identity = identity
    e.pgid = identity.pid
    e.watch = 'poll'
    if (r.state !== 'running' || r.pid !== identity.pid) {
      await host.transition(e, {
        state: 'running',
        pid: identity.pid,
        startTime: identity.startTime,
        bootId: identity.bootId,
        startedAt: r.startedAt ?? new Date().toISOString()
      })
    } else {
      e.status = { placementId: e.id, state: 'running', exitCode: null, reason: null }
    }
    e.started.resolve()
    host.poll()
    // a stop the last agent did not finish
    if (r.stopRequested !== null) void host.stop(e.id, r.stopRequested.reason, r.stopRequested.as)
    return
  }
  const code = await readExitCode(dir)
  let driverSays: string | null = null
  if (code === null) {
    const found = await host.driverOf(r).readopt({ container: r.container, pgid: null })
    if (typeof found === 'string') driverSays = found
    else if (found !== null) {
      e.watch = 'docker-wait'
      e.watcher = found.watcher
      if (r.state !== 'running')
        await host.transition(e, { state: 'running', startedAt: r.startedAt ?? new Date().toISOString() })
      else e.status = { placementId: e.id, state: 'running', exitCode: null, reason: null }
      e.started.resolve()
      void found.exitCode.then((exitCode) => host.finish(e, { exitCode, detail: 'docker wait gave no exit code' }))
      if (r.stopRequested !== null) void host.stop(e.id, r.stopRequested.reason, r.stopRequested.as)
      return
    }
  }
  // It ended while no runtime was watching.
  if (r.stopRequested !== null)
    await host.end(e, { state: r.stopRequested.as ?? 'stopped', exitCode: code, reason: r.stopRequested.reason })
  else if (code !== null) await host.end(e, { state: 'exited', exitCode: code, reason: null })
  else if (r.state === 'starting' && identity === null && r.pid === null)
    await host.end(e, { state: 'failed', exitCode: null, reason: 'the agent stopped while starting it; it never ran' })
  else {
    const why = identity === null ? 'its process is gone' : (mismatch(identity) ?? 'its process is gone')
    await host.end(e, {
      state: 'lost',
      exitCode: null,
      reason: `${why} and no exit code was recorded${driverSays === null ? '' : ` (${driverSays})`}`
    })
  }
}

/** The adopted processes that ended since the last look (polled every POLL_MS). */
export function endedSincePolled(entries: Iterable<Entry>): { ended: Entry[]; watching: number } {
  const ended: Entry[] = []
  let watching = 0
  for (const e of entries) {
    if (e.watch !== 'poll' || e.finishing || e.identity === null) continue
    watching++
    if (!isAlive(e.identity)) ended.push(e)
  }
  return { ended, watching }
}
