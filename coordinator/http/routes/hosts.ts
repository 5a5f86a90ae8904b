import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Host, HostAction, HostGpu, IdParams, ListQuery, Page } from '../../../protocol/api.js'
import type { ClearHealthResult } from '../../../protocol/control.js'
import type { Pool } from '../../store/db.js'
import { ApiError } from '../problem.js'
import { getHost, listHosts, setHostState } from '../../store/hosts.js'
import { revokeHost } from '../../store/lifecycle.js'
import type { LiveGpus } from '../../telemetry/live-gpus.js'
import { responses } from '../schemas.js'

/** What the host routes need of the mesh: live usage, and the agents for clear-health. */
export interface HostGpuDeps {
  live: LiveGpus
  /** Throws when the host's agent cannot be asked (not connected here, no answer). */
  clearHealth: (hostId: string, gpu: number) => Promise<ClearHealthResult>
}

const GpuParams = Type.Object({
  id: Type.String({ format: 'uuid' }),
  index: Type.Integer({ minimum: 0, maximum: 1023 })
})

export const hostRoutes =
  (pool: Pool, gpus?: HostGpuDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    // Usage is in memory, from the heartbeats this coordinator receives; health is stored.
    const withUsage = (host: Host): Host => {
      const live = new Map((gpus?.live.gpus(host.id) ?? []).map((g) => [g.index, g.usage]))
      return { ...host, gpus: host.gpus.map((g) => ({ ...g, usage: live.get(g.index) ?? null })) }
    }

    app.get(
      '/v1/hosts',
      {
        schema: {
          operationId: 'listHosts',
          tags: ['hosts'],
          summary: 'List hosts with their facts, pool, state, free GPUs and GPU health',
          querystring: ListQuery,
          response: responses({ 200: Page(Host) })
        }
      },
      async (req) => {
        const page = await listHosts(pool, req.query.limit ?? 100, req.query.cursor)
        return { ...page, items: page.items.map(withUsage) }
      }
    )

    app.get(
      '/v1/hosts/:id',
      {
        schema: {
          operationId: 'getHost',
          tags: ['hosts'],
          summary: 'One host, with the health and live usage of each GPU',
          params: IdParams,
          response: responses({ 200: Host }, 404)
        }
      },
      async (req) => withUsage(await getHost(pool, req.params.id))
    )

    app.post(
      '/v1/hosts/:id/gpus/:index/clear-health',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'clearGpuHealth',
          tags: ['hosts'],
          summary:
            "Clear a GPU's failed health after repair: the XIDs logged so far and the uncorrected ECC count seen now stop failing it (a condition that still holds fails it again)",
          params: GpuParams,
          response: responses({ 200: HostGpu }, 404, 409)
        }
      },
      async (req) => {
        const { id, index } = req.params
        const host = await getHost(pool, id)
        const gpu = host.gpus.find((g) => g.index === index)
        if (gpu === undefined) throw new ApiError('NOT_FOUND', `host ${host.name} has no GPU ${index}`)
        if (gpu.health === null || gpu.health.state === 'healthy')
          throw new ApiError(
            'GPU_HEALTHY',
            `GPU ${index} of host ${host.name} is ${gpu.health === null ? 'not reported unhealthy' : 'healthy'}`
          )
        if (gpus === undefined) throw new ApiError('HOST_UNREACHABLE', `host ${host.name} cannot be reached from here`)
        let answer: ClearHealthResult
        try {
          answer = await gpus.clearHealth(id, index)
        } catch (err) {
          throw new ApiError('HOST_UNREACHABLE', `host ${host.name}: ${(err as Error).message}`)
        }
        if (answer.error !== null)
          throw new ApiError(
            answer.error.code === 'ERR_GPU_UNKNOWN' ? 'NOT_FOUND' : 'HOST_UNREACHABLE',
            `host ${host.name}: ${answer.error.message}`
          )
        req.log.warn({ host: id, gpu: index, health: answer.health }, 'GPU health cleared by an admin')
        return { ...withUsage(host).gpus[host.gpus.indexOf(gpu)], health: answer.health } as HostGpu
      }
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
        async (req) => withUsage(await setHostState(pool, req.params.id, action, req.body?.reason ?? null))
      )
    }
  }
