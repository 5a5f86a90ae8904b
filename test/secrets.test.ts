// Secrets stay with those who may see them (issue 16, item 6): viewer tokens
// read `run.env` names but not values, and a bootstrap admin token that was
// replaced (GPUMESH_ADMIN_TOKEN changed) stops being a credential. The docker
// driver's half (values never on a command line) is in runtime.test.ts.
import t from 'tap'
import { ADMIN_TOKEN, addHost, startTestCoordinator } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'

const env = { HF_TOKEN: 'hf_secret-value', MODEL: 'llama' }
const spec = {
  name: 'chat',
  kind: 'session',
  pool: 'h100-80gb-8x-nvlink',
  gpus: 1,
  run: { driver: 'process', command: ['python3', 'serve.py'], env }
}

t.test('viewers see run.env names with values redacted; operators and admins see values', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const token = async (role: string) => (await c.call('POST', '/v1/tokens', { role, name: role })).body.token as string
  const viewer = await token('viewer')
  const operator = await token('operator')
  const created = await c.call('POST', '/v1/workloads', spec, operator)
  t.equal(created.status, 201)
  const id = created.body.id as string
  const redacted = { HF_TOKEN: '<redacted>', MODEL: '<redacted>' }
  const m = new Mismatches()
  for (const [who, bearer, want] of [
    ['viewer', viewer, redacted],
    ['operator', operator, env],
    ['admin', ADMIN_TOKEN, env]
  ] as const) {
    const one = await c.call('GET', `/v1/workloads/${id}`, undefined, bearer)
    m.check(who, 'GET /v1/workloads/:id run.env', one.body.spec?.run?.env, want)
    const list = await c.call('GET', '/v1/workloads', undefined, bearer)
    m.check(who, 'GET /v1/workloads run.env', list.body.items?.[0]?.spec?.run?.env, want)
  }
  t.same(m.list, [])
})

t.test('a changed GPUMESH_ADMIN_TOKEN revokes the previous bootstrap token', async (t) => {
  const first = await startTestCoordinator(t, { adminToken: 'gmt_bootstrap-token-A' })
  const { stateDir, databaseUrl } = first
  t.equal((await first.call('GET', '/v1/hosts', undefined, 'gmt_bootstrap-token-A')).status, 200, 'A works at first')
  await first.stop()
  const second = await startTestCoordinator(t, { adminToken: 'gmt_bootstrap-token-B', stateDir, databaseUrl })
  const m = new Mismatches()
  m.check('token A', 'status', (await second.call('GET', '/v1/hosts', undefined, 'gmt_bootstrap-token-A')).status, 401)
  m.check('token B', 'status', (await second.call('GET', '/v1/hosts', undefined, 'gmt_bootstrap-token-B')).status, 200)
  m.check(
    'token B',
    'is admin',
    (await second.call('POST', '/v1/tokens', { role: 'viewer', name: 'v' }, 'gmt_bootstrap-token-B')).status,
    201
  )
  await second.stop()
  // Back to A (an operator undoing a change): A is the configured token again, B is not.
  const third = await startTestCoordinator(t, { adminToken: 'gmt_bootstrap-token-A', stateDir, databaseUrl })
  m.check('back to A', 'A', (await third.call('GET', '/v1/hosts', undefined, 'gmt_bootstrap-token-A')).status, 200)
  m.check('back to A', 'B', (await third.call('GET', '/v1/hosts', undefined, 'gmt_bootstrap-token-B')).status, 401)
  t.same(m.list, [])
})
