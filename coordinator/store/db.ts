// The PostgreSQL connection pool and the version check done before anything
// else touches the database.
import pg from 'pg'
import { ConfigError } from '../../common/config-error.js'
import { within } from '../../common/daemon/within.js'

export type Pool = pg.Pool
export type Client = pg.PoolClient

export const MIN_SERVER_VERSION_NUM = 160000

export class DatabaseVersionError extends ConfigError {
  constructor(found: string) {
    super(`PostgreSQL 16 or newer is required; the server at DATABASE_URL is ${found}`, {
      code: 'ERR_DATABASE_VERSION'
    })
    this.name = 'DatabaseVersionError'
  }
}

// bigint columns (event ids) as JS numbers: ids stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v))

/** The same connection string for another database (also for socket URLs like postgresql://u:p@/db?host=/dir, which WHATWG URL rejects). */
export function withDatabase(url: string, database: string): string {
  const m = /^(postgres(?:ql)?:\/\/[^/?]*)(?:\/[^?]*)?(\?.*)?$/.exec(url)
  if (m === null) throw new Error('not a postgresql:// connection string')
  return `${m[1] as string}/${encodeURIComponent(database)}${m[2] ?? ''}`
}

export function createPool(url: string, max = 20): Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    idleTimeoutMillis: 30_000,
    application_name: 'gpumesh-coordinator'
  })
  // An idle client losing its server (restart, network) must not crash us; the pool replaces it.
  pool.on('error', () => {})
  return pool
}

/** Resolves once the database answers `select 1`; rejects on an error or after `ms` (a connection attempt may hang). */
export async function ping(pool: Pool, ms = 2000): Promise<void> {
  await within(pool.query('select 1'), ms)
}

/** Throws DatabaseVersionError for a server older than 16, naming the version found. */
export async function checkServerVersion(pool: Pool): Promise<string> {
  const { rows } = await pool.query<{ num: string; version: string }>(
    "select current_setting('server_version_num') as num, current_setting('server_version') as version"
  )
  const row = rows[0]
  if (row === undefined || Number(row.num) < MIN_SERVER_VERSION_NUM)
    throw new DatabaseVersionError(`PostgreSQL ${row?.version ?? 'of unknown version'}`)
  return row.version
}

/** Runs `fn` in a transaction; rolls back on any error. */
export async function transaction<T>(pool: Pool, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query('begin')
    const result = await fn(client)
    await client.query('commit')
    return result
  } catch (err) {
    await client.query('rollback').catch(() => {})
    throw err
  } finally {
    client.release()
  }
}
