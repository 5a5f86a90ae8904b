// GET /v1/workloads/:id/attach: a WebSocket to a session's terminal
// (docs/design.md "Contracts"). Everything that can refuse an attach is checked
// before the upgrade, so the client gets an HTTP answer with a problem+json
// body: the bearer token and its role (operator; in the Authorization header,
// or as a `bearer.<token>` subprotocol for browsers, see http/auth.ts), the
// transport (see secureEnough), the workload and its running placement. Then
// the coordinator opens /gpumesh/session/1 to the agent and an AttachBridge
// joins the two.
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import type { Connection, Stream } from '@libp2p/interface'
import type { RawData, WebSocket } from 'ws'
import type { Logger } from '../../common/log.js'
import { IdParams, Problem } from '../../protocol/api.js'
import { scopeOf } from '../http/auth.js'
import { ApiError } from '../http/problem.js'
import {
  AttachQuery,
  encodeControl,
  SESSION_CLOSE,
  SESSION_PROTOCOL,
  SESSION_VERSION,
  WS_SUBPROTOCOL
} from '../../protocol/session.js'
import type { Pool } from '../store/db.js'
import { responses } from '../http/schemas.js'
import { AttachBridge, type AttachTarget } from './bridge.js'
import { attachTarget, type ConnectedHosts } from './target.js'

const DIAL_TIMEOUT_MS = 10_000

export interface AttachDeps {
  pool: Pool
  hosts: ConnectedHosts
  /** Opens a session stream to a connected agent. */
  dial: (peerId: string, protocol: string, signal: AbortSignal) => Promise<{ stream: Stream; connection: Connection }>
  /** The API is served over TLS. */
  tls: boolean
  /** GPUMESH_ALLOW_INSECURE=1: plain ws from any address. */
  allowInsecure: boolean
  log: Logger
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/

/**
 * Keystrokes are passwords as often as not: an attach over plain ws is only
 * served to a client on this machine (a local CLI, or a TLS-terminating
 * proxy beside the coordinator), unless TLS is on or the operator allowed it.
 */
export function secureEnough(req: FastifyRequest, deps: Pick<AttachDeps, 'tls' | 'allowInsecure'>): boolean {
  return deps.tls || deps.allowInsecure || LOOPBACK.test(req.socket.remoteAddress ?? '')
}

/** Live attaches, so that shutdown can tell each client why it ends. */
export class AttachHub {
  readonly bridges = new Set<AttachBridge>()

  closeAll(code: number, reason: string): void {
    for (const b of [...this.bridges]) b.close(code, reason)
  }
}

/** ws `handleProtocols`: select gpumesh.v1 when offered; never echo the token subprotocol. */
export function selectProtocol(protocols: Set<string>): string | false {
  return protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false
}

export const attachRoutes =
  (deps: AttachDeps, hub: AttachHub): FastifyPluginAsyncTypebox =>
  async (app) => {
    const targets = new WeakMap<FastifyRequest, AttachTarget>()

    app.route({
      method: 'GET',
      url: '/v1/workloads/:id/attach',
      config: { role: 'operator', team: true },
      schema: {
        operationId: 'attachSession',
        tags: ['workloads'],
        summary: "Attach to a session's terminal (WebSocket upgrade)",
        description:
          'Binary messages carry terminal bytes both ways; text messages carry JSON control: {"type":"resize","cols":120,"rows":40} from the client, {"type":"attached",...} and {"type":"exit","code":0,...} from the server. The close code says why an attach ended.',
        params: IdParams,
        querystring: AttachQuery,
        // A WebSocket has no 2xx: 101 opens it, any refusal is problem+json.
        response: {
          ...responses({ 101: Type.Null({ description: 'Switching Protocols: the WebSocket is open' }) }, 404, 409),
          default: Problem
        }
      },
      preHandler: async (req) => {
        if (!secureEnough(req, deps))
          throw new ApiError(
            'INSECURE_TRANSPORT',
            'set GPUMESH_TLS_CERT and GPUMESH_TLS_KEY on the coordinator (or GPUMESH_ALLOW_INSECURE=1 on a trusted network)'
          )
        const { id } = req.params as { id: string }
        targets.set(req, await attachTarget(deps.pool, deps.hosts, id, scopeOf(req)))
      },
      handler: async () => {
        throw new ApiError(
          'VALIDATION',
          'this route is a WebSocket: send Connection: Upgrade and Upgrade: websocket (gpumesh attach does)'
        )
      },
      wsHandler: async (ws: WebSocket, req) => {
        const target = targets.get(req) as AttachTarget
        const { cols, rows } = req.query as { cols?: number; rows?: number }
        await open(ws, target, cols ?? 80, rows ?? 24, deps, hub, req.principal?.name ?? '?')
      }
    })
  }

async function open(
  ws: WebSocket,
  target: AttachTarget,
  cols: number,
  rows: number,
  deps: AttachDeps,
  hub: AttachHub,
  who: string
): Promise<void> {
  // What the client sends while the agent is dialled (typed-ahead input, a pipe) is kept, in order.
  const early: Array<[RawData, boolean]> = []
  const keep = (data: RawData, isBinary: boolean) => {
    early.push([data, isBinary])
  }
  ws.on('message', keep)
  let opened: { stream: Stream; connection: Connection }
  try {
    opened = await deps.dial(target.peerId, SESSION_PROTOCOL, AbortSignal.timeout(DIAL_TIMEOUT_MS))
  } catch (err) {
    ws.close(SESSION_CLOSE.HOST_LOST, `cannot reach host ${target.hostName}`)
    deps.log.warn({ host: target.hostId, err: (err as Error).message }, 'attach: cannot open a session stream')
    return
  } finally {
    ws.off('message', keep)
  }
  const { stream, connection } = opened
  if (ws.readyState !== ws.OPEN) {
    stream.abort(new Error('client left'))
    return
  }
  const bridge = new AttachBridge(
    ws,
    stream,
    () => connection.status === 'open',
    target,
    deps.log,
    () => {
      hub.bridges.delete(bridge)
      deps.log.info({ workload: target.workloadId, placement: target.placementId, token: who }, 'detached')
    }
  )
  hub.bridges.add(bridge)
  stream.send(encodeControl({ v: SESSION_VERSION, type: 'open', placementId: target.placementId, cols, rows }))
  for (const [data, isBinary] of early) ws.emit('message', data, isBinary)
  deps.log.info(
    { workload: target.workloadId, placement: target.placementId, host: target.hostName, token: who },
    'attached'
  )
}
