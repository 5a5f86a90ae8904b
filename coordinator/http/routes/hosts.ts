import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Host, HostAction, IdParams, ListQuery, Page } from '../../../protocol/api.js'
import type { Pool } from '../../store/db.js'
import { ApiError } from '../problem.js'
import { getHost, listHosts, setHostState } from '../../store/hosts.js'
import { revokeHost } from '../../store/lifecycle.js'
import { responses } from '../schemas.js'

export const hostRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/v1/hosts',
      {
        schema: {
          operationId: 'listHosts',
          tags: ['hosts'],
          summary: 'List hosts with their facts, pool, state and free GPUs',
          querystring: ListQuery,
          response: responses({ 200: Page(Host) })
        }
      },
      async (req) => await listHosts(pool, req.query.limit ?? 100, req.query.cursor)
    )

    app.get(
      '/v1/hosts/:id',
      {
        schema: {
          operationId: 'getHost',
          tags: ['hosts'],
          summary: 'One host',
          params: IdParams,
          response: responses({ 200: Host }, 404)
        }
      },
      async (req) => await getHost(pool, req.params.id)
    )

    app.delete(
      '/v1/hosts/:id',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'revokeHost',
          tags: ['hosts'],
          summary:
            'Revoke a host: its peer id stops being a credential, its connections close, its work is placed elsewhere',
          params: IdParams,
          response: responses({ 204: Type.Null() }, 404)
        }
      },
      async (req, reply) => {
        if ((await revokeHost(pool, req.params.id)) === null)
          throw new ApiError('NOT_FOUND', `no host ${req.params.id}`)
        return await reply.code(204).send()
      }
    )

    for (const action of ['cordon', 'uncordon', 'drain'] as const) {
      app.post(
        `/v1/hosts/:id/${action}`,
        {
          config: { role: 'operator' },
          schema: {
            operationId: `${action}Host`,
            tags: ['hosts'],
            summary: `${action[0]?.toUpperCase()}${action.slice(1)} a host`,
            params: IdParams,
            body: Type.Optional(HostAction),
            response: responses({ 200: Host }, 404, 413, 415)
          },
          // A bodyless POST (the common case) is an empty action body.
          preValidation: async (req) => {
            req.body ??= {}
          }
        },
        async (req) => await setHostState(pool, req.params.id, action, req.body?.reason ?? null)
      )
    }
  }
