// What the coordinator's systemd watchdog pings vouch for: its leader
// election loop runs and its database answered a `select 1` just now. Without
// a database the coordinator serves nothing (every /v1 route is a 503), so it
// stops pinging and systemd restarts it unless the database comes back
// within WatchdogSec (the embedded one is restarted by its supervisor long
// before). The unit's status line says what is wrong, and when it is over.
import type { Notifier } from '../common/systemd.js'
import type { Leadership } from './leader.js'
import { type Pool, ping } from './store/db.js'

/** Longer than any leader tick, which waits at most for a connection attempt. */
const LOOP_STALLED_MS = 30_000

export function watchdogCheck(
  c: { pool: Pool; leadership: Leadership },
  systemd: Pick<Notifier, 'status'>,
  readyStatus: string
): () => Promise<boolean> {
  let said: string | null = null
  return async () => {
    const problem =
      Date.now() - c.leadership.lastTick >= LOOP_STALLED_MS
        ? 'leader election loop stalled'
        : await ping(c.pool).then(
            () => null,
            () => 'database not answering'
          )
    if (problem !== said) systemd.status(problem ?? readyStatus)
    said = problem
    return problem === null
  }
}
