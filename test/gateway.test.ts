// The gateway end to end, every part real: a coordinator on embedded
// PostgreSQL, two agents over libp2p on 127.0.0.1, an endpoint of two
// replica processes (helpers/replica.ts) on distinct hosts, and HTTP clients
// on real sockets.
import { createHash, randomBytes } from 'node:crypto'
import { type ClientRequest, request } from 'node:http'
import { Readable } from 'node:stream'
import t from 'tap'
import { hashToken } from '../coordinator/store/tokens.js'
import { ADMIN_TOKEN, eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { REPLICA_COMMAND } from './helpers/fixtures.js'
import {
  gatewayCall,
  killPlacement,
  killWorkload,
  readyEndpoint,
  SERVE_MACHINE,
  SERVE_POOL
} from './helpers/gateway.js'
import { joinedAgents, placementLog } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'

t.test('calls through the gateway', async (t) => {
  const c = await startTestCoordinator(t)
  const agents = await joinedAgents(t, c, SERVE_MACHINE, ['gw-a', 'gw-b'])
  const chat = await readyEndpoint(t, c, agents, 'chat', 2)

  await t.test('calls land on both replicas, each answer naming its replica', async (t) => {
    const seen = new Set<string>()
    const answers = await Promise.all(Array.from({ length: 20 }, () => gatewayCall(c, 'GET', '/chat/echo?x=1')))
    const m = new Mismatches()
    for (const [i, a] of answers.entries()) {
      m.check(`call ${i}`, 'status', a.status, 200)
      m.check(`call ${i}`, 'path at the replica', a.json?.url, '/echo?x=1')
      m.check(
        `call ${i}`,
        'x-gpumesh-placement is the replica that answered',
        a.headers['x-gpumesh-placement'],
        a.json?.placement
      )
      seen.add(String(a.json?.placement))
    }
    m.check('all calls', 'replicas that answered', [...seen].sort(), [...chat.placements].sort())
    t.same(m.list, [])
  })

  await t.test(
    'reverse-proxy headers: hop-by-hop and the token stay at the gateway; x-forwarded-* and a request id are added',
    async (t) => {
      const a = await gatewayCall(c, 'POST', '/chat/echo', {
        headers: {
          connection: 'keep-alive, x-hop-secret',
          'x-hop-secret': 'named by Connection',
          'keep-alive': 'timeout=5',
          te: 'trailers',
          'proxy-authorization': 'Basic abc',
          'x-end-to-end': 'kept',
          'x-request-id': 'req-42'
        },
        body: 'hello'
      })
      const got = a.json?.headers ?? {}
      const m = new Mismatches()
      for (const name of ['x-hop-secret', 'keep-alive', 'te', 'proxy-authorization', 'authorization'])
        m.check(name, 'at the replica', got[name], undefined)
      m.check('x-end-to-end', 'at the replica', got['x-end-to-end'], 'kept')
      m.check('x-forwarded-for', 'at the replica', got['x-forwarded-for'], '127.0.0.1')
      m.check('x-forwarded-proto', 'at the replica', got['x-forwarded-proto'], 'http')
      m.check('x-forwarded-host', 'at the replica', got['x-forwarded-host'], new URL(c.gatewayUrl).host)
      m.check('x-request-id', 'at the replica', got['x-request-id'], 'req-42')
      m.check('x-request-id', 'in the response', a.headers['x-request-id'], 'req-42')
      m.check('body', 'bytes at the replica', a.json?.bytes, 5)
      const generated = await gatewayCall(c, 'GET', '/chat/echo')
      m.check('no x-request-id', 'one is generated and returned', typeof generated.headers['x-request-id'], 'string')
      m.check(
        'no x-request-id',
        'the replica got the same',
        generated.json?.headers['x-request-id'],
        generated.headers['x-request-id']
      )
      t.same(m.list, [])
    }
  )

  await t.test('SSE events reach the client one by one, as the replica writes them', async (t) => {
    const arrivals = await sseArrivals(c, '/chat/sse?n=5&ms=300')
    t.same(
      {
        events: arrivals.length,
        // An ordering fact, not a speed limit: buffered, all would arrive together at the end.
        spreadBeyondOneDelay: (arrivals.at(-1) as number) - (arrivals[0] as number) > 300
      },
      { events: 6, spreadBeyondOneDelay: true }
    )
  })

  await t.test('a 50 MB upload streams through to the replica intact', async (t) => {
    const size = 50 * 1024 * 1024
    const hash = createHash('sha256')
    const chunk = randomBytes(1024 * 1024)
    let sent = 0
    const body = new Readable({
      read() {
        if (sent >= size) {
          this.push(null)
          return
        }
        const piece = Buffer.from(chunk)
        piece.writeUInt32BE(sent / chunk.length) // every MiB differs: a lost or repeated chunk changes the hash
        hash.update(piece)
        sent += piece.length
        this.push(piece)
      }
    })
    const a = await gatewayCall(c, 'PUT', '/chat/echo', {
      body,
      headers: { 'content-type': 'application/octet-stream' }
    })
    t.same(
      { status: a.status, bytes: a.json?.bytes, sha256: a.json?.sha256 },
      { status: 200, bytes: size, sha256: hash.digest('hex') }
    )
  })

  await t.test('a client that goes away cancels its call at the replica', async (t) => {
    const { placement, req } = await hangingCall(c, '/chat/hang')
    const port = await portOf(c, chat.id, placement)
    const before = await replicaStats(port)
    req.destroy()
    await eventually(
      async () => (await replicaStats(port)).aborted > before.aborted,
      10_000,
      'the replica to see its request aborted'
    )
    t.pass('the replica saw the call aborted')
  })

  await t.test('who may call: one table of tokens', async (t) => {
    const viewer = await tokenRow(c, 'viewer', null)
    const other = await tokenRow(c, 'invoke', ['other'])
    const invoker = await tokenRow(c, 'invoke', ['chat'])
    const m = new Mismatches()
    const cases: Array<[string, string | null, number]> = [
      ['no token', null, 401],
      ['garbage', 'gmt_not-a-token', 401],
      ['viewer', viewer.token, 403],
      ['invoke for another endpoint', other.token, 403],
      ['invoke for this endpoint', invoker.token, 200],
      ['admin', ADMIN_TOKEN, 200]
    ]
    for (const [name, token, want] of cases) {
      const a = await gatewayCall(c, 'GET', '/chat/echo', { token })
      m.check(name, 'status', a.status, want)
      if (want !== 200) m.check(name, 'content-type', a.headers['content-type'], 'application/problem+json')
    }
    await c.pool.query('update api_tokens set revoked_at = now() where id = $1', [invoker.id])
    m.check(
      'invoke for this endpoint, revoked',
      'status',
      (await gatewayCall(c, 'GET', '/chat/echo', { token: invoker.token })).status,
      401
    )
    m.check('unknown endpoint', 'status', (await gatewayCall(c, 'GET', '/nosuch/echo')).status, 404)
    t.same(m.list, [])
  })

  await t.test(
    'a replica that is not ready gets no call; with none ready the answer is 503 with Retry-After',
    async (t) => {
      // With a readiness path that never passes, the replica runs and listens but is never ready.
      const r = await c.call('POST', '/v1/workloads', {
        name: 'cold',
        kind: 'endpoint',
        replicas: 1,
        gpus: 1,
        pools: [SERVE_POOL],
        run: { driver: 'process', command: REPLICA_COMMAND, env: { REPLICA_NEVER_READY: '1' } },
        serve: { readiness: { path: '/health', periodSeconds: 1 } }
      })
      t.equal(r.status, 201)
      t.teardown(() => killWorkload(agents, r.body.id))
      const placement = await eventually(
        async () => {
          const p = (await c.call('GET', `/v1/workloads/${r.body.id}`)).body.placements?.[0]
          return p?.state === 'running' && agents.some((a) => placementLog(a.stateDir, p.id).includes('listening '))
            ? p
            : undefined
        },
        30_000,
        'the cold replica to listen'
      )
      const a = await gatewayCall(c, 'GET', '/cold/echo')
      const stats = await replicaStats(placement.port as number)
      t.same(
        {
          status: a.status,
          retryAfter: a.headers['retry-after'],
          code: a.json?.code,
          callsAtTheReplica: stats.requests - 1
        },
        { status: 503, retryAfter: '2', code: 'NO_READY_REPLICA', callsAtTheReplica: 0 }
      )
    }
  )

  await t.test("the workload name openai is the gateway's own", async (t) => {
    const r = await c.call('POST', '/v1/workloads', {
      name: 'openai',
      kind: 'endpoint',
      replicas: 1,
      gpus: 1,
      pools: [SERVE_POOL],
      run: { driver: 'process', command: REPLICA_COMMAND }
    })
    t.same({ status: r.status, reserved: /reserved/.test(String(r.body.detail)) }, { status: 400, reserved: true })
  })

  await t.test('a replica killed while calls run: calls started after the gateway noticed all succeed', async (t) => {
    const [victim, survivor] = chat.placements as [string, string]
    const results: Array<{ startedAt: number; status: number; placement: unknown }> = []
    let running = true
    const caller = async () => {
      while (running) {
        const startedAt = Date.now()
        const a = await gatewayCall(c, 'GET', '/chat/echo').catch(() => ({
          status: 0,
          headers: {} as Record<string, unknown>
        }))
        results.push({ startedAt, status: a.status, placement: a.headers['x-gpumesh-placement'] })
      }
    }
    const callers = [caller(), caller(), caller()]
    await eventually(() => results.length >= 10, 10_000, 'calls to flow')
    for (const a of agents) killPlacement(a.stateDir, victim)
    await eventually(() => !c.gateway.routable(victim), 15_000, 'the gateway to notice the replica is gone')
    const noticedAt = Date.now()
    await eventually(
      () => results.filter((r) => r.startedAt > noticedAt).length >= 20,
      20_000,
      'calls after the notice'
    )
    running = false
    await Promise.all(callers)
    const after = results.filter((r) => r.startedAt > noticedAt)
    t.same(
      {
        failedAfterNotice: after.filter((r) => r.status !== 200).length,
        answeredBy: [...new Set(after.map((r) => r.placement))]
      },
      { failedAfterNotice: 0, answeredBy: [survivor] }
    )
  })

  await t.test('drain: no new call for the placement; it resolves once its calls in flight have ended', async (t) => {
    const { placement, req } = await hangingCall(c, '/chat/hang')
    let drained = false
    const draining = c.gateway.drain(placement, 60_000).then(() => {
      drained = true
    })
    const during = { routable: c.gateway.routable(placement), inFlight: c.gateway.inFlightTo(placement), drained }
    req.destroy()
    await draining
    t.same(
      { during, after: { inFlight: c.gateway.inFlightTo(placement), drained } },
      { during: { routable: false, inFlight: 1, drained: false }, after: { inFlight: 0, drained: true } }
    )
  })
})

/** When each SSE event of a call arrived (ms timestamps, in order). */
async function sseArrivals(c: TestCoordinator, path: string): Promise<number[]> {
  return await new Promise((resolve, reject) => {
    const req = request(new URL(path, c.gatewayUrl), { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
      const arrivals: number[] = []
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
        const events = text.split('\n\n')
        text = events.pop() ?? ''
        for (const e of events) if (e.startsWith('data:')) arrivals.push(Date.now())
      })
      res.on('end', () => resolve(arrivals))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** A call whose response began (headers and a first line) and then waits: the request, to cut, and its replica. */
async function hangingCall(c: TestCoordinator, path: string): Promise<{ placement: string; req: ClientRequest }> {
  return await new Promise((resolve, reject) => {
    const req = request(new URL(path, c.gatewayUrl), { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
      res.once('data', () => resolve({ placement: String(res.headers['x-gpumesh-placement']), req }))
      res.on('error', () => {})
    })
    req.on('error', (err) => {
      if (!req.destroyed) reject(err)
    })
    req.end()
  })
}

async function portOf(c: TestCoordinator, workloadId: string, placementId: string): Promise<number> {
  const w = (await c.call('GET', `/v1/workloads/${workloadId}`)).body
  return (w.placements as Array<{ id: string; port: number }>).find((p) => p.id === placementId)?.port as number
}

/** The replica's own counters, asked directly on its port (the test runs on its host). */
async function replicaStats(port: number): Promise<{ requests: number; aborted: number }> {
  return (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as { requests: number; aborted: number }
}

/** A token of `role` (invoke: for `endpoints`), stored as POST /v1/tokens stores one. */
async function tokenRow(
  c: TestCoordinator,
  role: string,
  endpoints: string[] | null
): Promise<{ id: string; token: string }> {
  const token = `gmt_${randomBytes(24).toString('base64url')}`
  const { rows } = await c.pool.query<{ id: string }>(
    'insert into api_tokens (name, role, token_hash, endpoints) values ($1, $2, $3, $4) returning id',
    [`${role}-${randomBytes(3).toString('hex')}`, role, hashToken(token), endpoints]
  )
  return { id: (rows[0] as { id: string }).id, token }
}
