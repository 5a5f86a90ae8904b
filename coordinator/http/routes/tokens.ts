import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { JoinToken, JoinTokenCreate, Token, TokenCreate } from '../../../protocol/api.js'
import type { Pool } from '../../store/db.js'
import { createApiToken, createJoinToken } from '../../store/tokens.js'
import { responses } from '../schemas.js'

export const tokenRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/v1/tokens',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'createApiToken',
          tags: ['tokens'],
          summary: 'Create an API token (shown once)',
          body: TokenCreate,
          response: responses({ 201: Token }, 413, 415)
        }
      },
      async (req, reply) => reply.code(201).send(await createApiToken(pool, req.body.role, req.body.name))
    )

    app.post(
      '/v1/join-tokens',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'createJoinToken',
          tags: ['tokens'],
          summary: 'Create an agent join token for one or more hosts, optionally bound to a pool (shown once)',
          body: JoinTokenCreate,
          response: responses({ 201: JoinToken }, 413, 415)
        },
        preValidation: async (req) => {
          req.body ??= {}
        }
      },
      async (req, reply) =>
        reply
          .code(201)
          .send(await createJoinToken(pool, req.body.pool ?? null, req.body.ttlSeconds ?? 86400, req.body.uses ?? 1))
    )
  }
