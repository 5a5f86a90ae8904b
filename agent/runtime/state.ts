// A placement's record in the state directory: <stateDir>/placements/<id>/
//   placement.json   this record (written atomically: temp file, fsync, rename)
//   stdout.log       the workload's output (appended)
//   stderr.log
//   pid              the wrapper's pid, written by the wrapper itself
//   exit-code        the command's exit status, written by the wrapper
// Enough for a restarted agent to find the process again (pid + start time)
// and to learn how it ended when it was not its parent.
import { open, readFile, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { RunState } from '../../protocol/control.js'
import type { Assignment } from './types.js'

export const RECORD_VERSION = 1
export const RECORD_FILE = 'placement.json'
export const STDOUT_FILE = 'stdout.log'
export const STDERR_FILE = 'stderr.log'
export const PID_FILE = 'pid'
export const EXIT_FILE = 'exit-code'

export interface PlacementRecord {
  version: typeof RECORD_VERSION
  assignment: Assignment
  state: RunState
  exitCode: number | null
  reason: string | null
  /** The wrapper's pid, which is also its process group (it runs in a session of its own). */
  pid: number | null
  /** /proc/<pid>/stat start time (clock ticks after boot) of `pid`: a reused pid is not ours. */
  startTime: number | null
  /** /proc/sys/kernel/random/boot_id when it started: start times only compare within a boot. */
  bootId: string | null
  /** docker driver: the container's name. */
  container: string | null
  createdAt: string
  startedAt: string | null
  endedAt: string | null
  /** Set when a stop was asked for, so a stop interrupted by an agent restart still ends as 'stopped'. */
  stopRequested: { reason: string; at: string; as?: 'failed' } | null
}

export const placementsDir = (stateDir: string) => join(stateDir, 'placements')
export const placementDir = (stateDir: string, id: string) => join(placementsDir(stateDir), id)

let tmpCounter = 0

/** Writes `data` to `file` so that a reader (or a crash) sees the old content or the new, never a mix. */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = `${file}.${process.pid}.${++tmpCounter}.tmp`
  const fh = await open(tmp, 'w', 0o600)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  try {
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

export async function writeRecord(dir: string, record: PlacementRecord): Promise<void> {
  await writeFileAtomic(join(dir, RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`)
}

export async function readRecord(dir: string): Promise<PlacementRecord> {
  const r = JSON.parse(await readFile(join(dir, RECORD_FILE), 'utf8')) as PlacementRecord
  if (r === null || typeof r !== 'object' || r.version !== RECORD_VERSION || typeof r.assignment !== 'object') {
    throw new Error(`unsupported ${RECORD_FILE} (version ${String((r as { version?: unknown } | null)?.version)})`)
  }
  return r
}

/** The exit status the wrapper recorded, or null when it recorded none (killed before it could). */
export async function readExitCode(dir: string): Promise<number | null> {
  let text: string
  try {
    text = await readFile(join(dir, EXIT_FILE), 'utf8')
  } catch {
    return null
  }
  const t = text.trim()
  return /^\d{1,3}$/.test(t) ? Number(t) : null
}

/** The pid the wrapper wrote about itself, or null. */
export async function readPidFile(dir: string): Promise<number | null> {
  try {
    const t = (await readFile(join(dir, PID_FILE), 'utf8')).trim()
    return /^\d+$/.test(t) ? Number(t) : null
  } catch {
    return null
  }
}

/** Placement folders under the state directory (names only), leftovers of interrupted writes removed. */
export async function listPlacementDirs(stateDir: string): Promise<string[]> {
  let names: string[]
  try {
    names = await readdir(placementsDir(stateDir))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  const out: string[] = []
  for (const name of names.sort()) {
    const dir = placementDir(stateDir, name)
    try {
      for (const f of await readdir(dir))
        if (f.startsWith(`${RECORD_FILE}.`) && f.endsWith('.tmp')) await rm(join(dir, f), { force: true })
      out.push(name)
    } catch {} // not a folder
  }
  return out
}
