// Whether a process the test started is still there; ending placements a test leaves behind.
import { readdirSync, readFileSync } from 'node:fs'
import type { Test } from 'tap'
import { readProcStat } from '../../agent/runtime/proc.js'

/** Alive and not a zombie: init here may never reap what is reparented to it, so kill(pid, 0) alone is not enough. */
export function alive(pid: number): boolean {
  const s = readProcStat(pid)
  return s !== null && s.state !== 'Z'
}

/**
 * Placements outlive their agent by design, and the agent helper only stops
 * workloads of a live runtime: a test's placements are ended here, by
 * SIGTERM to their wrapper's process group (a session's holder hangs up its
 * terminal). The wrapper is found by its name, gpumesh-<placement id>.
 */
export function endAtTeardown(t: Test, placementId: string): void {
  t.teardown(async () => {
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue
      let cmdline = ''
      try {
        cmdline = readFileSync(`/proc/${e}/cmdline`, 'utf8')
      } catch {
        continue
      }
      if (cmdline.split('\0').includes(`gpumesh-${placementId}`))
        try {
          process.kill(-Number(e), 'SIGTERM')
        } catch {}
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  })
}
