// Reading the outbox. Ids follow commit order (store/outbox.ts), so
// "everything after id N" is a complete, ordered resume point.
import type { Event } from '../../protocol/api.js'
import type { Pool } from './db.js'

interface EventRow {
  id: number
  type: string
  subject_kind: string
  subject_id: string
  data: Record<string, unknown>
  created_at: Date
}

export function toEvent(r: EventRow): Event {
  return {
    id: r.id,
    type: r.type,
    subject: { kind: r.subject_kind, id: r.subject_id },
    data: r.data,
    at: r.created_at.toISOString()
  }
}

export async function readEvents(pool: Pool, afterId: number, limit: number): Promise<Event[]> {
  const { rows } = await pool.query<EventRow>('select * from events where id > $1 order by id limit $2', [
    afterId,
    limit
  ])
  return rows.map(toEvent)
}

/**
 * A team's events among the next `limit` after `afterId`: those about its
 * workloads and their placements (the cluster's own, about hosts, pools,
 * tokens and other teams, are not the team's to see), and the last id looked
 * at, so that a reader resumes after what it skipped too.
 */
export async function readTeamEvents(
  pool: Pool,
  afterId: number,
  limit: number,
  teamId: string
): Promise<{ events: Event[]; scanned: number; scannedTo: number }> {
  const { rows } = await pool.query<EventRow & { scanned_to: number; mine: boolean }>(
    `with scanned as (select * from events where id > $1 order by id limit $2)
     select s.*, (select max(id) from scanned) as scanned_to,
       (s.subject_kind = 'workload' and s.subject_id in (select w.id::text from workloads w where w.team_id = $3)) or
       (s.subject_kind = 'placement' and s.subject_id in
         (select p.id::text from placements p join workloads w on w.id = p.workload_id where w.team_id = $3)) as mine
     from scanned s order by s.id`,
    [afterId, limit, teamId]
  )
  return {
    events: rows.filter((r) => r.mine).map(toEvent),
    scanned: rows.length,
    scannedTo: Number(rows.at(-1)?.scanned_to ?? afterId)
  }
}

export async function lastEventId(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ id: number | null }>('select max(id) as id from events')
  return rows[0]?.id ?? 0
}
