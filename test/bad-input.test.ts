// Input an operator's bad day sends (issue 16, items 7 and 8): NUL and lone
// surrogates in any string, pool keys near the length limit, workload specs
// the agent would refuse, cursors past 2^53, bodies that are not JSON, and a
// body that never finishes arriving. Each is a problem+json answer, never a
// 500 or a connection held open.
import { connect } from 'node:net'
import { once } from 'node:events'
import Fastify from 'fastify'
import t from 'tap'
import { installErrorHandling } from '../coordinator/http/problem.js'
import { createPool } from '../coordinator/store/db.js'
import { registerHost } from '../coordinator/store/hosts.js'
import { ADMIN_TOKEN, addHost, factsFor, startTestCoordinator } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'
import { freshDatabase } from './helpers/postgres.js'

const POOL = 'h100-80gb-8x-nvlink'
const run = { driver: 'process', command: ['python3', 'serve.py'] }
const session = (extra: Record<string, unknown> = {}) => ({
  name: 's',
  kind: 'session',
  pool: POOL,
  gpus: 1,
  run,
  ...extra
})
const PROBLEM = 'application/problem+json; charset=utf-8'

interface Case {
  name: string
  method: string
  path: string
  body?: unknown
  /** Raw body and its content type, for what JSON.stringify would not send. */
  raw?: { type: string; body: string }
  status: number
  code: string
  /** A part of the detail: the field it names. */
  detail?: string
}

/** Every string field the API stores, with `bad` in it. */
function badStringCases(label: string, bad: string, hostId: string): Case[] {
  const v = (s: string) => `${s}${bad}x`
  const c = (name: string, method: string, path: string, body: unknown, detail: string): Case => ({
    name: `${label} in ${name}`,
    method,
    path,
    body,
    status: 400,
    code: 'VALIDATION',
    detail
  })
  return [
    c('a token name', 'POST', '/v1/tokens', { role: 'viewer', name: v('ci') }, 'body: /name'),
    c('a pool label value', 'PATCH', `/v1/pools/${POOL}`, { labels: { team: v('ml') } }, 'body: /labels/team'),
    c('a pool label name', 'PATCH', `/v1/pools/${POOL}`, { labels: { [v('team')]: 'ml' } }, 'body: /labels'),
    c(
      'run.command',
      'POST',
      '/v1/workloads',
      session({ run: { ...run, command: ['python3', v('serve')] } }),
      'body: /run/command/1'
    ),
    c(
      'a run.env value',
      'POST',
      '/v1/workloads',
      session({ run: { ...run, env: { HF_HOME: v('/data') } } }),
      'body: /run/env/HF_HOME'
    ),
    c(
      'run.image',
      'POST',
      '/v1/workloads',
      session({ run: { ...run, driver: 'docker', image: v('img') } }),
      'body: /run/image'
    ),
    c('a cordon reason', 'POST', `/v1/hosts/${hostId}/cordon`, { reason: v('maintenance') }, 'body: /reason'),
    c('a drain reason', 'POST', `/v1/hosts/${hostId}/drain`, { reason: v('maintenance') }, 'body: /reason')
  ]
}

t.test('NUL, lone surrogates and other bad input: problem+json naming the field, never a 500', async (t) => {
  const c = await startTestCoordinator(t)
  const hostId = await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const cases: Case[] = [
    ...badStringCases('NUL', '\u0000', hostId),
    ...badStringCases('a lone high surrogate', '\ud800', hostId),
    ...badStringCases('a lone low surrogate', '\udc00', hostId),
    {
      name: 'NUL in a cursor',
      method: 'GET',
      path: '/v1/hosts?cursor=a%00b',
      status: 400,
      code: 'VALIDATION',
      detail: 'querystring: /cursor'
    },
    {
      name: 'NUL in a workload cursor',
      method: 'GET',
      path: '/v1/workloads?cursor=%00',
      status: 400,
      code: 'VALIDATION',
      detail: 'querystring: /cursor'
    },
    // Specs the agent would refuse are refused when created (protocol/workload-rules.ts).
    {
      name: 'docker without an image',
      method: 'POST',
      path: '/v1/workloads',
      body: session({ run: { ...run, driver: 'docker' } }),
      status: 400,
      code: 'VALIDATION',
      detail: 'body: /run/image'
    },
    {
      name: 'an option as the image',
      method: 'POST',
      path: '/v1/workloads',
      body: session({ run: { ...run, driver: 'docker', image: '--privileged' } }),
      status: 400,
      code: 'VALIDATION',
      detail: 'body: /run/image'
    },
    {
      name: 'an image with a space',
      method: 'POST',
      path: '/v1/workloads',
      body: session({ run: { ...run, driver: 'docker', image: 'alpine -v /:/host' } }),
      status: 400,
      code: 'VALIDATION',
      detail: 'body: /run/image'
    },
    {
      name: 'an env name that is not a variable name',
      method: 'POST',
      path: '/v1/workloads',
      body: session({ run: { ...run, env: { '1-BAD NAME': 'x' } } }),
      status: 400,
      code: 'VALIDATION',
      detail: 'body: /run/env'
    },
    {
      name: 'an event cursor past 2^53',
      method: 'GET',
      path: '/v1/events?after=9007199254740993',
      status: 400,
      code: 'VALIDATION',
      detail: 'querystring: /after'
    },
    {
      name: 'a text/plain body',
      method: 'POST',
      path: '/v1/tokens',
      raw: { type: 'text/plain', body: 'role=viewer' },
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE'
    },
    {
      name: 'a path segment that is not UTF-8',
      method: 'GET',
      path: '/v1/pools/%E0%A4%A',
      status: 400,
      code: 'VALIDATION'
    }
  ]
  const m = new Mismatches()
  for (const k of cases) {
    const headers: Record<string, string> = { authorization: `Bearer ${ADMIN_TOKEN}` }
    let body: string | undefined
    if (k.raw !== undefined) {
      headers['content-type'] = k.raw.type
      body = k.raw.body
    } else if (k.body !== undefined) {
      headers['content-type'] = 'application/json'
      body = JSON.stringify(k.body)
    }
    const r = await fetch(c.api + k.path, { method: k.method, headers, ...(body === undefined ? {} : { body }) })
    // An event stream that was let through would never end: read the answer only when it is not one.
    const text = r.headers.get('content-type')?.startsWith('text/event-stream') ? '' : await r.text()
    if (text === '') await r.body?.cancel()
    let answer: { code?: string; detail?: string } = {}
    try {
      answer = JSON.parse(text)
    } catch {}
    m.check(k.name, 'status', r.status, k.status)
    m.check(k.name, 'content-type', r.headers.get('content-type'), PROBLEM)
    m.check(k.name, 'code', answer.code, k.code)
    if (k.detail !== undefined)
      m.check(
        k.name,
        'detail names the field',
        answer.detail?.startsWith(k.detail) ? k.detail : answer.detail,
        k.detail
      )
  }
  const { rows } = await c.pool.query<{ n: number }>("select count(*)::int as n from api_tokens where name like 'ci%'")
  m.check('database', 'no token was written', rows[0]?.n, 0)
  t.same(m.list, [])
})

t.test('pool keys up to 128 characters are reachable; longer paths are a 414 problem+json', async (t) => {
  const c = await startTestCoordinator(t)
  const key = `h100-80gb-8x-nvlink-${'a'.repeat(108)}`
  t.equal(key.length, 128)
  const facts = await factsFor('h100-8x-nv18-nics')
  facts.pool.key = key
  await registerHost(c.pool, { peerId: '12D3KooWlongpoolkey', facts, name: 'long' })
  const m = new Mismatches()
  const get = await c.call('GET', `/v1/pools/${key}`)
  m.check('GET a 128-character key', 'status', get.status, 200)
  m.check('GET a 128-character key', 'key', get.body.key, key)
  const patch = await c.call('PATCH', `/v1/pools/${key}`, { kind: 'training' })
  m.check('PATCH a 128-character key', 'status', patch.status, 200)
  const long = await c.call('GET', `/v1/pools/${'a'.repeat(300)}`)
  m.check('GET a 300-character key', 'status', long.status, 414)
  m.check('GET a 300-character key', 'content-type', long.headers.get('content-type'), PROBLEM)
  m.check('GET a 300-character key', 'code', long.body.code, 'URI_TOO_LONG')
  const tooLongKey = await c.call('GET', `/v1/pools/${'a'.repeat(129)}`)
  m.check('GET a 129-character key', 'status', tooLongKey.status, 400)
  m.check('GET a 129-character key', 'code', tooLongKey.body.code, 'VALIDATION')
  t.same(m.list, [])
})

t.test('a body that stops arriving: the connection is closed after the request timeout', async (t) => {
  const c = await startTestCoordinator(t, { requestTimeoutMs: 500 })
  const url = new URL(c.api)
  const socket = connect(Number(url.port), url.hostname)
  await once(socket, 'connect')
  let answer = ''
  socket.on('data', (d: Buffer) => {
    answer += d.toString('latin1')
  })
  socket.write(
    `POST /v1/tokens HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"role":`
  )
  await once(socket, 'close')
  t.match(answer, /^HTTP\/1\.1 408 /, 'the server says why before it closes')
})

t.test('a character PostgreSQL refuses that validation missed is a 400, not a 500', async (t) => {
  const pool = createPool(await freshDatabase(t), 2)
  t.teardown(() => pool.end())
  // Routes validate every string first; this app's routes do not, so PostgreSQL itself refuses.
  const app = Fastify()
  installErrorHandling(app)
  app.get('/text', async () => (await pool.query('select $1::text as v', ['a\u0000b'])).rows)
  app.get('/jsonb', async () => (await pool.query('select $1::jsonb as v', ['"a\\u0000b"'])).rows)
  t.teardown(() => app.close())
  const m = new Mismatches()
  for (const [path, pgCode] of [
    ['/text', '22021'],
    ['/jsonb', '22P05']
  ]) {
    const r = await app.inject({ method: 'GET', url: path })
    m.check(`PostgreSQL ${pgCode}`, 'status', r.statusCode, 400)
    m.check(`PostgreSQL ${pgCode}`, 'code', r.json().code, 'VALIDATION')
  }
  t.same(m.list, [])
})
