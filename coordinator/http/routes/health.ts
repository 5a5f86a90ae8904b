// Unauthenticated endpoints for probes and scrapers (and the API document):
// `security: []` says so in /openapi.json. Like every route they refuse
// query parameters they do not know (400), never ignore them.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Redis } from 'ioredis'
import { Problem } from '../../../protocol/api.js'
import { within } from '../../../common/daemon/within.js'
import type { Metrics } from '../../metrics.js'
import { type Pool, ping } from '../../store/db.js'
import { sendProblem } from '../problem.js'

const NoQuery = Type.Object({}, { additionalProperties: false })
const PUBLIC = { security: [], querystring: NoQuery, tags: ['health'] }

const Status = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) })

export const healthRoutes =
  (pool: Pool, redis: Redis | null, metrics: Metrics): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/livez',
      {
        config: { public: true },
        schema: {
          ...PUBLIC,
          operationId: 'checkLiveness',
          summary: 'The process is up (no dependencies checked)',
          response: { 200: Status, 400: Problem }
        }
      },
      async () => ({ status: 'ok' })
    )

    app.get(
      '/readyz',
      {
        config: { public: true },
        schema: {
          ...PUBLIC,
          operationId: 'checkReadiness',
          summary: 'PostgreSQL (and Redis when configured) answer',
          response: { 200: Status, 400: Problem, 503: Problem }
        }
      },
      async (req, reply) => {
        const checks: Record<string, string> = {}
        const reasons: Record<string, string> = {}
        const check = async (name: string, answers: () => Promise<unknown>) => {
          try {
            await answers()
            checks[name] = 'ok'
          } catch (err) {
            checks[name] = 'not answering'
            reasons[name] = (err as Error).message
          }
        }
        await check('postgres', async () => await ping(pool))
        if (redis !== null) await check('redis', async () => await within(redis.ping(), 2000))
        const failed = Object.entries(checks).filter(([, v]) => v !== 'ok')
        if (failed.length === 0) return { status: 'ok', checks }
        // The reasons name sockets, files and hosts: the log has them, an anonymous caller does not.
        req.log.warn({ reasons }, 'not ready')
        return sendProblem(reply, 'UNAVAILABLE', failed.map(([k, v]) => `${k}: ${v}`).join('; '))
      }
    )

    app.get(
      '/metrics',
      {
        config: { public: true },
        schema: {
          ...PUBLIC,
          operationId: 'getMetrics',
          summary: 'Prometheus metrics (gpumesh_*)',
          response: { 200: Type.String({ description: 'Prometheus text exposition format' }), 400: Problem }
        }
      },
      async (_req, reply) => {
        reply.type(metrics.registry.contentType)
        return await metrics.registry.metrics()
      }
    )

    app.get(
      '/openapi.json',
      {
        config: { public: true },
        schema: {
          ...PUBLIC,
          tags: ['meta'],
          operationId: 'getOpenApi',
          summary: 'This document (OpenAPI 3.1)',
          response: {
            200: Type.Object({}, { additionalProperties: true, description: 'OpenAPI 3.1 document' }),
            400: Problem
          }
        }
      },
      async () => app.swagger()
    )
  }
