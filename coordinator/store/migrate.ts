// Forward-only numbered migrations (graphile-worker / pg-boss style): each in
// its own transaction, all under one advisory lock so coordinators starting
// together apply them once; a database newer than this code is refused.
import { ConfigError } from '../../common/config-error.js'
import type { Logger } from '../../common/log.js'
import type { Pool } from './db.js'
import { MIGRATIONS } from './migrations/index.js'

/** pg_advisory_lock key: "gpumesh:migrate" folded to an int. */
const MIGRATION_LOCK = 0x67706d31

export class DatabaseNewerError extends ConfigError {
  constructor(found: number, known: number) {
    super(
      `the database is at migration ${found} but this coordinator knows only up to ${known}: run a newer gpumesh-coordinator`,
      { code: 'ERR_DATABASE_NEWER' }
    )
    this.name = 'DatabaseNewerError'
  }
}

export async function migrate(pool: Pool, log?: Logger): Promise<number> {
  const client = await pool.connect()
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK])
    await client.query(`create table if not exists gpumesh_migrations (
      id integer primary key,
      name text not null,
      applied_at timestamptz not null default now()
    )`)
    const { rows } = await client.query<{ max: number | null }>('select max(id) as max from gpumesh_migrations')
    const current = rows[0]?.max ?? 0
    const latest = MIGRATIONS[MIGRATIONS.length - 1]?.id ?? 0
    if (current > latest) throw new DatabaseNewerError(current, latest)
    for (const m of MIGRATIONS.filter((m) => m.id > current)) {
      await client.query('begin')
      try {
        await client.query(m.sql)
        await client.query('insert into gpumesh_migrations (id, name) values ($1, $2)', [m.id, m.name])
        await client.query('commit')
      } catch (err) {
        await client.query('rollback')
        throw new Error(`migration ${m.id} (${m.name}) failed: ${(err as Error).message}`)
      }
      log?.info({ migration: m.id, name: m.name }, 'migration applied')
    }
    return latest
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {})
    client.release()
  }
}
