// API tokens: created with a role (invoke ones with the endpoints they may
// call), listed without their secrets, revoked so that their very next
// request is refused. A real coordinator over HTTP, the CLI as a process.
import t from 'tap'
import { gpumesh } from './helpers/cli.js'
import { startTestCoordinator } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'

t.test('create, list, revoke; invoke tokens open no /v1 route', async (t) => {
  const c = await startTestCoordinator(t)

  const made = await gpumesh(c.api, [
    '--json',
    'tokens',
    'create',
    '--role',
    'invoke',
    '--name',
    'app',
    '--endpoint',
    'chat',
    '--endpoint',
    'embed'
  ])
  t.equal(made.exitCode, 0, `tokens create exits 0 (${made.stderr})`)
  const app = JSON.parse(made.stdout)
  t.match(app, { name: 'app', role: 'invoke', endpoints: ['chat', 'embed'], token: /^gmt_/ })
  const viewer = (await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'ci' })).body
  t.equal(viewer.endpoints, null, 'a viewer token names no endpoints')

  // Bad bodies: each refused with 400 and a sentence that says what to fix.
  const bad = new Mismatches()
  for (const [kase, body, detail] of [
    ['invoke without endpoints', { role: 'invoke', name: 'x' }, /needs "endpoints"/],
    ['viewer with endpoints', { role: 'viewer', name: 'x', endpoints: ['chat'] }, /for invoke tokens only/],
    ['empty endpoints', { role: 'invoke', name: 'x', endpoints: [] }, /endpoints must NOT have fewer than 1/],
    ['twice the same endpoint', { role: 'invoke', name: 'x', endpoints: ['a', 'a'] }, /duplicate/],
    ['not a workload name', { role: 'invoke', name: 'x', endpoints: ['Chat!'] }, /endpoints\/0 must match pattern/],
    [
      '65 endpoints',
      { role: 'invoke', name: 'x', endpoints: [...Array(65).keys()].map((i) => `e${i}`) },
      /more than 64/
    ]
  ] as const) {
    const r = await c.call('POST', '/v1/tokens', body)
    bad.check(kase, 'status', r.status, 400)
    bad.check(kase, 'detail', detail.test(String(r.body.detail)), true)
  }
  t.same(bad.list, [], 'bad token bodies get 400 with a clear detail')

  // An invoke token is for the gateway: every /v1 route refuses it, saying so.
  const refused = new Mismatches()
  for (const [method, path] of [
    ['GET', '/v1/hosts'],
    ['GET', '/v1/workloads'],
    ['GET', '/v1/tokens'],
    ['GET', '/v1/events'],
    ['POST', '/v1/tokens']
  ] as const) {
    const r = await c.call(method, path, method === 'POST' ? { role: 'admin', name: 'x' } : undefined, app.token)
    refused.check(`${method} ${path}`, 'status', r.status, 403)
    refused.check(`${method} ${path}`, 'says why', /through the gateway only/.test(String(r.body.detail)), true)
  }
  t.same(refused.list, [], 'an invoke token gets 403 on /v1 routes')

  // Listing: newest first, revoked included, never a secret.
  const listed = await gpumesh(c.api, ['--json', 'tokens', 'list'])
  const table = await gpumesh(c.api, ['tokens', 'list'])
  const items = JSON.parse(listed.stdout) as Array<Record<string, unknown>>
  t.same(
    items.map((i) => i.name),
    ['ci', 'app', 'bootstrap'],
    'tokens are listed newest first'
  )
  t.same(
    Object.keys(items[1] ?? {}).sort(),
    ['createdAt', 'endpoints', 'id', 'lastUsedAt', 'name', 'revokedAt', 'role', 'team'],
    'a listed token has no secret and no hash'
  )
  for (const secret of [app.token, viewer.token])
    t.notOk(listed.stdout.includes(secret) || table.stdout.includes(secret), 'no secret in the list output')
  t.match(table.stdout, /app\s+invoke\s+-\s+chat,embed/, 'the table shows the role, team and endpoints')

  // Revoking: the token's next request is refused; revoking again is fine; unknown ids are 404.
  t.equal((await c.call('GET', '/v1/hosts', undefined, viewer.token)).status, 200, 'the viewer token works')
  const revoked = await gpumesh(c.api, ['tokens', 'revoke', viewer.id])
  t.equal(revoked.exitCode, 0, `tokens revoke exits 0 (${revoked.stderr})`)
  const after = await c.call('GET', '/v1/hosts', undefined, viewer.token)
  t.equal(after.status, 401, 'the revoked token is refused on its next request')
  t.equal((await c.call('DELETE', `/v1/tokens/${viewer.id}`)).status, 204, 'revoking twice is no error')
  const unknown = await c.call('DELETE', '/v1/tokens/00000000-0000-4000-8000-000000000000')
  t.equal(unknown.status, 404, 'an unknown token id is 404')
  const { rows } = await c.pool.query<{ data: unknown }>(
    "select data from events where type = 'token.revoked' and subject_id = $1",
    [viewer.id]
  )
  t.same(
    rows.map((r) => r.data),
    [{ name: 'ci', role: 'viewer' }],
    'one token.revoked event'
  )
  const ci = (JSON.parse((await gpumesh(c.api, ['--json', 'tokens', 'list'])).stdout) as any[]).find(
    (i) => i.id === viewer.id
  )
  t.match(ci, { revokedAt: /^\d{4}-/ }, 'the list shows when it was revoked')

  // Only admins see or revoke tokens.
  const op = (await c.call('POST', '/v1/tokens', { role: 'operator', name: 'ops' })).body
  const asOperator = await gpumesh(c.api, ['tokens', 'revoke', app.id], op.token)
  t.equal(asOperator.exitCode, 1, 'an operator may not revoke')
  t.match(asOperator.stderr, /needs the admin role/, 'and is told why')
})
