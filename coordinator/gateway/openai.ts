// The gateway's OpenAI-compatible front (docs/design.md "Serving endpoints"):
// the standard OpenAI clients work against gpumesh by changing their base URL
// to <gateway>/openai/v1. The body's `model` names the endpoint; its replicas
// (vLLM, SGLang, TGI...) speak the same API, so the call is forwarded as is,
// without the /openai prefix. Errors use OpenAI's body so the SDKs raise the
// matching exception (401 AuthenticationError, 403 PermissionDeniedError,
// 404 NotFoundError...).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import { bearerToken } from '../http/auth.js'
import { authenticate, mayCall } from '../store/tokens.js'
import { authorize, countCall } from './calls.js'
import { type ForwardCall, GatewayError, type GatewayErrorCode } from './forward.js'
import type { GatewayDeps } from './listener.js'
import type { OpenAIModel } from './replicas.js'

export const OPENAI_PREFIX = '/openai'
/** A JSON request is read whole (to route on `model`); this bounds what that costs. */
export const OPENAI_MAX_BODY_BYTES = 16 * 1024 * 1024

/** The routes forwarded to the replica: routed on the body's `model`. */
const FORWARDED = new Set(['/v1/chat/completions', '/v1/completions', '/v1/embeddings'])

/** OpenAI's error body: the SDKs pick the exception from the status, and show `message`. */
export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null }
}

/** A refusal on the OpenAI routes: rendered once, in `sendError`. */
export class OpenAIError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | null,
    message: string,
    readonly extra: { param?: string; retryAfterSeconds?: number; allow?: string } = {}
  ) {
    super(message)
    this.name = 'OpenAIError'
  }
}

/** OpenAI's `type` by status: its API says invalid_request_error for the client's faults, server_error for its own. */
const typeFor = (status: number): string => (status >= 500 ? 'server_error' : 'invalid_request_error')

/** The gateway's refusals in OpenAI's words (its codes are snake case; 401 and 404 are the ones SDKs know). */
const OPENAI_CODES: Record<GatewayErrorCode, string> = {
  UNAUTHORIZED: 'invalid_api_key',
  FORBIDDEN: 'permission_denied',
  NOT_FOUND: 'model_not_found',
  VALIDATION: 'invalid_request',
  PAYLOAD_TOO_LARGE: 'request_too_large',
  NO_READY_REPLICA: 'no_ready_replica',
  BAD_GATEWAY: 'bad_gateway',
  GATEWAY_TIMEOUT: 'gateway_timeout',
  UNAVAILABLE: 'unavailable'
}

/** The OpenAI rendering of a gateway refusal (401/403/404/503/502/504...). */
export function fromGatewayError(err: GatewayError): OpenAIError {
  return new OpenAIError(
    err.status,
    OPENAI_CODES[err.code],
    err.message,
    err.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: err.retryAfterSeconds }
  )
}

function sendError(res: ServerResponse, err: OpenAIError): void {
  const body: OpenAIErrorBody = {
    error: { message: err.message, type: typeFor(err.status), param: err.extra.param ?? null, code: err.code }
  }
  const text = JSON.stringify(body)
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text)
  }
  if (err.extra.retryAfterSeconds !== undefined) headers['retry-after'] = err.extra.retryAfterSeconds
  if (err.extra.allow !== undefined) headers.allow = err.extra.allow
  res.writeHead(err.status, headers)
  res.end(text)
}

function sendJson(res: ServerResponse, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/** What an unknown, revoked or missing key gets (OpenAI's code for it; the SDK raises AuthenticationError). */
const unauthorized = (message: string) => new OpenAIError(401, 'invalid_api_key', message)
const NO_KEY = 'no API key: send "Authorization: Bearer <gpumesh token>"'

/**
 * The request body, whole, or a 413 once it passes `max` bytes. The rest is
 * read and dropped (not kept), so that the client, still sending, reads the
 * answer and its connection can serve the next request.
 */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => {
      req.off('data', onData)
      req.resume()
      reject(new OpenAIError(413, 'request_too_large', `the request body is larger than ${max} bytes`))
    }
    const chunks: Buffer[] = []
    let bytes = 0
    const onData = (chunk: Buffer) => {
      bytes += chunk.length
      if (bytes > max) tooLarge()
      else chunks.push(chunk)
    }
    if (Number(req.headers['content-length'] ?? 0) > max) return tooLarge()
    req.on('data', onData)
    req.on('end', () => resolve(Buffer.concat(chunks, bytes)))
    req.on('error', reject)
    req.on('close', () => {
      if (!req.complete) reject(new Error('the client went away while sending the body'))
    })
  })
}

/** The body's `model`, or why the body cannot be routed. */
function modelOf(body: Buffer): { model: string } | { error: OpenAIError } {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return { error: new OpenAIError(400, 'invalid_json', 'the request body is not valid JSON') }
  }
  const model = (parsed as { model?: unknown } | null)?.model
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    return { error: new OpenAIError(400, 'invalid_body', 'the request body must be a JSON object') }
  if (typeof model !== 'string' || model === '')
    return {
      error: new OpenAIError(400, 'missing_model', 'you must provide a model parameter (an endpoint name)', {
        param: 'model'
      })
    }
  return { model }
}

const listEntry = (m: OpenAIModel) => ({
  id: m.name,
  object: 'model',
  created: Math.floor(m.createdAt.getTime() / 1000),
  owned_by: 'gpumesh'
})

/** GET /openai/v1/models[/<model>]: the opted-in endpoints this key may invoke. */
async function models(req: IncomingMessage, res: ServerResponse, deps: GatewayDeps, one: string | null) {
  const token = bearerToken(req)
  if (token === null) throw unauthorized(NO_KEY)
  const principal = await authenticate(deps.pool, token)
  if (principal === null) throw unauthorized('Incorrect API key: unknown or revoked token')
  const mine = deps.replicas.openaiModels().filter((m) => mayCall(principal, m.name, deps.replicas.teamOf(m.name)))
  if (one === null) return sendJson(res, { object: 'list', data: mine.map(listEntry) })
  const m = mine.find((x) => x.name === one)
  if (m === undefined) throw notFound(one)
  sendJson(res, listEntry(m))
}

const notFound = (model: string) =>
  new OpenAIError(
    404,
    'model_not_found',
    `The model \`${model}\` does not exist: no endpoint of that name serves the OpenAI API (serve.openai)`,
    { param: 'model' }
  )

/**
 * POST /openai/v1/{chat/completions,completions,embeddings}. Refusals, in
 * this order: the key (401), the body (413, 400), the key's right to call the
 * model (403: an invoke key learns nothing of endpoints it may not call), the
 * model (404). The key is checked once, in PostgreSQL, after the body named
 * the model; which endpoints opted in is known in memory (replicas.ts).
 */
async function forwarded(
  req: IncomingMessage,
  res: ServerResponse,
  deps: GatewayDeps,
  path: string,
  query: string,
  counted: { endpoint: string }
) {
  if (bearerToken(req) === null) throw unauthorized(NO_KEY)
  const body = await readBody(req, OPENAI_MAX_BODY_BYTES)
  const routed = modelOf(body)
  const refused = await authorize(deps, req, 'model' in routed ? routed.model : '').then(
    () => null,
    (err: unknown) => err
  )
  if (refused instanceof GatewayError && refused.code === 'UNAUTHORIZED') throw refused
  if ('error' in routed) throw routed.error
  if (refused !== null) throw refused
  if (deps.replicas.openaiModel(routed.model) === undefined) throw notFound(routed.model)
  counted.endpoint = routed.model
  // The body was read to route it: it is sent on as read, so its length is known.
  const { 'transfer-encoding': _, ...headers } = req.headers
  const call: ForwardCall = {
    endpoint: routed.model,
    method: 'POST',
    path: path + query,
    headers: { ...headers, 'content-length': String(body.length) },
    body: Readable.from(body),
    clientAddress: req.socket.remoteAddress ?? '',
    secure: deps.secure
  }
  await deps.gateway.forward(call, res)
}

/** Every request whose path starts with /openai/ (the gateway's listener sends them here). */
export async function handleOpenAI(req: IncomingMessage, res: ServerResponse, deps: GatewayDeps): Promise<void> {
  const url = req.url ?? '/'
  // Metrics as on /<endpoint>/ routes, under the model once it is known to be an endpoint.
  const counted = { endpoint: '' }
  countCall(deps, res, () => counted.endpoint)
  const q = url.indexOf('?')
  const path = (q === -1 ? url : url.slice(0, q)).slice(OPENAI_PREFIX.length)
  const query = q === -1 ? '' : url.slice(q)
  const method = req.method ?? 'GET'
  try {
    const model = /^\/v1\/models(?:\/([^/]+))?$/.exec(path)
    if (model !== null) {
      if (method !== 'GET') throw methodNotAllowed(method, url, 'GET')
      return await models(req, res, deps, model[1] === undefined ? null : decoded(model[1]))
    }
    if (FORWARDED.has(path)) {
      if (method !== 'POST') throw methodNotAllowed(method, url, 'POST')
      return await forwarded(req, res, deps, path, query, counted)
    }
    throw new OpenAIError(404, 'unknown_url', `Unknown request URL: ${method} ${url}`)
  } catch (err) {
    if (res.headersSent) {
      // forward() ends what it started; anything else mid-response can only cut it.
      if (!res.writableEnded) res.destroy()
      return
    }
    if (err instanceof OpenAIError) return sendError(res, err)
    if (err instanceof GatewayError) return sendError(res, fromGatewayError(err))
    if (req.destroyed) return
    deps.log.error({ err: (err as Error).message, method, path }, 'openai front: request failed')
    sendError(res, new OpenAIError(500, 'internal_error', 'the gateway failed to handle the request'))
  }
}

/** A path segment percent-decoded; a malformed one stays as sent (it names no model). */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

const methodNotAllowed = (method: string, url: string, allow: string) =>
  new OpenAIError(405, 'method_not_allowed', `${method} is not allowed on ${url}; use ${allow}`, { allow })
