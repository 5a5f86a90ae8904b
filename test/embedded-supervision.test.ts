// The coordinator's embedded PostgreSQL under faults, all real processes: a
// postmaster killed with SIGKILL is restarted (crash recovery keeps the data),
// the systemd watchdog goes unfed while the database does not answer, /readyz
// says so without naming any path, and a PostgreSQL that cannot be started
// again makes the coordinator exit non-zero for systemd to restart it.
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { eventually } from './helpers/coordinator.js'
import { call, spawnCoordinator } from './helpers/coordinator-process.js'
import { notifySocket } from './helpers/notify-socket.js'

/** A state folder removed at the end (its data folder may lie elsewhere, see REACHABLE_DATA_ROOT). */
function stateFolder(t: Test): string {
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-pgkill-'))
  t.teardown(() => {
    const dataDir = realpathSync(join(stateDir, 'postgres'))
    rmSync(stateDir, { recursive: true, force: true })
    rmSync(dataDir, { recursive: true, force: true })
  })
  return stateDir
}

/**
 * kill -9 of the postmaster (its pid heads postmaster.pid), and its data
 * folder made unreadable so that no restart can succeed until the returned
 * function gives the folder its mode back.
 */
function killPostgres(t: Test, stateDir: string): () => void {
  const dataDir = realpathSync(join(stateDir, 'postgres'))
  const mode = statSync(dataDir).mode & 0o777
  const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  process.kill(pid, 'SIGKILL')
  chmodSync(dataDir, 0)
  const release = () => {
    chmodSync(dataDir, mode)
  }
  t.teardown(release)
  return release
}

const logLines = (output: string, msg: string) => output.split('\n').filter((l) => l.includes(`"msg":"${msg}`))

t.test('kill -9 of the embedded PostgreSQL: restarted with its data, no watchdog ping while down', async (t) => {
  const notify = await notifySocket(t)
  const stateDir = stateFolder(t)
  // What systemd sets for WatchdogSec=400ms: a health check every 200 ms.
  const c = await spawnCoordinator(t, { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '400000' }, stateDir)
  const dataDir = realpathSync(join(stateDir, 'postgres'))
  await notify.next(/^WATCHDOG=1$/)
  const token = await call(c.api, 'POST', '/v1/tokens', { role: 'viewer', name: 'written before' })

  const release = killPostgres(t, stateDir)
  const outage = await eventually(
    async () => {
      const r = await fetch(`${c.api}/readyz`)
      return r.status === 503 ? { status: r.status, body: await r.text() } : undefined
    },
    30_000,
    '/readyz 503'
  )
  // The coordinator's word that a check failed; with its notifications in order, any ping of an earlier check is before it.
  await notify.next(/^STATUS=database not answering/)
  const marker = notify.messages().findIndex((m) => m.startsWith('STATUS=database not answering'))
  await eventually(
    () => (logLines(c.output(), 'embedded PostgreSQL did not start').length >= 2 ? true : undefined),
    30_000,
    'two failed restarts'
  )
  const releasedAt = Date.now()
  release()

  const ready = await eventually(
    async () => {
      const r = await fetch(`${c.api}/readyz`)
      return r.status === 200 ? r.status : undefined
    },
    60_000,
    '/readyz 200 again'
  )
  await eventually(
    () => (notify.messages().slice(marker).includes('WATCHDOG=1') ? true : undefined),
    30_000,
    'a watchdog ping once the database answers'
  )
  const pingsWhileDown = notify
    .received()
    .slice(marker)
    .filter((r) => r.message === 'WATCHDOG=1' && r.at < releasedAt).length
  const withToken = await fetch(`${c.api}/v1/pools`, {
    headers: { authorization: `Bearer ${token.body?.token as string}` }
  })
  const internals = [stateDir, dataDir, '.s.PGSQL', 'ENOENT', 'ECONNREFUSED'].filter((s) => outage.body.includes(s))
  t.same(
    {
      tokenCreated: token.status,
      readyzWhileDown: outage.status,
      internalsInReadyz: internals,
      pathLikeInReadyz: /(^|[\s"'])\/(?!readyz)[\w.-]+\//.test(outage.body),
      pingsWhileDown,
      readyzAfter: ready,
      tokenWrittenBeforeWorks: withToken.status,
      restartedLogged: logLines(c.output(), 'embedded PostgreSQL restarted').length
    },
    {
      tokenCreated: 201,
      readyzWhileDown: 503,
      internalsInReadyz: [],
      pathLikeInReadyz: false,
      pingsWhileDown: 0,
      readyzAfter: 200,
      tokenWrittenBeforeWorks: 200,
      restartedLogged: 1
    },
    'the outage and its end, as a client and systemd see them',
    { readyzBody: outage.body, output: c.output().slice(-3000) }
  )
})

t.test('an embedded PostgreSQL that cannot be started again: the coordinator exits 1', async (t) => {
  const stateDir = stateFolder(t)
  const c = await spawnCoordinator(t, {}, stateDir)
  const exited = new Promise<number | null>((resolve) => c.child.once('exit', (code) => resolve(code)))
  killPostgres(t, stateDir)
  const code = await exited
  t.same(
    {
      exitCode: code,
      failedRestarts: logLines(c.output(), 'embedded PostgreSQL did not start').length > 1,
      gaveUp: logLines(c.output(), 'embedded PostgreSQL cannot be restarted').length
    },
    { exitCode: 1, failedRestarts: true, gaveUp: 1 },
    'restarts given up, exit 1 (systemd restarts on-failure; 78 would stop it)',
    { output: c.output().slice(-3000) }
  )
})
