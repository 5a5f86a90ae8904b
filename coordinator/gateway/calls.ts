// What every call through the gateway gets, on /<endpoint>/ and /openai/
// routes alike: the token check in PostgreSQL (store/tokens.ts authorizeCall:
// one lookup per call, no cache), and its place in the gateway's metrics.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { bearerToken } from '../http/auth.js'
import { authorizeCall, type CallAuthorization } from '../store/tokens.js'
import { GatewayError } from './forward.js'
import type { GatewayDeps } from './listener.js'

/** The token check, timed; a database that does not answer is a 503, not a refusal. */
export async function authorize(deps: GatewayDeps, req: IncomingMessage, endpoint: string): Promise<void> {
  const started = process.hrtime.bigint()
  let auth: CallAuthorization
  try {
    auth = await authorizeCall(deps.pool, bearerToken(req), endpoint, deps.replicas.teamOf(endpoint))
  } catch (err) {
    deps.log.warn({ err: (err as Error).message }, 'gateway: token check failed')
    throw new GatewayError('UNAVAILABLE', 'the database is unavailable; retry shortly', 1)
  } finally {
    deps.metrics.gatewayAuth.observe(Number(process.hrtime.bigint() - started) / 1e9)
  }
  if (!auth.ok)
    throw new GatewayError(
      auth.status === 401 ? 'UNAUTHORIZED' : auth.status === 404 ? 'NOT_FOUND' : 'FORBIDDEN',
      auth.detail
    )
}

/** Counts the call and times it when its response closes, under the endpoint `endpoint()` names then. */
export function countCall(deps: GatewayDeps, res: ServerResponse, endpoint: () => string): void {
  const started = process.hrtime.bigint()
  res.once('close', () => {
    // Unknown names are not labels: a scanner would make a series per name it tried.
    const name = endpoint()
    const label = deps.replicas.has(name) ? name : ''
    deps.metrics.gatewayRequests.inc({ endpoint: label, code: String(res.statusCode) })
    deps.metrics.gatewayDuration.observe({ endpoint: label }, Number(process.hrtime.bigint() - started) / 1e9)
  })
}
