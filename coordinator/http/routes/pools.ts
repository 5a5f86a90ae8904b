import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { KeyParams, Page, Pool as PoolResource, PoolPatch } from '../../../protocol/api.js'
import type { Pool } from '../../store/db.js'
import { getPool, listPools, updatePool } from '../../store/pools.js'
import { responses } from '../schemas.js'

export const poolRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/v1/pools',
      {
        schema: {
          operationId: 'listPools',
          tags: ['pools'],
          summary: 'Pools with kind, host count and capacity',
          response: responses({ 200: Page(PoolResource) })
        }
      },
      async () => ({ items: await listPools(pool), nextCursor: null })
    )

    app.get(
      '/v1/pools/:key',
      {
        schema: {
          operationId: 'getPool',
          tags: ['pools'],
          summary: 'One pool with its hosts',
          params: KeyParams,
          response: responses({ 200: PoolResource }, 404)
        }
      },
      async (req) => await getPool(pool, req.params.key)
    )

    app.patch(
      '/v1/pools/:key',
      {
        config: { role: 'operator' },
        schema: {
          operationId: 'updatePool',
          tags: ['pools'],
          summary: "Set a pool's kind (static, inference, training) or labels",
          params: KeyParams,
          body: PoolPatch,
          response: responses({ 200: PoolResource }, 404, 413, 415)
        }
      },
      async (req) => await updatePool(pool, req.params.key, req.body)
    )
  }
