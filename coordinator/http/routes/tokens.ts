import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import {
  IdParams,
  JoinToken,
  JoinTokenCreate,
  ListQuery,
  Page,
  Token,
  TokenCreate,
  TokenInfo
} from '../../../protocol/api.js'
import type { Pool } from '../../store/db.js'
import { createApiToken, createJoinToken, listApiTokens, revokeApiToken } from '../../store/tokens.js'
import { ApiError } from '../problem.js'
import { responses } from '../schemas.js'

/** The endpoints a new token may call: required for invoke tokens, meaningless (refused) for the others. */
function endpointsOf(body: TokenCreate): string[] | null {
  if (body.role === 'invoke') {
    if (body.endpoints === undefined)
      throw new ApiError('VALIDATION', 'body: an invoke token needs "endpoints": the endpoints it may call')
    return body.endpoints
  }
  if (body.endpoints !== undefined)
    throw new ApiError(
      'VALIDATION',
      `body: "endpoints" is for invoke tokens only; a ${body.role} token's role decides what it may do`
    )
  return null
}

/** Team tokens see and change their team's workloads: operators and viewers. Admin and invoke tokens are the cluster's. */
function teamOf(body: TokenCreate): string | null {
  if (body.team === undefined) return null
  if (body.role !== 'operator' && body.role !== 'viewer')
    throw new ApiError(
      'VALIDATION',
      `body: "team" is for operator and viewer tokens; a${body.role === 'admin' ? 'n admin' : 'n invoke'} token is the cluster's`
    )
  return body.team
}

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
          response: responses({ 201: Token }, 413, 415, 422)
        }
      },
      async (req, reply) =>
        reply
          .code(201)
          .send(await createApiToken(pool, req.body.role, req.body.name, endpointsOf(req.body), teamOf(req.body)))
    )

    app.get(
      '/v1/tokens',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'listApiTokens',
          tags: ['tokens'],
          summary: 'API tokens, revoked ones included, newest first (never their secrets)',
          querystring: ListQuery,
          response: responses({ 200: Page(TokenInfo) })
        }
      },
      async (req) => await listApiTokens(pool, req.query.limit ?? 100, req.query.cursor)
    )

    app.delete(
      '/v1/tokens/:id',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'revokeApiToken',
          tags: ['tokens'],
          summary: 'Revoke an API token: its next request gets 401 (revoking a revoked token is a no-op)',
          params: IdParams,
          response: responses({ 204: Type.Null({ description: 'Revoked' }) }, 404)
        }
      },
      async (req, reply) => {
        await revokeApiToken(pool, req.params.id)
        return reply.code(204).send()
      }
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
