// What the runtime needs to know about processes, read from /proc (Linux):
// whether a pid is still the process we started (pid + start time + boot),
// and which processes are left in a process group. Zombies count as gone: a
// workload re-adopted after an agent restart is not our child, and the init
// of some machines (containers, micro-VMs) never reaps what is reparented to
// it, so kill(pid, 0) alone would call a dead workload alive forever.
import { readFileSync, readdirSync } from 'node:fs'
import { sleep } from '../../common/daemon/sleep.js'

export interface ProcStat {
  pid: number
  /** One letter: R, S, D, Z (zombie), T, X... */
  state: string
  pgrp: number
  session: number
  /** Field 22: clock ticks after boot at which the process started. */
  startTime: number
}

/** /proc/<pid>/stat, or null when there is no such process. */
export function readProcStat(pid: number): ProcStat | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // The command name (field 2) is in parentheses and may itself hold spaces
  // and parentheses: the fields after it start after the last ')'.
  const close = text.lastIndexOf(')')
  if (close < 0) return null
  const rest = text.slice(close + 2).split(' ')
  const state = rest[0]
  const pgrp = Number(rest[2])
  const session = Number(rest[3])
  const startTime = Number(rest[19])
  if (state === undefined || !Number.isInteger(pgrp) || !Number.isInteger(startTime)) return null
  return { pid, state, pgrp, session, startTime }
}

const dead = (s: ProcStat | null) => s === null || s.state === 'Z' || s.state === 'X' || s.state === 'x'

let cachedBootId: string | null | undefined
/** This boot's id: start times count from boot, so they only compare within one. */
export function bootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    } catch {
      cachedBootId = null
    }
  }
  return cachedBootId
}

export interface ProcessIdentity {
  pid: number
  startTime: number
  bootId: string | null
}

/** The identity of a live process, to record right after starting it. */
export function identify(pid: number): ProcessIdentity | null {
  const s = readProcStat(pid)
  return s === null ? null : { pid, startTime: s.startTime, bootId: bootId() }
}

/** Whether `id` still names a live process: same pid, same start time, same boot, not a zombie. */
export function isAlive(id: ProcessIdentity): boolean {
  if (id.bootId !== null && bootId() !== null && id.bootId !== bootId()) return false
  const s = readProcStat(id.pid)
  return !dead(s) && s?.startTime === id.startTime
}

/** Why a recorded identity does not match, for the 'lost' reason; null when it does. */
export function mismatch(id: ProcessIdentity): string | null {
  if (id.bootId !== null && bootId() !== null && id.bootId !== bootId()) return 'the host rebooted since it started'
  const s = readProcStat(id.pid)
  if (dead(s)) return `process ${id.pid} is gone`
  if (s?.startTime !== id.startTime) return `pid ${id.pid} now belongs to another process (start time differs)`
  return null
}

/** The arguments of a live process (NUL-separated in /proc), or null. */
export function readCmdline(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return raw.split('\0').slice(0, -1)
  } catch {
    return null
  }
}

/** Live (non-zombie) processes whose process group is `pgid`. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = []
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return out
  }
  for (const e of entries) {
    const c = e.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const s = readProcStat(Number(e))
    if (s !== null && s.pgrp === pgid && !dead(s)) out.push(s.pid)
  }
  return out
}

/** Sends `signal` to process group `pgid`; false when the group is empty. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) return false // never -0 (our own group) or -1 (everything)
  try {
    process.kill(-pgid, signal)
    return true
  } catch {
    return false
  }
}

/** Polls until the group has no live member, the deadline passes or `cancelled()`; true when it emptied. */
export async function waitGroupEmpty(
  pgid: number,
  deadline: number,
  cancelled: () => boolean = () => false,
  everyMs = 25
): Promise<boolean> {
  for (;;) {
    if (groupMembers(pgid).length === 0) return true
    if (Date.now() >= deadline || cancelled()) return false
    await sleep(Math.min(everyMs, Math.max(1, deadline - Date.now())))
  }
}
