// Events are written in the transaction that makes the change (outbox).
// appendEvents takes an advisory transaction lock first, so event ids are
// handed out in commit order: a reader that has seen id N will never later
// find a committed event below N. Call it last, right before commit, to keep
// the lock short.
import type { Client } from './db.js'

/** pg_advisory_xact_lock key for event writers: "gpumesh:events". */
const EVENTS_LOCK = 0x67706d32

export type SubjectKind = 'host' | 'pool' | 'workload' | 'placement' | 'token' | 'join-token' | 'team'

export interface NewEvent {
  type: string
  subjectKind: SubjectKind
  subjectId: string
  data?: Record<string, unknown>
}

export async function appendEvents(client: Client, events: NewEvent[]): Promise<number[]> {
  if (events.length === 0) return []
  await client.query('select pg_advisory_xact_lock($1)', [EVENTS_LOCK])
  const { rows } = await client.query<{ id: number }>(
    `insert into events (type, subject_kind, subject_id, data)
     select * from unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
     returning id`,
    [
      events.map((e) => e.type),
      events.map((e) => e.subjectKind),
      events.map((e) => e.subjectId),
      events.map((e) => JSON.stringify(e.data ?? {}))
    ]
  )
  return rows.map((r) => r.id)
}
