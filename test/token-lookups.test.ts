// The gateway's token check with the calls of one event-loop turn looked up
// by one statement: each call still gets its own answer from the table as it
// is when the call arrives (a token revoked before is refused), a database
// error fails every call of that turn, and nothing is kept between turns.
import t from 'tap'
import { createPool, type Pool } from '../coordinator/store/db.js'
import { migrate } from '../coordinator/store/migrate.js'
import { authorizeCall, createApiToken, revokeApiToken } from '../coordinator/store/tokens.js'
import { Mismatches } from './helpers/mismatches.js'
import { freshDatabase } from './helpers/postgres.js'

/** `pool`, counting the statements sent through it. */
function counting(pool: Pool): { pool: Pool; statements: () => number } {
  let n = 0
  const query = pool.query.bind(pool) as (...args: unknown[]) => unknown
  const counted = Object.create(pool) as Pool
  ;(counted as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    n++
    return query(...args)
  }
  return { pool: counted, statements: () => n }
}

t.test(
  'calls of one turn: one statement, each call its own answer; a revoked token is refused next time',
  async (t) => {
    const real = createPool(await freshDatabase(t), 4)
    t.teardown(() => real.end())
    await migrate(real)
    const admin = await createApiToken(real, 'admin', 'ops')
    const app = await createApiToken(real, 'invoke', 'app', ['chat'])
    const viewer = await createApiToken(real, 'viewer', 'ci')
    const gone = await createApiToken(real, 'invoke', 'old', ['chat'])
    await revokeApiToken(real, gone.id)

    const { pool, statements } = counting(real)
    // Warm: last_used_at writes (once a minute per token) are not lookups.
    await Promise.all([admin, app, viewer].map((k) => authorizeCall(pool, k.token, 'chat', null)))
    const before = statements()
    const cases: Array<[string, string | null, string, number]> = [
      ['admin, any endpoint', admin.token, 'embed', 200],
      ['admin again in the same turn', admin.token, 'chat', 200],
      ['invoke, its endpoint', app.token, 'chat', 200],
      ['invoke, another endpoint', app.token, 'embed', 403],
      ['viewer', viewer.token, 'chat', 403],
      ['revoked', gone.token, 'chat', 401],
      ['unknown', 'gmt_nothing', 'chat', 401],
      ['no token', null, 'chat', 401]
    ]
    const answers = await Promise.all(cases.map(([, token, endpoint]) => authorizeCall(pool, token, endpoint, null)))
    const bad = new Mismatches()
    cases.forEach(([kase, , , want], i) => {
      const a = answers[i]
      bad.check(kase, 'status', a?.ok === true ? 200 : a?.status, want)
    })
    t.same(bad.list, [], 'each call gets the answer for its own token and endpoint')
    t.equal(statements() - before, 1, 'the lookups of one turn are one statement')

    // Revoked between two calls: the next call is refused (nothing was kept).
    t.equal((await authorizeCall(pool, app.token, 'chat', null)).ok, true)
    await revokeApiToken(real, app.id)
    t.match(
      await authorizeCall(pool, app.token, 'chat', null),
      { ok: false, status: 401 },
      "a revoked token's next call"
    )
  }
)

t.test('a database that fails fails every call of the turn, and the next turn asks again', async (t) => {
  const real = createPool(await freshDatabase(t), 2)
  t.teardown(() => real.end())
  await migrate(real)
  const admin = await createApiToken(real, 'admin', 'ops')
  let fail = true
  const flaky = Object.create(real) as Pool
  const query = real.query.bind(real) as (...args: unknown[]) => Promise<unknown>
  ;(flaky as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args: unknown[]) =>
    fail ? Promise.reject(new Error('connection refused')) : query(...args)
  const results = await Promise.allSettled([1, 2, 3].map(() => authorizeCall(flaky, admin.token, 'chat', null)))
  t.same(
    results.map((r) => r.status),
    ['rejected', 'rejected', 'rejected'],
    'each call of the failed statement is rejected (the gateway answers 503)'
  )
  fail = false
  t.match(await authorizeCall(flaky, admin.token, 'chat', null), { ok: true }, 'the next call is looked up anew')
})
