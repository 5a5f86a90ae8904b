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

export async function lastEventId(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ id: number | null }>('select max(id) as id from events')
  return rows[0]?.id ?? 0
}
