// Bearer tokens with roles, checked on every /v1 request. A route names the
// least role it needs in its config; reads need viewer by default.
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyInstance } from 'fastify'
import type { Role } from '../../protocol/api.js'
import { ApiError } from './problem.js'
import type { Pool } from '../store/db.js'
import { authenticate, type Principal } from '../store/tokens.js'
import type { Scope } from '../store/workloads.js'

// invoke tokens are for the gateway (store/tokens.ts authorizeCall): no /v1 route is open to them.
const RANK: Record<Role, number> = { invoke: -1, viewer: 0, operator: 1, admin: 2 }

declare module 'fastify' {
  interface FastifyContextConfig {
    role?: Role
    public?: boolean
    /** The route changes the caller's own team's workloads (team tokens may); else it changes the cluster (they may not). */
    team?: boolean
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

/** The token from "Authorization: Bearer <token>", or from a WebSocket subprotocol "bearer.<token>" (browsers cannot set headers). */
export function bearerToken(req: { headers: IncomingHttpHeaders }): string | null {
  const header = req.headers.authorization
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
    return m === null ? null : (m[1] as string)
  }
  const protocols = req.headers['sec-websocket-protocol']
  const proto =
    typeof protocols === 'string'
      ? protocols
          .split(',')
          .map((p) => p.trim())
          .find((p) => p.startsWith('bearer.'))
      : undefined
  return proto === undefined ? null : proto.slice('bearer.'.length)
}

export function installAuth(app: FastifyInstance, pool: Pool): void {
  app.decorateRequest('principal', null)
  app.addHook('onRequest', async (req) => {
    const config = req.routeOptions.config
    if (config.public === true || req.routeOptions.url === undefined) return
    const token = bearerToken(req)
    if (token === null) throw new ApiError('UNAUTHORIZED', 'send "Authorization: Bearer <token>"')
    const principal = await authenticate(pool, token)
    if (principal === null) throw new ApiError('UNAUTHORIZED')
    if (principal.role === 'invoke')
      throw new ApiError(
        'FORBIDDEN',
        `invoke tokens call their endpoints through the gateway only; ${req.method} ${req.routeOptions.url} needs an admin, operator or viewer token`
      )
    const needed = config.role ?? 'viewer'
    if (RANK[principal.role] < RANK[needed])
      throw new ApiError(
        'FORBIDDEN',
        `${req.method} ${req.routeOptions.url} needs the ${needed} role; this token is ${principal.role}`
      )
    if (principal.teamId !== null && RANK[needed] > RANK.viewer && config.team !== true)
      throw new ApiError(
        'FORBIDDEN',
        `${req.method} ${req.routeOptions.url} changes the cluster; a team's token changes its team's workloads only`
      )
    req.principal = principal
  })
}

/** Whose workloads the request's token sees: its team's, or (a cluster token) all. */
export const scopeOf = (req: { principal: Principal | null }): Scope => ({ teamId: req.principal?.teamId ?? null })
