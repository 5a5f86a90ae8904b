// Join tokens good for several hosts (issue 18, fix 2): a token stops at its
// count or its expiry, every use is an event (never the secret), and agents
// racing for the last use get it exactly once. Tokens are made through the
// API and the CLI; peers say hello over the real mesh to a real coordinator
// on real PostgreSQL, and the coordinator's answer is what is checked.
import { join } from 'node:path'
import { execa } from 'execa'
import t, { type Test } from 'tap'
import { cleanEnv } from './helpers/agent.js'
import { ADMIN_TOKEN, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { bareNode, clusterKeyOf, sayHello } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'

const CLI = join(ROOT, 'dist/cli/main.js')

/** A new peer says hello with `token`; the coordinator's first answer: 'welcome' or the refusal's code. */
async function hello(t: Test, c: TestCoordinator, name: string, token: string): Promise<string> {
  const channel = await sayHello(await bareNode(t, clusterKeyOf(c)), c, name, token)
  const answer = await channel.receive(AbortSignal.timeout(30_000))
  return answer?.type === 'error' ? answer.code : (answer?.type ?? 'closed')
}

async function createToken(
  c: TestCoordinator,
  body: Record<string, unknown>
): Promise<{ id: string; token: string; uses: number }> {
  const r = await c.call('POST', '/v1/join-tokens', body)
  if (r.status !== 201) throw new Error(`join token: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

async function usedEvents(c: TestCoordinator, tokenId: string): Promise<Array<{ host: string; usesLeft: number }>> {
  const { rows } = await c.pool.query<{ data: { host: string; usesLeft: number } }>(
    "select data from events where type = 'join-token.used' and subject_id = $1 order by id",
    [tokenId]
  )
  return rows.map((r) => r.data)
}

t.test(
  'a 3-use token enrolls three hosts and refuses the fourth; each use is an event without the secret',
  async (t) => {
    const c = await startTestCoordinator(t)
    const { id, token, uses } = await createToken(c, { uses: 3, ttlSeconds: 600 })
    t.equal(uses, 3)
    const answers: string[] = []
    for (const name of ['n1', 'n2', 'n3', 'n4']) answers.push(await hello(t, c, name, token))
    t.same(answers, ['welcome', 'welcome', 'welcome', 'ERR_JOIN_TOKEN'], 'three welcomed, the fourth refused')

    const { rows: hosts } = await c.pool.query<{ id: string; name: string }>(
      'select id, name from hosts order by registered_at'
    )
    t.same(
      hosts.map((h) => h.name),
      ['n1', 'n2', 'n3']
    )
    t.same(
      (await usedEvents(c, id)).map(({ host, usesLeft }) => ({ host, usesLeft })),
      hosts.map((h, i) => ({ host: h.id, usesLeft: 2 - i })),
      'one join-token.used per host, with the uses left'
    )
    const { rows: leaked } = await c.pool.query("select id from events where data::text like '%gmj_%'")
    t.same(leaked, [], 'no event carries a join token')
  }
)

t.test('an expired token refuses; a bound token refuses another pool without spending a use', async (t) => {
  const c = await startTestCoordinator(t)
  const expired = await createToken(c, { uses: 5, ttlSeconds: 60 })
  // The shortest lifetime the API takes is a minute: the clock is moved in the database instead of waited out.
  await c.pool.query("update join_tokens set expires_at = now() - interval '1 second' where id = $1", [expired.id])
  const bound = await createToken(c, { uses: 1, pool: 'h100-80gb-8x-nvlink' })
  const answers = [await hello(t, c, 'late', expired.token), await hello(t, c, 'wrong-pool', bound.token)]
  t.same(answers, ['ERR_JOIN_TOKEN', 'ERR_POOL_MISMATCH'])
  const { rows } = await c.pool.query<{ id: string; used: number }>(
    'select id, used from join_tokens order by created_at'
  )
  t.same(
    rows,
    [
      { id: expired.id, used: 0 },
      { id: bound.id, used: 0 }
    ],
    'neither refusal spent a use'
  )
})

t.test('agents racing for the last uses: exactly as many win as there are uses', async (t) => {
  const c = await startTestCoordinator(t)
  const { id, token } = await createToken(c, { uses: 3 })
  t.equal(await hello(t, c, 'first', token), 'welcome')
  // Two uses left, six peers at once.
  const answers = await Promise.all(
    ['r1', 'r2', 'r3', 'r4', 'r5', 'r6'].map(async (name) => await hello(t, c, name, token))
  )
  t.same(
    answers.slice().sort(),
    ['ERR_JOIN_TOKEN', 'ERR_JOIN_TOKEN', 'ERR_JOIN_TOKEN', 'ERR_JOIN_TOKEN', 'welcome', 'welcome'],
    `answers: ${answers.join(', ')}`
  )
  const { rows } = await c.pool.query<{ used: number; hosts: number }>(
    'select used, (select count(*) from hosts)::int as hosts from join_tokens where id = $1',
    [id]
  )
  t.same(rows, [{ used: 3, hosts: 3 }], 'three uses, three hosts')
  t.same(
    (await usedEvents(c, id)).map((e) => e.usesLeft),
    [2, 1, 0]
  )
})

t.test('uses is checked: 1 to 100000', async (t) => {
  const c = await startTestCoordinator(t)
  const cases: Array<[unknown, number]> = [
    [0, 400],
    [100_001, 400],
    ['3', 400],
    [1.5, 400],
    [100_000, 201],
    [undefined, 201]
  ]
  const m = new Mismatches()
  for (const [uses, status] of cases) {
    const r = await c.call('POST', '/v1/join-tokens', uses === undefined ? {} : { uses })
    m.check(
      `uses ${JSON.stringify(uses)}`,
      'answer',
      status === 201 ? { status: r.status, uses: r.body.uses } : { status: r.status, code: r.body.code },
      status === 201 ? { status, uses: uses ?? 1 } : { status, code: 'VALIDATION' }
    )
  }
  t.same(m.list, [], 'each count: created with it, or refused')
})

t.test('gpumesh join-token create --uses N --ttl S, as a process', async (t) => {
  const c = await startTestCoordinator(t)
  const cli = async (args: string[]) =>
    await execa(process.execPath, [CLI, ...args], {
      env: cleanEnv({ GPUMESH_API: c.api, GPUMESH_TOKEN: ADMIN_TOKEN }),
      extendEnv: false,
      reject: false,
      timeout: 60_000
    })
  const human = await cli(['join-token', 'create', '--uses', '2', '--ttl', '600'])
  t.equal(human.exitCode, 0, human.stderr)
  t.match(human.stdout, /^Created join token [0-9a-f-]{36} \(good for 2 hosts\), valid until \d{4}-/)
  const token = /^\s+(gmj_\S+)$/m.exec(human.stdout)?.[1] ?? ''
  t.same(
    [await hello(t, c, 'c1', token), await hello(t, c, 'c2', token), await hello(t, c, 'c3', token)],
    ['welcome', 'welcome', 'ERR_JOIN_TOKEN'],
    'the printed token enrolls two hosts'
  )

  const json = await cli(['--json', 'join-token', 'create', '--uses', '7'])
  t.equal(json.exitCode, 0, json.stderr)
  t.match(JSON.parse(json.stdout), { uses: 7, token: /^gmj_/, pool: null })
  const zero = await cli(['join-token', 'create', '--uses', '0'])
  t.equal(zero.exitCode, 2, 'a usage error')
  t.match(zero.stderr, /--uses/)
})
