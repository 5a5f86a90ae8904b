// DESIGN "Serving endpoints": the gateway's OpenAI-compatible front, called
// with the official `openai` npm package pointed at <gateway>/openai/v1. A real
// coordinator (PostgreSQL), a real agent over libp2p, and endpoint replicas
// that answer the OpenAI routes (test/helpers/replica.ts).
import OpenAI from 'openai'
import t from 'tap'
import { ADMIN_TOKEN, eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { REPLICA_COMMAND } from './helpers/fixtures.js'
import { readyEndpoint, SERVE_MACHINE, SERVE_POOL } from './helpers/gateway.js'
import { joinedAgents } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'

/** The replica's pause between two streamed chat chunks. */
const TOKEN_MS = 150

/** An endpoint that is never placed: each replica wants all 8 GPUs of a host whose others are taken. */
async function unplaced(c: TestCoordinator, name: string, serve?: unknown): Promise<void> {
  const r = await c.call('POST', '/v1/workloads', {
    name,
    kind: 'endpoint',
    replicas: 1,
    pools: [SERVE_POOL],
    gpus: 8,
    run: { driver: 'process', command: REPLICA_COMMAND },
    ...(serve === undefined ? {} : { serve })
  })
  if (r.status !== 201) throw new Error(`POST /v1/workloads ${name}: ${r.status} ${JSON.stringify(r.body)}`)
}

async function invokeToken(
  c: TestCoordinator,
  name: string,
  endpoints: string[]
): Promise<{ id: string; token: string }> {
  const r = await c.call('POST', '/v1/tokens', { role: 'invoke', name, endpoints })
  if (r.status !== 201) throw new Error(`POST /v1/tokens: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

const client = (c: TestCoordinator, apiKey: string) =>
  new OpenAI({ apiKey, baseURL: `${c.gatewayUrl}/openai/v1`, maxRetries: 0, timeout: 30_000 })

/** The name of the SDK's exception a call ends with, or 'ok'. */
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (err: Error) => err.constructor.name
  )

t.test('OpenAI front: the official client streams, completes, embeds and is refused as OpenAI would', async (t) => {
  const c = await startTestCoordinator(t)
  const agents = await joinedAgents(t, c, SERVE_MACHINE, ['oa'])
  const openai = { serve: { openai: true }, env: { REPLICA_TOKEN_MS: String(TOKEN_MS) } }
  await readyEndpoint(t, c, agents, 'chat', 1, openai)
  await readyEndpoint(t, c, agents, 'other', 1, openai)
  await unplaced(c, 'plain')
  await unplaced(c, 'waiting', { openai: true })
  const admin = client(c, ADMIN_TOKEN)
  // The gateway learns of endpoints from events: the last one created is in its models.
  await eventually(
    async () => (await admin.models.list()).data.some((m) => m.id === 'waiting'),
    10_000,
    'the gateway to know every endpoint'
  )

  const chatKey = await invokeToken(c, 'app', ['chat'])
  const otherKey = await invokeToken(c, 'other-app', ['other'])
  const revoked = await invokeToken(c, 'leaked', ['chat'])
  if ((await c.call('DELETE', `/v1/tokens/${revoked.id}`)).status !== 204) throw new Error('revoke failed')
  const chat = client(c, chatKey.token)

  t.test('a streamed chat completion arrives chunk by chunk', async (t) => {
    const stream = await chat.chat.completions.create({
      model: 'chat',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true
    })
    const arrivals: Array<{ at: number; content: string }> = []
    for await (const chunk of stream)
      arrivals.push({ at: performance.now(), content: chunk.choices[0]?.delta.content ?? '' })
    const first = arrivals[0]?.at ?? 0
    const last = arrivals.at(-1)?.at ?? 0
    t.same(
      {
        text: arrivals.map((a) => a.content).join(''),
        severalChunks: arrivals.length >= 5,
        // The replica pauses TOKEN_MS between chunks: a response buffered whole would arrive at once.
        spreadOverTheReplicasPauses: last - first > TOKEN_MS
      },
      { text: 'hello from a gpumesh replica', severalChunks: true, spreadOverTheReplicasPauses: true }
    )
  })

  t.test('non-streamed chat, completions and embeddings are the replica answers', async (t) => {
    const m = new Mismatches()
    const completion = await chat.chat.completions.create({
      model: 'chat',
      messages: [{ role: 'user', content: 'hi' }]
    })
    m.check('chat', 'content', completion.choices[0]?.message.content, 'hello from a gpumesh replica')
    m.check('chat', 'model', completion.model, 'chat')
    const text = await chat.completions.create({ model: 'chat', prompt: 'hi' })
    m.check('completions', 'text starts', text.choices[0]?.text.startsWith('hello from '), true)
    const embedding = await chat.embeddings.create({ model: 'chat', input: 'hi', encoding_format: 'float' })
    m.check('embeddings', 'vector', embedding.data[0]?.embedding, [0.1, 0.2, 0.3])
    t.same(m.list, [])
  })

  t.test('models lists the opted-in endpoints the key may invoke', async (t) => {
    const ids = async (o: OpenAI) => (await o.models.list()).data.map((x) => x.id)
    const m = new Mismatches()
    m.check('admin', 'models', await ids(admin), ['chat', 'other', 'waiting'])
    m.check('invoke chat', 'models', await ids(chat), ['chat'])
    m.check('invoke chat', 'retrieve chat', (await chat.models.retrieve('chat')).owned_by, 'gpumesh')
    m.check('invoke chat', 'retrieve other', await outcome(chat.models.retrieve('other')), 'NotFoundError')
    t.same(m.list, [])
  })

  t.test('refusals are the SDK exceptions of their status', async (t) => {
    const call = (o: OpenAI, model: string) => outcome(o.embeddings.create({ model, input: 'hi' }))
    const m = new Mismatches()
    for (const [kase, o, model, want] of [
      ['unknown model', admin, 'nope', 'NotFoundError'],
      ['endpoint without serve.openai', admin, 'plain', 'NotFoundError'],
      ['revoked key', client(c, revoked.token), 'chat', 'AuthenticationError'],
      ['garbage key', client(c, 'gmt_garbage'), 'chat', 'AuthenticationError'],
      ['invoke key for another endpoint', client(c, otherKey.token), 'chat', 'PermissionDeniedError'],
      ['invoke key for this endpoint', chat, 'chat', 'ok']
    ] as const)
      m.check(kase, 'outcome', await call(o, model), want)
    t.same(m.list, [])
  })

  t.test('errors the SDK cannot provoke have the OpenAI error body too', async (t) => {
    const raw = async (method: string, path: string, body?: string | Buffer, key: string | null = ADMIN_TOKEN) => {
      const r = await fetch(`${c.gatewayUrl}${path}`, {
        method,
        headers: {
          ...(key === null ? {} : { authorization: `Bearer ${key}` }),
          ...(body === undefined ? {} : { 'content-type': 'application/json' })
        },
        ...(body === undefined ? {} : { body })
      })
      const json = (await r.json().catch(() => null)) as { error?: { type?: string; code?: string | null } } | null
      return {
        status: r.status,
        type: json?.error?.type,
        code: json?.error?.code,
        retryAfter: r.headers.has('retry-after')
      }
    }
    const embeddings = '/openai/v1/embeddings'
    const m = new Mismatches()
    for (const [kase, got, want] of [
      ['no key', raw('POST', embeddings, '{"model":"chat","input":"x"}', null), [401, 'invalid_api_key']],
      ['not JSON', raw('POST', embeddings, '{"model":'), [400, 'invalid_json']],
      ['no model', raw('POST', embeddings, '{"input":"x"}'), [400, 'missing_model']],
      ['over 16 MiB', raw('POST', embeddings, Buffer.alloc(16 * 1024 * 1024 + 1, 32)), [413, 'request_too_large']],
      ['unknown route', raw('POST', '/openai/v1/images/generations', '{}'), [404, 'unknown_url']],
      ['GET a POST route', raw('GET', embeddings), [405, 'method_not_allowed']]
    ] as const) {
      const r = await got
      m.check(kase, 'status, code', [r.status, r.code], want)
      m.check(kase, 'type', r.type, 'invalid_request_error')
    }
    const none = await raw('POST', embeddings, '{"model":"waiting","input":"x"}')
    m.check(
      'no ready replica',
      'status, type, Retry-After',
      [none.status, none.type, none.retryAfter],
      [503, 'server_error', true]
    )
    t.same(m.list, [])
  })
})
