// The admin API: Fastify with TypeBox schemas on every route, problem+json
// errors, bearer-token roles, OpenAPI, metrics. Routes are registered
// explicitly, one file per resource.
import swagger from '@fastify/swagger'
import websocket from '@fastify/websocket'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import type { Logger } from '../../common/log.js'
import { VERSION } from '../../common/version.js'
import { ApiError, frameworkError, MAX_PARAM_LENGTH } from './problem.js'
import { MAX_CLIENT_MESSAGE, SESSION_CLOSE } from '../../protocol/session.js'
import type { Notifier } from '../events/notifier.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { attachRoutes, selectProtocol, type AttachDeps, type AttachHub } from '../attach/route.js'
import { installAuth } from './auth.js'
import { installErrorHandling } from './problem.js'
import { installValidation } from './validation.js'
import { eventRoutes } from './routes/events.js'
import { healthRoutes } from './routes/health.js'
import { hostRoutes, type HostGpuDeps } from './routes/hosts.js'
import { placementLogRoutes, type LogsDeps } from './routes/logs.js'
import { poolRoutes } from './routes/pools.js'
import { teamRoutes } from './routes/teams.js'
import { tokenRoutes } from './routes/tokens.js'
import { workloadRoutes } from './routes/workloads.js'

export interface AppDeps {
  pool: Pool
  redis: Redis | null
  notifier: Notifier
  metrics: Metrics
  log: Logger
  /** Largest request body accepted. */
  bodyLimit?: number
  /** Serve HTTPS (and wss) with this certificate and key (PEM). */
  https?: { cert: Buffer; key: Buffer }
  /** Session attach (GET /v1/workloads/:id/attach); without it the route does not exist. */
  attach?: { deps: AttachDeps; hub: AttachHub }
  /** How long a request's headers and body may take to arrive (default 30 s). */
  requestTimeoutMs?: number
  /** Placement logs from the hosts (GET /v1/placements/:id/logs); without it the route does not exist. */
  logs?: LogsDeps
  /** Live GPU usage and clear-health (the mesh); without it usage is null and clear-health answers 503. */
  gpus?: HostGpuDeps
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // A client that sends its headers or body slowly (or stops) holds a socket:
  // past this it gets a 408 and the connection closes. Node checks for it at
  // an interval, so the interval follows the timeout. Once a request has
  // arrived the timeout no longer applies (event streams, attach).
  const requestTimeout = deps.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS
  const server = {
    requestTimeout,
    headersTimeout: requestTimeout,
    connectionsCheckingInterval: Math.min(requestTimeout, 1000)
  }
  const app = Fastify({
    loggerInstance: deps.log as unknown as FastifyBaseLogger,
    // Requests are counted in /metrics; a log line per request would drown the journal.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimit ?? 1024 * 1024,
    requestTimeout,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: frameworkError,
    ...(deps.https === undefined ? { http: server } : { https: { ...server, ...deps.https } })
  }).withTypeProvider<TypeBoxTypeProvider>()
  installValidation(app)
  // Fastify reads text/plain bodies as strings by default; every body here is JSON (415 otherwise).
  app.removeContentTypeParser('text/plain')

  // JSON bodies must be valid UTF-8; Node would otherwise replace bad bytes silently.
  const defaultJson = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    let text: string
    try {
      text = strictUtf8.decode(body as Buffer)
    } catch {
      done(new ApiError('BAD_BODY', 'the body is not valid UTF-8'), undefined)
      return
    }
    defaultJson(req, text, done)
  })

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'gpumesh admin API',
        version: VERSION,
        description:
          'Hosts, pools, workloads, placements, events and tokens of a gpumesh cluster. Errors are application/problem+json.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' }
      },
      // The document is served by every coordinator: its address is the reader's to fill in.
      servers: [
        {
          url: '{scheme}://{address}',
          description: "A coordinator's admin API (GPUMESH_API_LISTEN)",
          variables: {
            scheme: {
              default: 'http',
              enum: ['http', 'https'],
              description: 'https when the coordinator has a TLS certificate'
            },
            address: { default: '127.0.0.1:7470', description: 'host:port the admin API listens on' }
          }
        }
      ],
      tags: [
        { name: 'hosts', description: 'GPU hosts: facts, state, cordon, drain, revoke' },
        { name: 'pools', description: 'Sets of like hosts, with kind and labels' },
        { name: 'workloads', description: 'Endpoints, recipes and sessions' },
        { name: 'placements', description: 'Where workloads run' },
        { name: 'events', description: 'The event feed' },
        { name: 'tokens', description: 'API tokens and agent join tokens' },
        { name: 'teams', description: 'Teams: whose workloads a token sees and changes' },
        { name: 'health', description: 'Probes and metrics (no token needed)' },
        { name: 'meta', description: 'This document (no token needed)' }
      ],
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }]
    }
  })
  installErrorHandling(app)
  // Before the auth hook: the plugin's own onRequest hook marks upgrade
  // requests, and only marked ones have their socket closed after a refusal
  // (a 401 from the auth hook would otherwise leave the socket open).
  if (deps.attach !== undefined) {
    const { hub } = deps.attach
    await app.register(websocket, {
      options: { maxPayload: MAX_CLIENT_MESSAGE, handleProtocols: selectProtocol },
      // Each client is told why its attach ends (the plugin's default closes without a code).
      preClose: (done) => {
        hub.closeAll(SESSION_CLOSE.GOING_AWAY, 'coordinator shutting down')
        for (const ws of app.websocketServer.clients) ws.terminate() // not attached yet (dialing the agent)
        app.websocketServer.close()
        done()
      }
    })
  }
  installAuth(app, deps.pool)
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched'
    deps.metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) })
    deps.metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000)
  })

  await app.register(healthRoutes(deps.pool, deps.redis, deps.metrics))
  await app.register(hostRoutes(deps.pool, deps.gpus))
  await app.register(poolRoutes(deps.pool))
  await app.register(workloadRoutes(deps.pool))
  await app.register(tokenRoutes(deps.pool))
  await app.register(teamRoutes(deps.pool))
  await app.register(eventRoutes(deps.pool, deps.notifier))
  if (deps.attach !== undefined) await app.register(attachRoutes(deps.attach.deps, deps.attach.hub))
  if (deps.logs !== undefined) await app.register(placementLogRoutes(deps.pool, deps.logs))
  return app
}
