// The admin API's contract: bearer roles on every /v1 route, problem+json
// errors with stable codes, bad input refused with nothing half-written,
// cursor pagination, OpenAPI, health and metrics.
import t from 'tap'
import { ERRORS } from '../protocol/errors.js'
import { addHost, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'

const run = { driver: 'process', command: ['python3', 'serve.py'] }
const session = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  kind: 'session',
  pool: 'h100-80gb-8x-nvlink',
  gpus: 1,
  run,
  ...extra
})
const endpoint = (name: string, pool: string) => ({ name, kind: 'endpoint', replicas: 1, gpus: 1, pools: [pool], run })

async function counts(c: TestCoordinator): Promise<{ workloads: number; events: number }> {
  const { rows } = await c.pool.query<{ w: number; e: number }>(
    'select (select count(*) from workloads)::int as w, (select count(*) from events)::int as e'
  )
  return { workloads: rows[0]?.w ?? -1, events: rows[0]?.e ?? -1 }
}

t.test('authentication and roles', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const none = await c.call('GET', '/v1/hosts', undefined, null)
  t.equal(none.status, 401)
  t.equal(none.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  t.match(none.body, { code: 'UNAUTHORIZED', status: 401, type: 'urn:gpumesh:problem:unauthorized' })
  t.equal((await c.call('GET', '/v1/hosts', undefined, 'gmt_not-a-real-token')).status, 401, 'unknown token')
  t.equal((await c.call('GET', '/v1/events?after=0', undefined, null)).status, 401, 'the event stream is protected too')

  const viewer = await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'ci' })
  t.equal(viewer.status, 201)
  t.match(viewer.body, { role: 'viewer', name: 'ci', token: /^gmt_/ })
  const operator = (await c.call('POST', '/v1/tokens', { role: 'operator', name: 'ops' })).body.token as string
  const v = viewer.body.token as string

  t.equal((await c.call('GET', '/v1/hosts', undefined, v)).status, 200, 'viewer reads')
  const denied = await c.call('POST', '/v1/workloads', session('w1'), v)
  t.equal(denied.status, 403, 'viewer cannot mutate')
  t.equal(denied.body.code, 'FORBIDDEN')
  t.equal(
    (await c.call('POST', '/v1/tokens', { role: 'admin', name: 'x' }, operator)).status,
    403,
    'operator cannot mint tokens'
  )
  t.equal((await c.call('POST', '/v1/join-tokens', {}, operator)).status, 403, 'operator cannot mint join tokens')
  t.equal((await c.call('POST', '/v1/workloads', session('w1'), operator)).status, 201, 'operator creates workloads')

  const { rows } = await c.pool.query<{ token_hash: Buffer }>('select token_hash from api_tokens')
  t.ok(
    rows.every((r) => r.token_hash.length === 32 && !r.token_hash.toString('utf8').includes('gmt_')),
    'only SHA-256 hashes are stored'
  )

  const join = await c.call('POST', '/v1/join-tokens', { pool: 'h100-80gb-8x-nvlink', ttlSeconds: 600 })
  t.equal(join.status, 201)
  t.match(join.body, { token: /^gmj_/, pool: 'h100-80gb-8x-nvlink' })
  t.ok(Math.abs(Date.parse(join.body.expiresAt as string) - Date.now() - 600_000) < 60_000, 'expires in ttlSeconds')
})

t.test('bad input: 4xx problem+json and nothing written', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  await addHost(c.pool, 'l40s-1x', 'l1')
  const before = await counts(c)
  const cases: Array<[string, unknown, number, string]> = [
    ['wrong type', { ...session('a'), gpus: '4' }, 400, 'VALIDATION'],
    ['zero GPUs', session('a', { gpus: 0 }), 400, 'VALIDATION'],
    ['negative GPUs', session('a', { gpus: -2 }), 400, 'VALIDATION'],
    ['unknown field', session('a', { priority: 9 }), 400, 'VALIDATION'],
    ['unknown kind', { ...session('a'), kind: 'batch' }, 400, 'VALIDATION'],
    ['bad name', session('A B'), 400, 'VALIDATION'],
    ['empty command', session('a', { run: { driver: 'process', command: [] } }), 400, 'VALIDATION'],
    ['unknown pool', session('a', { pool: 'tpu-v5-8x' }), 422, 'UNKNOWN_POOL'],
    ['more GPUs than any host has', session('a', { gpus: 16 }), 422, 'NOT_ENOUGH_GPUS'],
    ['endpoint on a pool it may not use', endpoint('e', 'l40s-48gb-1x'), 201, ''],
    ['not JSON', '{"name": "a",', 400, 'BAD_BODY'],
    ['JSON array', '[1,2]', 400, 'VALIDATION']
  ]
  const m = new Mismatches()
  for (const [what, body, status, code] of cases) {
    const r = await c.call('POST', '/v1/workloads', body)
    m.check(what, 'status', r.status, status)
    if (code !== '') {
      m.check(what, 'code', r.body.code, code)
      m.check(what, 'content type', r.headers.get('content-type'), 'application/problem+json; charset=utf-8')
      m.check(what, `says why (${String(r.body.detail)})`, typeof r.body.detail, 'string')
    }
  }
  t.same(m.list, [], 'each bad body gets its status and a problem+json with its code and why')
  const after = await counts(c)
  t.equal(after.workloads, before.workloads + 1, 'only the valid workload was written')

  // The training-only pool refuses endpoints.
  await c.call('PATCH', '/v1/pools/l40s-48gb-1x', { kind: 'training' })
  t.match(
    await c.call('POST', '/v1/workloads', endpoint('e2', 'l40s-48gb-1x')),
    { status: 422, body: { code: 'POOL_KIND' } },
    'a training pool refuses an endpoint'
  )
  t.match(
    await c.call('POST', '/v1/workloads', endpoint('e', 'h100-80gb-8x-nvlink')),
    { status: 409, body: { code: 'NAME_TAKEN' } },
    'a name in use'
  )

  // Raw requests for what fetch's JSON helper would not send.
  const raw = async (body: Buffer | string, type = 'application/json') => {
    const r = await fetch(`${c.api}/v1/workloads`, {
      method: 'POST',
      headers: { authorization: 'Bearer gmt_test-admin-token-0123456789abcdef', 'content-type': type },
      body
    })
    return { status: r.status, body: (await r.json()) as { code: string } }
  }
  const invalidUtf8 = Buffer.concat([
    Buffer.from('{"name":"'),
    Buffer.from([0xc3, 0x28]),
    Buffer.from('","kind":"session"}')
  ])
  t.match(await raw(invalidUtf8), { status: 400, body: { code: 'BAD_BODY' } }, 'invalid UTF-8')
  t.match(
    await raw(
      JSON.stringify({ ...session('huge'), run: { driver: 'process', command: ['x'.repeat(2 * 1024 * 1024)] } })
    ),
    { status: 413, body: { code: 'PAYLOAD_TOO_LARGE' } },
    'oversize body'
  )
  t.match(await raw('name=a', 'application/x-www-form-urlencoded'), {
    status: 415,
    body: { code: 'UNSUPPORTED_MEDIA_TYPE' }
  })
  t.match(await c.call('GET', '/v1/workloads/not-a-uuid'), { status: 400, body: { code: 'VALIDATION' } })
  t.match(await c.call('GET', '/v1/workloads/00000000-0000-4000-8000-000000000000'), {
    status: 404,
    body: { code: 'NOT_FOUND' }
  })
  t.match(await c.call('GET', '/v1/nothing-here'), { status: 404, body: { code: 'NOT_FOUND' } })
  t.match(await c.call('GET', '/v1/hosts?limit=0'), { status: 400, body: { code: 'VALIDATION' } })
  t.match(await c.call('GET', '/v1/hosts?cursor=garbage'), { status: 400, body: { code: 'INVALID_CURSOR' } })
  t.equal((await counts(c)).workloads, before.workloads + 1, 'still nothing half-written')
  t.equal((await c.call('GET', '/livez', undefined, null)).status, 200, 'and the server keeps serving')
})

t.test('cursor pagination returns every item once', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const created: number[] = []
  for (let i = 0; i < 7; i++) created.push((await c.call('POST', '/v1/workloads', session(`w${i}`))).status)
  t.same(created, Array(7).fill(201), 'seven workloads created')
  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  const statuses: number[] = []
  do {
    const r: { status: number; body: { items: Array<{ name: string }>; nextCursor: string | null } } = await c.call(
      'GET',
      `/v1/workloads?limit=3${cursor === null ? '' : `&cursor=${cursor}`}`
    )
    statuses.push(r.status)
    seen.push(...r.body.items.map((w) => w.name))
    cursor = r.body.nextCursor
    pages++
  } while (cursor !== null && pages < 10)
  t.same(
    { seen, statuses },
    { seen: ['w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6'], statuses: [200, 200, 200] },
    'three pages, every item once, in order'
  )
})

t.test('OpenAPI, health, metrics', async (t) => {
  const c = await startTestCoordinator(t)
  const api = await c.call('GET', '/openapi.json', undefined, null)
  t.equal(api.status, 200)
  t.equal(api.body.openapi, '3.1.0')
  const paths = [
    '/v1/hosts',
    '/v1/hosts/{id}',
    '/v1/hosts/{id}/cordon',
    '/v1/pools',
    '/v1/pools/{key}',
    '/v1/workloads',
    '/v1/workloads/{id}',
    '/v1/placements',
    '/v1/events',
    '/v1/tokens',
    '/v1/join-tokens'
  ]
  t.same(
    paths.filter((path) => !(path in api.body.paths)),
    [],
    'every route is documented'
  )
  const post = api.body.paths['/v1/workloads'].post
  t.ok(
    post.requestBody !== undefined && post.responses['201'] !== undefined && post.responses['422'] !== undefined,
    'schemas for body and each status'
  )
  t.same(await c.call('GET', '/livez', undefined, null).then((r) => r.body), { status: 'ok' })
  t.match(await c.call('GET', '/readyz', undefined, null), { status: 200, body: { checks: { postgres: 'ok' } } })
  await c.call('GET', '/v1/pools')
  const metrics = await c.call('GET', '/metrics', undefined, null)
  t.equal(metrics.status, 200)
  const names = [
    'gpumesh_http_requests_total',
    'gpumesh_hosts',
    'gpumesh_gpus',
    'gpumesh_workloads',
    'gpumesh_leader 1',
    'gpumesh_agent_sessions 0',
    'gpumesh_process_cpu_seconds_total'
  ]
  t.same(
    names.filter((name) => !(metrics.body as string).includes(name)),
    [],
    'every expected metric is exported'
  )
  t.notMatch(metrics.body, /^(?!gpumesh_|#)[a-z]/m, 'every metric is prefixed gpumesh_')
})

t.test('every error code is in the catalog of docs/api.md with its status', async (t) => {
  const { readFileSync } = await import('node:fs')
  const { ROOT } = await import('./helpers/fixtures.js')
  const doc = readFileSync(`${ROOT}/docs/api.md`, 'utf8')
  const rows = new Set(
    doc
      .split('\n')
      .map((line) => /^\| `([A-Z_]+)` \| (\d{3}) \|/.exec(line))
      .filter((m) => m !== null)
      .map((m) => `${m[1]} ${m[2]}`)
  )
  const undocumented = Object.entries(ERRORS)
    .map(([code, { status }]) => `${code} ${status}`)
    .filter((row) => !rows.has(row))
  t.same(undocumented, [], 'codes (with status) missing from the table in docs/api.md "Errors"')
})
