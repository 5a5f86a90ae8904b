// Every error leaves as application/problem+json (RFC 9457) with a stable
// code from protocol/errors.ts; nothing internal leaks into the detail.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERRORS, PROBLEM_TYPE_PREFIX, type ErrorCode } from '../../protocol/errors.js'
import type { Problem } from '../../protocol/api.js'
import { StoreError, type StoreErrorCode } from '../store/errors.js'

/** The longest path parameter routed: more than any pool key (128) or id can be. */
export const MAX_PARAM_LENGTH = 256

/** An error that becomes a problem+json response with this code. */
export class ApiError extends Error {
  readonly status: number
  constructor(
    readonly code: ErrorCode,
    detail?: string
  ) {
    super(detail ?? ERRORS[code].title)
    this.name = 'ApiError'
    this.status = ERRORS[code].status
  }
}

/** What each store refusal is to a client; the store's sentence becomes the detail. */
const STORE_CODES: Record<StoreErrorCode, ErrorCode> = {
  'not-found': 'NOT_FOUND',
  'invalid-cursor': 'INVALID_CURSOR',
  'name-taken': 'NAME_TAKEN',
  'unknown-pool': 'UNKNOWN_POOL',
  'pool-kind': 'POOL_KIND',
  'not-enough-gpus': 'NOT_ENOUGH_GPUS',
  'not-an-endpoint': 'NOT_AN_ENDPOINT',
  'unknown-team': 'UNKNOWN_TEAM'
}

export function problem(code: ErrorCode, detail: string | undefined, instance: string): Problem {
  const { status, title } = ERRORS[code]
  return {
    type: PROBLEM_TYPE_PREFIX + code.toLowerCase().replace(/_/g, '-'),
    title,
    status,
    code,
    instance,
    ...(detail === undefined ? {} : { detail })
  }
}

export function sendProblem(reply: FastifyReply, code: ErrorCode, detail?: string): FastifyReply {
  const body = problem(code, detail, reply.request.url)
  return reply.code(body.status).type('application/problem+json').send(body)
}

/** Fastify's own error codes, by what they mean to a client. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_BODY',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_BODY',
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_BODY'
}

/** Errors from pg / the network that mean "the database is not there right now". */
const UNAVAILABLE = /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|57P01|57P03|08\d\d\d)$/
/**
 * PostgreSQL refusing a character (22021 character_not_in_repertoire, 22P05
 * untranslatable_character): the request's, so a 400. Validation refuses
 * these first (protocol/text.ts); this is the backstop for a string it missed.
 */
const UNSTORABLE_TEXT = /^(22021|22P05)$/

type SchemaError = { instancePath: string; keyword: string; message?: string; params: Record<string, unknown> }

/** A value outside a union of constants fails once per constant and once more for the anyOf: one error that lists the values instead. */
function oneOfConstants(errors: SchemaError[]): SchemaError[] {
  let out: SchemaError[] = []
  for (const e of errors) {
    const constants =
      e.keyword === 'anyOf' ? out.filter((x) => x.keyword === 'const' && x.instancePath === e.instancePath) : []
    if (constants.length === 0) out.push(e)
    else
      out = [
        ...out.filter((x) => !constants.includes(x)),
        { ...e, message: `must be one of ${constants.map((x) => String(x.params.allowedValue)).join(', ')}` }
      ]
  }
  return out
}

/** One schema error for people: where, what, and the property that is not allowed. */
function describe(v: SchemaError): string {
  const extra = typeof v.params.additionalProperty === 'string' ? `: ${v.params.additionalProperty}` : ''
  return `${v.instancePath === '' ? '/' : v.instancePath} ${v.message ?? 'is invalid'}${extra}`
}

/** Errors Fastify raises before a route is found (frameworkErrors): a path segment that is not UTF-8 or too long. */
export function frameworkError(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH')
    void sendProblem(reply, 'URI_TOO_LONG', `a path segment is longer than ${MAX_PARAM_LENGTH} characters`)
  else if (err.code === 'FST_ERR_BAD_URL') void sendProblem(reply, 'VALIDATION', err.message)
  else void sendProblem(reply, 'INTERNAL')
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => {
    void sendProblem(reply, 'NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0] ?? ''}`)
  })
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof ApiError) return sendProblem(reply, err.code, err.message)
    if (err instanceof StoreError) return sendProblem(reply, STORE_CODES[err.code], err.message)
    if (err.validation !== undefined)
      return sendProblem(
        reply,
        'VALIDATION',
        `${err.validationContext ?? 'request'}: ${oneOfConstants(err.validation).map(describe).join('; ')}`
      )
    const mapped = err.code === undefined ? undefined : FASTIFY_CODES[err.code]
    if (mapped !== undefined) return sendProblem(reply, mapped, mapped === 'BAD_BODY' ? err.message : undefined)
    if (err.code !== undefined && UNSTORABLE_TEXT.test(err.code)) {
      req.log.warn({ code: err.code }, 'the database refused a character of the request')
      return sendProblem(
        reply,
        'VALIDATION',
        'a string contains a character that cannot be stored (NUL or a lone surrogate)'
      )
    }
    if (err.code !== undefined && UNAVAILABLE.test(err.code)) {
      req.log.warn({ code: err.code }, 'database unavailable')
      return sendProblem(reply, 'UNAVAILABLE', 'the database is unavailable; retry shortly')
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500)
      return sendProblem(reply, 'VALIDATION', err.message)
    req.log.error({ err }, 'request failed')
    return sendProblem(reply, 'INTERNAL')
  })
}
