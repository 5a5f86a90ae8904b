// The gateway end to end, every part real: a coordinator on embedded
// PostgreSQL, two agents over libp2p on 127.0.0.1, an endpoint of two
// replica processes (helpers/replica.ts) on distinct hosts, and HTTP clients
// on real sockets.
import t from 'tap'
import { startTestCoordinator } from './helpers/coordinator.js'
import { gatewayCall, readyEndpoint, SERVE_MACHINE } from './helpers/gateway.js'
import { joinedAgents } from './helpers/mesh.js'
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
})
