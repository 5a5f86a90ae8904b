// Restart backoff per replica. A replica that fails to launch or ends soon
// after it was placed waits before it is placed again: 1 s, doubling to
// 5 min, with jitter (common/daemon/backoff.ts); one that ran 10 minutes
// starts over at 1 s. After CRASH_LOOP_AFTER quick failures in a row the
// workload's reason says `crash-loop`. The scheduler (scheduler/loop.ts)
// skips replicas whose time has not come and wakes up when it does.
//
// Only the last KEEP_ENDED_PLACEMENTS ended placements of a replica are kept (their
// rows; the agent keeps as many folders, for their logs): a crash loop must
// not grow the database without bound.
import { backoff } from '../../common/daemon/backoff.js'
import { KEEP_ENDED_PLACEMENTS } from '../../protocol/control.js'
import type { Client } from './db.js'

export const RESTART_BASE_MS = 1000
export const RESTART_CAP_MS = 5 * 60_000
/** A replica that ran this long before it ended was not crash-looping: its next restart is quick again. */
export const STEADY_MS = 10 * 60_000
export const CRASH_LOOP_AFTER = 5

export interface ReplicaBackoff {
  replica: number
  /** Quick failures in a row. */
  failures: number
  notBefore: Date
  lastReason: string | null
}

export interface Crash {
  workloadId: string
  replica: number
  /** When it started running; null when it never did (a launch failure). */
  startedAt: Date | null
  why: string | null
}

/** Records a crash: the next attempt's time, from the failures in a row before it. */
export async function recordCrash(
  c: Client,
  crash: Crash,
  random: () => number = Math.random
): Promise<ReplicaBackoff> {
  const { rows } = await c.query<{ failures: number }>(
    'select failures from replica_restarts where workload_id = $1 and replica = $2 for update',
    [crash.workloadId, crash.replica]
  )
  const quick = crash.startedAt === null || Date.now() - crash.startedAt.getTime() < STEADY_MS
  const attempt = quick ? (rows[0]?.failures ?? 0) : 0
  const delayMs = Math.round(backoff(attempt, { baseMs: RESTART_BASE_MS, capMs: RESTART_CAP_MS }, random))
  const { rows: saved } = await c.query<{ not_before: Date }>(
    `insert into replica_restarts (workload_id, replica, failures, not_before, last_reason)
     values ($1, $2, $3, date_trunc('milliseconds', now() + $4 * interval '1 millisecond'), $5)
     on conflict (workload_id, replica) do update
       set failures = excluded.failures, not_before = excluded.not_before, last_reason = excluded.last_reason, updated_at = now()
     returning not_before`,
    [crash.workloadId, crash.replica, attempt + 1, delayMs, crash.why]
  )
  return {
    replica: crash.replica,
    failures: attempt + 1,
    notBefore: (saved[0] as { not_before: Date }).not_before,
    lastReason: crash.why
  }
}

/** The workload's reason while replicas wait: crash loops first, so the reason starts with `crash-loop`. */
export function backoffReason(waiting: ReplicaBackoff[]): string {
  const sorted = [...waiting].sort((a, b) => b.failures - a.failures || a.replica - b.replica)
  return sorted
    .map((r) => {
      const next = `next attempt at ${r.notBefore.toISOString()}`
      const last = r.lastReason ?? 'ended'
      return r.failures >= CRASH_LOOP_AFTER
        ? `crash-loop: replica ${r.replica} failed ${r.failures} times in a row soon after starting (last: ${last}); ${next}`
        : `replica ${r.replica} ${last}; ${next}`
    })
    .join('; ')
}

/** Deletes all but the last KEEP_ENDED_PLACEMENTS ended placements of these replicas (and their released GPU allocations). */
export async function pruneEnded(c: Client, workloadId: string, replicas: number[]): Promise<void> {
  const { rows } = await c.query<{ id: string }>(
    `select id from (
       select id, row_number() over (partition by replica order by created_at desc, id desc) as n
       from placements
       where workload_id = $1 and replica = any($2::int[]) and state in ('exited', 'failed', 'stopped', 'lost')
     ) ended where n > $3`,
    [workloadId, replicas, KEEP_ENDED_PLACEMENTS]
  )
  if (rows.length === 0) return
  const ids = rows.map((r) => r.id)
  await c.query('delete from gpu_allocations where placement_id = any($1::uuid[]) and not active', [ids])
  // One still holding a GPU (cannot happen for an ended one) is left alone rather than failing the transaction.
  await c.query(
    'delete from placements p where id = any($1::uuid[]) and not exists (select 1 from gpu_allocations a where a.placement_id = p.id)',
    [ids]
  )
}
