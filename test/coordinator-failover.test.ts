// Coordinators as real processes: kill -9 one between accepting a workload
// and placing it (embedded PostgreSQL included), and kill the leader of two.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { LEADER_LOCK } from '../coordinator/leader.js'
import { createPool } from '../coordinator/store/db.js'
import { ADMIN_TOKEN, addHost, eventually } from './helpers/coordinator.js'
import { call, isLeader, killHard, spawnCoordinator } from './helpers/coordinator-process.js'
import { freshDatabase } from './helpers/postgres.js'

t.test('kill -9 between accepting and placing: placed once after restart, no event lost', async (t) => {
  const url = await freshDatabase(t)
  // Hold the scheduler lock ourselves: the coordinator accepts but cannot place.
  const holder = new pg.Client({ connectionString: url })
  await holder.connect()
  t.equal((await holder.query('select pg_try_advisory_lock($1) as ok', [LEADER_LOCK])).rows[0]?.ok, true)
  const first = await spawnCoordinator(t, { DATABASE_URL: url })
  const pool = createPool(url, 2)
  t.teardown(async () => {
    await pool.end()
  })
  await addHost(pool, 'h100-8x-nv18-nics', 'h1')
  const accepted = await call(first.api, 'POST', '/v1/workloads', {
    name: 'crash',
    kind: 'recipe',
    pool: 'h100-80gb-8x-nvlink',
    hosts: 1,
    gpus: 8,
    run: { driver: 'process', command: ['train'] }
  })
  t.equal(accepted.status, 201)
  // Proof that it tried to lead since: its election connection ran the lock attempt again (and got false: we hold the lock).
  const since = (await holder.query<{ now: Date }>('select clock_timestamp() as now')).rows[0]?.now
  await eventually(
    async () => {
      const { rows } = await holder.query(
        "select 1 from pg_stat_activity where application_name = 'gpumesh-leader' and query like '%pg_try_advisory_lock%' and query_start > $1",
        [since]
      )
      return rows.length > 0 ? true : undefined
    },
    20_000,
    'a leader election attempt after the workload was accepted'
  )
  t.equal(
    (await call(first.api, 'GET', `/v1/workloads/${accepted.body.id as string}`)).body.state,
    'pending',
    'not placed while another holds the lock'
  )

  await killHard(first)
  await holder.end()
  const second = await spawnCoordinator(t, { DATABASE_URL: url })
  const placed = await eventually(
    async () => {
      const w = await call(second.api, 'GET', `/v1/workloads/${accepted.body.id as string}`)
      return w.body?.state === 'placed' ? w.body : undefined
    },
    20_000,
    'placement after restart'
  )
  t.equal(placed.placements.length, 1, 'placed once')
  t.same(placed.placements[0].gpus, [0, 1, 2, 3, 4, 5, 6, 7])
  const { rows } = await pool.query<{ type: string; n: number }>(
    'select type, count(*)::int as n from events group by type order by type'
  )
  const ids = await pool.query<{ id: number }>('select id from events order by id')
  t.same(
    Object.fromEntries(rows.map((r) => [r.type, r.n])),
    { 'host.registered': 1, 'placement.created': 1, 'pool.created': 1, 'workload.created': 1, 'workload.placed': 1 },
    'every event once: the one written before the crash included'
  )
  t.same(
    ids.rows.map((r) => r.id),
    [1, 2, 3, 4, 5],
    'no gap, no repeat'
  )
})

t.test('kill -9 with embedded PostgreSQL: the restart recovers the orphaned server and the data', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-crash-'))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const first = await spawnCoordinator(t, { GPUMESH_LOG_LEVEL: 'debug' }, stateDir)
  const token = await call(first.api, 'POST', '/v1/tokens', { role: 'viewer', name: 'survives' })
  t.equal(token.status, 201)
  const joinToken = await call(first.api, 'POST', '/v1/join-tokens', {})
  await fetch(`${first.api}/v1/pools`, { headers: { authorization: `Bearer ${token.body.token as string}` } })
  const password = readFileSync(join(stateDir, 'postgres.password'), 'utf8').trim()
  const secrets = {
    admin: ADMIN_TOKEN,
    viewer: token.body.token as string,
    join: joinToken.body.token as string,
    postgres: password
  }
  t.same(
    Object.entries(secrets)
      .filter(([, secret]) => first.output().includes(secret))
      .map(([name]) => name),
    [],
    'no secret in the log (debug level)'
  )
  await killHard(first)
  const second = await spawnCoordinator(t, {}, stateDir)
  t.match(
    second.output(),
    /stopping a PostgreSQL left running/,
    'the orphaned PostgreSQL was stopped and started again'
  )
  const r = await fetch(`${second.api}/v1/pools`, {
    headers: { authorization: `Bearer ${token.body.token as string}` }
  })
  t.equal(r.status, 200, 'the token created before the crash still works')
  const exited = new Promise<number | null>((resolve) => second.child.once('exit', (code) => resolve(code)))
  second.child.kill('SIGTERM')
  t.equal(await exited, 0, 'SIGTERM stops cleanly')
  t.throws(() => readFileSync(join(stateDir, 'postgres', 'postmaster.pid')), 'and stops embedded PostgreSQL with it')
})

t.test('the leader dies: the other coordinator takes over', async (t) => {
  const url = await freshDatabase(t)
  const a = await spawnCoordinator(t, { DATABASE_URL: url })
  const b = await spawnCoordinator(t, { DATABASE_URL: url })
  const leader = await eventually(
    async () => ((await isLeader(a.api)) ? a : (await isLeader(b.api)) ? b : undefined),
    10_000,
    'a leader'
  )
  const follower = leader === a ? b : a
  t.notOk(await isLeader(follower.api), 'only one leader')
  const pool = createPool(url, 2)
  await addHost(pool, 'h100-8x-nv18-nics', 'h1')
  await pool.end()

  // How fast is a bench figure (bench scheduler: leader_takeover_ms); here only that it happens.
  await killHard(leader)
  await eventually(async () => ((await isLeader(follower.api)) ? true : undefined), 30_000, 'takeover')
  const w = await call(follower.api, 'POST', '/v1/workloads', {
    name: 'after',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 2,
    run: { driver: 'process', command: ['bash'] }
  })
  await eventually(
    async () =>
      (await call(follower.api, 'GET', `/v1/workloads/${w.body.id as string}`)).body.state === 'placed'
        ? true
        : undefined,
    10_000,
    'placement by the new leader'
  )
})
