import { RESERVED_NAMES } from '../../../protocol/gateway.js'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { IdParams, ListQuery, Page, Placement, REDACTED, Workload, WorkloadPatch } from '../../../protocol/api.js'
import { type Run, WorkloadSpec } from '../../../protocol/workload.js'
import { runProblem } from '../../../protocol/workload-rules.js'
import type { Pool } from '../../store/db.js'
import { patchWorkload } from '../../store/rollouts.js'
import {
  checkWorkloadScope,
  createWorkload,
  deleteWorkload,
  getWorkload,
  listPlacements,
  listWorkloads
} from '../../store/workloads.js'
import { scopeOf } from '../auth.js'
import { ApiError } from '../problem.js'
import { responses } from '../schemas.js'

/** `run.env` values are often secrets (HF_TOKEN): a viewer sees the names only. */
function forReader(req: FastifyRequest, w: Workload): Workload {
  const env = w.spec.run.env
  if (req.principal?.role !== 'viewer' || env === undefined) return w
  const names = Object.fromEntries(Object.keys(env).map((k) => [k, REDACTED]))
  return { ...w, spec: { ...w.spec, run: { ...w.spec.run, env: names } } }
}

/** What the agent would refuse is refused here, where the operator sees why. */
function checkRun(run: Run): void {
  const problem = runProblem(run)
  if (problem !== null) throw new ApiError('VALIDATION', `body: /run${problem.path} ${problem.message}`)
}

export const workloadRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/v1/workloads',
      {
        config: { role: 'operator', team: true },
        schema: {
          operationId: 'createWorkload',
          tags: ['workloads'],
          summary: 'Create an endpoint, recipe or session',
          body: WorkloadSpec,
          response: responses({ 201: Workload }, 409, 413, 415, 422)
        }
      },
      async (req, reply) => {
        checkRun(req.body.run)
        if (RESERVED_NAMES.includes(req.body.name))
          throw new ApiError(
            'VALIDATION',
            `body: /name ${JSON.stringify(req.body.name)} is reserved: the gateway serves its OpenAI-compatible API under /${req.body.name}/`
          )
        return reply.code(201).send(await createWorkload(pool, req.body, scopeOf(req)))
      }
    )

    app.get(
      '/v1/workloads',
      {
        schema: {
          operationId: 'listWorkloads',
          tags: ['workloads'],
          summary: 'Workloads that are not deleted, with their placements',
          description: `A viewer token sees each \`run.env\` value as \`${REDACTED}\`; operator and admin tokens see the values.`,
          querystring: ListQuery,
          response: responses({ 200: Page(Workload) })
        }
      },
      async (req) => {
        const page = await listWorkloads(pool, req.query.limit ?? 100, req.query.cursor, scopeOf(req))
        return { ...page, items: page.items.map((w) => forReader(req, w)) }
      }
    )

    app.get(
      '/v1/workloads/:id',
      {
        schema: {
          operationId: 'getWorkload',
          tags: ['workloads'],
          summary: 'One workload; while pending, `reason` says why',
          description: `A viewer token sees each \`run.env\` value as \`${REDACTED}\`; operator and admin tokens see the values.`,
          params: IdParams,
          response: responses({ 200: Workload }, 404)
        }
      },
      async (req) => forReader(req, await getWorkload(pool, req.params.id, scopeOf(req)))
    )

    app.patch(
      '/v1/workloads/:id',
      {
        config: { role: 'operator', team: true },
        schema: {
          operationId: 'patchWorkload',
          tags: ['workloads'],
          summary: 'Scale an endpoint (`replicas`) or roll it to a new `run` and/or `serve`',
          description:
            'A new `replicas` places the missing replicas or removes the extra ones (unready first, then the newest; a ready one is drained first). A new `run` or `serve` raises the generation and rolls: one new replica, ready, then one old one drained and stopped, until every replica runs the new generation; ready replicas never drop below what was ready before. A new replica that does not become ready within `serve.startupSeconds` stops the roll (`rollout.reason`), and the workload goes back to the spec its old replicas run. Only endpoints.',
          params: IdParams,
          body: WorkloadPatch,
          response: responses({ 200: Workload }, 404, 409, 415)
        }
      },
      async (req) => {
        if (req.body.run !== undefined) checkRun(req.body.run)
        await checkWorkloadScope(pool, req.params.id, scopeOf(req))
        await patchWorkload(pool, req.params.id, req.body)
        return await getWorkload(pool, req.params.id)
      }
    )

    app.delete(
      '/v1/workloads/:id',
      {
        config: { role: 'operator', team: true },
        schema: {
          operationId: 'deleteWorkload',
          tags: ['workloads'],
          summary: 'Delete a workload; its placements stop and release their GPUs',
          params: IdParams,
          response: responses({ 200: Workload }, 404)
        }
      },
      async (req) => await deleteWorkload(pool, req.params.id, scopeOf(req))
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
      async (req) => await listPlacements(pool, req.query.limit ?? 100, req.query.cursor, scopeOf(req))
    )
  }
