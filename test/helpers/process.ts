// Whether a process the test started is still there.
import { readProcStat } from '../../agent/runtime/proc.js'

/** Alive and not a zombie: init here may never reap what is reparented to it, so kill(pid, 0) alone is not enough. */
export function alive(pid: number): boolean {
  const s = readProcStat(pid)
  return s !== null && s.state !== 'Z'
}
