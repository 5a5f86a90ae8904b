import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { IdParams, ListQuery, Page, Placement, Workload } from '../../../protocol/api.js'
import { WorkloadSpec } from '../../../protocol/workload.js'
import type { Pool } from '../../store/db.js'
import { createWorkload, deleteWorkload, getWorkload, listPlacements, listWorkloads } from '../../store/workloads.js'
import { responses } from '../schemas.js'

export const workloadRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/v1/workloads',
      {
        config: { role: 'operator' },
        schema: {
          operationId: 'createWorkload',
          tags: ['workloads'],
          summary: 'Create an endpoint, recipe or session',
          body: WorkloadSpec,
          response: responses({ 201: Workload }, 409, 413, 415, 422)
        }
      },
      async (req, reply) => reply.code(201).send(await createWorkload(pool, req.body))
    )

    app.get(
      '/v1/workloads',
      {
        schema: {
          operationId: 'listWorkloads',
          tags: ['workloads'],
          summary: 'Workloads that are not deleted, with their placements',
          querystring: ListQuery,
          response: responses({ 200: Page(Workload) })
        }
      },
      async (req) => await listWorkloads(pool, req.query.limit ?? 100, req.query.cursor)
    )

    app.get(
      '/v1/workloads/:id',
      {
        schema: {
          operationId: 'getWorkload',
          tags: ['workloads'],
          summary: 'One workload; while pending, `reason` says why',
          params: IdParams,
          response: responses({ 200: Workload }, 404)
        }
      },
      async (req) => await getWorkload(pool, req.params.id)
    )

    app.delete(
      '/v1/workloads/:id',
      {
        config: { role: 'operator' },
        schema: {
          operationId: 'deleteWorkload',
          tags: ['workloads'],
          summary: 'Delete a workload; its placements stop and release their GPUs',
          params: IdParams,
          response: responses({ 200: Workload }, 404)
        }
      },
      async (req) => await deleteWorkload(pool, req.params.id)
    )

    app.get(
      '/v1/placements',
      {
        schema: {
          operationId: 'listPlacements',
          tags: ['placements'],
          summary: 'All placements',
          querystring: ListQuery,
          response: responses({ 200: Page(Placement) })
        }
      },
      async (req) => await listPlacements(pool, req.query.limit ?? 100, req.query.cursor)
    )
  }
