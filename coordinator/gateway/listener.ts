// The gateway's listener (GPUMESH_GATEWAY_LISTEN, default 127.0.0.1:7480):
// `ANY /<endpoint>/<path>?<query>` is authorized (store/tokens.ts
// authorizeCall: one PostgreSQL lookup per call, no cache) and forwarded as
// `/<path>?<query>` to a ready replica (forward.ts); `/openai/...` goes to
// the OpenAI-compatible front (openai.ts). Plain node:http, not the admin
// API's Fastify: a call is a stream in and a stream out, and every layer
// between the sockets costs latency on every call.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { Logger } from '../../common/log.js'
import { problem } from '../http/problem.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { authorize, countCall } from './calls.js'
import { type Gateway, GatewayError, type GatewayLimits } from './forward.js'
import { handleOpenAI } from './openai.js'
import type { ReadyReplicas } from './replicas.js'

export interface GatewayDeps {
  pool: Pool
  gateway: Gateway
  replicas: ReadyReplicas
  metrics: Metrics
  limits: GatewayLimits
  log: Logger
  /** The listener is HTTPS (x-forwarded-proto). */
  secure: boolean
}

/** `/<endpoint>[/<path>][?<query>]`: the endpoint and what the replica gets. */
const ROUTE = /^\/([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/

/** A GatewayError as problem+json (Retry-After on 503, WWW-Authenticate on 401). */
export function sendGatewayProblem(res: ServerResponse, err: GatewayError, instance: string): void {
  const body = JSON.stringify(problem(err.code, err.message, instance))
  const headers: Record<string, string | number> = {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body)
  }
  if (err.retryAfterSeconds !== undefined) headers['retry-after'] = err.retryAfterSeconds
  if (err.status === 401) headers['www-authenticate'] = 'Bearer'
  res.writeHead(err.status, headers)
  res.end(body)
}

async function handle(deps: GatewayDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/'
  if (url === '/openai' || url.startsWith('/openai/') || url.startsWith('/openai?')) {
    await handleOpenAI(req, res, deps)
    return
  }
  const instance = url.split('?')[0] ?? '/'
  const m = ROUTE.exec(url)
  let endpoint = ''
  countCall(deps, res, () => endpoint)
  try {
    if (m === null)
      throw new GatewayError('NOT_FOUND', 'call /<endpoint>/<path>: the first path segment names the endpoint')
    try {
      endpoint = decodeURIComponent(m[1] as string)
    } catch {
      throw new GatewayError('VALIDATION', 'the endpoint name is not valid percent-encoded UTF-8')
    }
    await authorize(deps, req, endpoint)
    const length = Number(req.headers['content-length'] ?? 0)
    if (length > deps.limits.maxBodyBytes)
      throw new GatewayError('PAYLOAD_TOO_LARGE', `the body is larger than ${deps.limits.maxBodyBytes} bytes`)
    await deps.gateway.forward(
      {
        endpoint,
        method: req.method ?? 'GET',
        path: (m[2] ?? '/') + (m[3] ?? ''),
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: req,
        clientAddress: req.socket.remoteAddress ?? '',
        secure: deps.secure
      },
      res
    )
  } catch (err) {
    if (res.headersSent || res.destroyed) {
      res.destroy()
      return
    }
    if (err instanceof GatewayError) sendGatewayProblem(res, err, instance)
    else {
      deps.log.error({ err: (err as Error).message, endpoint }, 'gateway: call failed')
      sendGatewayProblem(res, new GatewayError('BAD_GATEWAY', 'the gateway failed to forward the call'), instance)
    }
    if (!req.complete) res.once('finish', () => lingerThenClose(req))
  }
}

/** How long the rest of a refused call's body is read and dropped before its connection is closed. */
const LINGER_MS = 2000

/**
 * A refused call's body is not wanted, but closing at once with it unread
 * resets the connection, and a reset can discard the answer at the client
 * before it reads it: read and drop the rest for a moment (nginx's lingering
 * close), keeping the connection if the body ends in that time.
 */
function lingerThenClose(req: IncomingMessage): void {
  if (req.complete || req.socket.destroyed) return
  const timer = setTimeout(() => req.socket.destroy(), LINGER_MS)
  timer.unref()
  req.once('end', () => clearTimeout(timer))
  req.socket.once('close', () => clearTimeout(timer))
  // The forwarder's reader paused at the limit; nothing more goes anywhere.
  req.removeAllListeners('data')
  req.resume()
}

export function createGatewayServer(deps: GatewayDeps, https?: { cert: Buffer; key: Buffer }): Server {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    void handle(deps, req, res)
  }
  const server = https === undefined ? createHttpServer(onRequest) : createHttpsServer(https, onRequest)
  // Streams may be quiet for long; the per-call idle timeout (limits.timeoutMs) is the gateway's own.
  server.requestTimeout = 0
  server.headersTimeout = 30_000
  server.keepAliveTimeout = 65_000
  return server
}
