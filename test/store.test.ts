// The store on a real PostgreSQL: migrations (idempotent, concurrent,
// refusing a newer database), the version check against a real PostgreSQL
// 15, and the database's refusal to double-book a GPU, raced by two
// schedulers over the same free GPUs.
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createLogger } from '../common/log.js'
import { Notifier } from '../coordinator/events/notifier.js'
import { createMetrics } from '../coordinator/metrics.js'
import { SchedulerLoop } from '../coordinator/scheduler/loop.js'
import { checkServerVersion, createPool, DatabaseVersionError } from '../coordinator/store/db.js'
import { DatabaseNewerError, migrate } from '../coordinator/store/migrate.js'
import { MIGRATIONS } from '../coordinator/store/migrations/index.js'
import { createWorkload } from '../coordinator/store/workloads.js'
import { addHost } from './helpers/coordinator.js'
import { freshDatabase } from './helpers/postgres.js'
import { freePort } from './helpers/redis.js'

const silent = createLogger('test', { level: 'silent' })

t.test('migrations: applied once, concurrently safe, newer database refused', async (t) => {
  const pool = createPool(await freshDatabase(t))
  t.teardown(async () => {
    await pool.end()
  })
  const results = await Promise.all([migrate(pool), migrate(pool), migrate(pool), migrate(pool)])
  t.same(results, Array(4).fill(MIGRATIONS.length), 'four coordinators starting at once agree')
  const { rows } = await pool.query<{ id: number }>('select id from gpumesh_migrations order by id')
  t.same(
    rows.map((r) => r.id),
    MIGRATIONS.map((m) => m.id),
    'each applied exactly once'
  )
  t.equal(await migrate(pool), MIGRATIONS.length, 'a second start is a no-op')
  await pool.query("insert into gpumesh_migrations (id, name) values (9999, 'from-the-future')")
  await t.rejects(migrate(pool), DatabaseNewerError)
  await t.rejects(
    migrate(pool),
    new RegExp(`at migration 9999 but this coordinator knows only up to ${MIGRATIONS.length}:`)
  )
})

t.test('PostgreSQL older than 16 is refused, naming the version found', async (t) => {
  const bin = '/usr/lib/postgresql/15/bin'
  if (!existsSync(join(bin, 'initdb')))
    throw new Error(
      'PostgreSQL 15 server binaries are missing (Debian: apt-get install postgresql-15; .ci/run does it)'
    )
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-pg15-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // PostgreSQL refuses to run as root: run it as the postgres system user then.
  const ids: { uid?: number; gid?: number } = {}
  if (userInfo().uid === 0) {
    ids.uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }))
    ids.gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }))
    chmodSync(dir, 0o755)
    chownSync(dir, ids.uid, ids.gid)
  }
  execFileSync(join(bin, 'initdb'), ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'postgres'], {
    stdio: 'ignore',
    ...ids
  })
  const port = await freePort()
  const server = spawn(
    join(bin, 'postgres'),
    ['-D', join(dir, 'data'), '-p', String(port), '-k', dir, '-c', 'listen_addresses='],
    { stdio: 'ignore', ...ids }
  )
  t.teardown(async () => {
    const exited = new Promise((resolve) => server.once('exit', resolve))
    server.kill('SIGINT')
    await exited
  })
  const pool = createPool(`postgresql://postgres@/postgres?host=${encodeURIComponent(dir)}&port=${port}`)
  t.teardown(async () => {
    await pool.end()
  })
  for (let i = 0; i < 100; i++) {
    try {
      await pool.query('select 1')
      break
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  const err = await checkServerVersion(pool).catch((e: unknown) => e)
  t.type(err, DatabaseVersionError)
  t.match(
    (err as Error).message,
    /^PostgreSQL 16 or newer is required; the server at DATABASE_URL is PostgreSQL 15\.\d+/
  )
})

t.test('the embedded server passes the version check', async (t) => {
  const pool = createPool(await freshDatabase(t))
  t.teardown(async () => {
    await pool.end()
  })
  t.match(await checkServerVersion(pool), /^1[6-9]\.|^[2-9]\d\./)
})

t.test('the database refuses a GPU held twice', async (t) => {
  const pool = createPool(await freshDatabase(t))
  t.teardown(async () => {
    await pool.end()
  })
  await migrate(pool)
  const host = await addHost(pool, 'h100-8x-nv18-nics', 'h1')
  const w = await createWorkload(pool, {
    name: 'a',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 1,
    run: { driver: 'process', command: ['x'] }
  })
  const placement = async (replica: number) =>
    (
      await pool.query<{ id: string }>(
        'insert into placements (workload_id, host_id, replica, gpus) values ($1, $2, $3, $4) returning id',
        [w.id, host, replica, [3]]
      )
    ).rows[0]?.id
  const p1 = await placement(0)
  await pool.query('insert into gpu_allocations (host_id, gpu_index, placement_id) values ($1, 3, $2)', [host, p1])
  const p2 = await pool
    .query("update placements set state = 'stopped' where id = $1", [p1])
    .then(async () => await placement(1))
  await t.rejects(
    pool.query('insert into gpu_allocations (host_id, gpu_index, placement_id) values ($1, 3, $2)', [host, p2]),
    { code: '23505' },
    'GPU 3 is already held'
  )
  await pool.query('update gpu_allocations set active = false where placement_id = $1', [p1])
  await pool.query('insert into gpu_allocations (host_id, gpu_index, placement_id) values ($1, 3, $2)', [host, p2])
  t.pass('once released, the GPU can be held again')
})

t.test('two schedulers race over the same free GPUs: each GPU is held once', async (t) => {
  const url = await freshDatabase(t)
  const setup = createPool(url)
  t.teardown(async () => {
    await setup.end()
  })
  await migrate(setup)
  for (let i = 0; i < 3; i++) await addHost(setup, 'h100-8x-nv18-nics', `h${i}`)
  // 40 one-GPU sessions for 24 GPUs: both schedulers see every GPU free and
  // every workload pending, and decide at the same moment on their own connections.
  for (let i = 0; i < 40; i++)
    await createWorkload(setup, {
      name: `s${i}`,
      kind: 'session',
      pool: 'h100-80gb-8x-nvlink',
      gpus: 1,
      run: { driver: 'process', command: ['x'] }
    })
  const schedulers = [0, 1].map(() => {
    const pool = createPool(url)
    const notifier = new Notifier(url, silent)
    t.teardown(async () => {
      await notifier.stop()
      await pool.end()
    })
    return new SchedulerLoop(pool, notifier, silent, createMetrics(pool))
  })
  for (let round = 0; round < 5; round++) await Promise.all(schedulers.map(async (s) => await s.pass()))
  const { rows } = await setup.query<{ host_id: string; gpu_index: number; n: number }>(
    'select host_id, gpu_index, count(*)::int as n from gpu_allocations where active group by host_id, gpu_index'
  )
  t.equal(rows.length, 24, 'every GPU allocated')
  t.ok(
    rows.every((r) => r.n === 1),
    'none twice'
  )
  const placed = await setup.query<{ n: number }>("select count(*)::int as n from workloads where state = 'placed'")
  t.equal(placed.rows[0]?.n, 24, 'as many workloads placed as GPUs')
  const replicas = await setup.query<{ n: number }>(
    "select count(*)::int as n from placements where state = 'assigned'"
  )
  t.equal(replicas.rows[0]?.n, 24, 'no workload placed twice')
})
