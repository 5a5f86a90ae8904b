// The gateway's limits and TLS end to end, every part real: a coordinator
// serving the API and the gateway over https (a self-signed certificate), one
// agent over libp2p, one replica process, clients on real sockets. The limits
// are set small so that each is crossed by a call of a few seconds.
import { Readable } from 'node:stream'
import t from 'tap'
import { eventually, startTestCoordinator } from './helpers/coordinator.js'
import { gatewayCall, readyEndpoint, SERVE_MACHINE } from './helpers/gateway.js'
import { joinedAgents } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'
import { selfSignedCert } from './helpers/tls.js'

const LIMITS = { timeoutMs: 3000, maxBodyBytes: 1024 * 1024, maxResponseBytes: 256 * 1024 }

/** A body of `n` bytes sent chunked (no content-length), so only the gateway's count can stop it. */
const chunked = (n: number): Readable =>
  Readable.from(
    (function* () {
      for (let left = n; left > 0; left -= 64 * 1024) yield Buffer.alloc(Math.min(left, 64 * 1024), 1)
    })()
  )

t.test('the gateway over TLS, with its size limits and idle timeout', async (t) => {
  const cert = await selfSignedCert(t)
  const c = await startTestCoordinator(t, {
    tls: { certFile: cert.certFile, keyFile: cert.keyFile },
    gatewayLimits: LIMITS
  })
  const agents = await joinedAgents(t, c, SERVE_MACHINE, ['lim-a'])
  await readyEndpoint(t, c, agents, 'chat', 1)
  const call = (method: string, path: string, o: Parameters<typeof gatewayCall>[3] = {}) =>
    gatewayCall(c, method, path, { ca: cert.ca, ...o })
  const m = new Mismatches()

  m.check('gateway', 'url', /^https:\/\/127\.0\.0\.1:\d+$/.test(c.gatewayUrl), true)
  const echo = await call('POST', '/chat/echo', {
    body: '{"hello":1}',
    headers: { 'content-type': 'application/json' }
  })
  m.check('a call over https', 'status', echo.status, 200)
  m.check(
    'a call over https',
    'the replica is told the client used https',
    echo.json?.headers?.['x-forwarded-proto'],
    'https'
  )
  m.check('a call over https', 'the token stays at the gateway', echo.json?.headers?.authorization, undefined)

  // Over the body limit: refused before anything reaches the replica when the length is declared,
  // cut when it is not and the count passes the limit; either way 413 problem+json.
  const declared = await call('POST', '/chat/echo', { body: Buffer.alloc(LIMITS.maxBodyBytes + 1, 1) })
  m.check('a declared body over the limit', 'status', declared.status, 413)
  m.check('a declared body over the limit', 'code', declared.json?.code, 'PAYLOAD_TOO_LARGE')
  const streamed = await call('POST', '/chat/echo', { body: chunked(4 * LIMITS.maxBodyBytes) })
  m.check('a chunked body over the limit', 'status', streamed.status, 413)
  m.check('a chunked body over the limit', 'code', streamed.json?.code, 'PAYLOAD_TOO_LARGE')
  const under = await call('POST', '/chat/echo', { body: chunked(LIMITS.maxBodyBytes) })
  m.check(
    'a chunked body at the limit',
    'bytes the replica read',
    [under.status, under.json?.bytes],
    [200, LIMITS.maxBodyBytes]
  )

  // Over the response limit: the answer started (200) and is cut, never delivered whole.
  const big = await call('GET', `/chat/bytes?n=${4 * LIMITS.maxResponseBytes}`)
  m.check('a response over the limit', 'status, complete', [big.status, big.complete], [200, false])
  m.check('a response over the limit', 'at most the limit arrived', big.text.length <= LIMITS.maxResponseBytes, true)
  const fits = await call('GET', `/chat/bytes?n=${LIMITS.maxResponseBytes}`)
  m.check(
    'a response at the limit',
    'status, complete, length',
    [fits.status, fits.complete, fits.text.length],
    [200, true, LIMITS.maxResponseBytes]
  )

  // The idle timeout: a replica that answers nothing is 504; one that keeps streaming is never cut,
  // however long it takes in all; one that goes quiet after its headers is cut.
  const silent = await call('GET', '/chat/silent')
  m.check(
    'a replica that answers nothing',
    'status, code',
    [silent.status, silent.json?.code],
    [504, 'GATEWAY_TIMEOUT']
  )
  const steady = await call('GET', `/chat/sse?n=8&ms=${LIMITS.timeoutMs / 3}`)
  m.check(
    'a stream that progresses for longer than the timeout',
    'complete with [DONE]',
    [steady.complete, steady.text.includes('data: [DONE]')],
    [true, true]
  )
  const quiet = await call('GET', '/chat/sse?n=2&ms=600000')
  m.check(
    'a stream that goes quiet',
    'its first event arrived, then it was cut',
    [quiet.status, quiet.text.includes('"i":0'), quiet.text.includes('[DONE]'), quiet.complete],
    [200, true, false, false]
  )
  t.same(m.list, [], 'each limit holds, through TLS')

  // The silent call was cancelled at the replica when the gateway gave up on it.
  const stats = await eventually(
    async () => {
      const s = (await call('GET', '/chat/stats')).json
      return s?.aborted >= 1 ? s : undefined
    },
    15_000,
    'the replica to see its silent call aborted'
  )
  t.ok(stats.aborted >= 1, 'the gateway cut the replica call it timed out')

  // The API on the same certificate (the test coordinator's calls trust it alone).
  t.equal((await c.call('GET', '/v1/workloads')).status, 200, 'the API answers over https with the same certificate')
})
