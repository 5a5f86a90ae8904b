// The API's error catalog: every problem+json response carries one of these
// codes (RFC 9457 "code" extension). Codes are stable; titles may improve.
// Each is documented in docs/api.md "Errors"; a test keeps the two in step.
export const ERRORS = {
  UNAUTHORIZED: { status: 401, title: 'Missing, unknown or revoked bearer token' },
  FORBIDDEN: { status: 403, title: "This token's role may not do this" },
  NOT_FOUND: { status: 404, title: 'No such resource' },
  VALIDATION: { status: 400, title: 'The request does not match the schema' },
  BAD_BODY: { status: 400, title: 'The body is not valid UTF-8 JSON' },
  INVALID_CURSOR: { status: 400, title: 'The pagination cursor is not one this API issued' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'The body is larger than the limit' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Send application/json' },
  URI_TOO_LONG: { status: 414, title: 'A path segment is longer than the limit' },
  NAME_TAKEN: { status: 409, title: 'A live workload (or a team) already has this name' },
  UNKNOWN_POOL: { status: 422, title: 'No such pool' },
  UNKNOWN_TEAM: { status: 422, title: 'No such team' },
  POOL_KIND: { status: 422, title: "The pool's kind does not run this workload kind" },
  NOT_ENOUGH_GPUS: { status: 422, title: 'More GPUs per host than any host of the pool has' },
  NOT_AN_ENDPOINT: { status: 409, title: 'Only endpoints scale and roll' },
  NOT_ATTACHABLE: { status: 409, title: 'The workload has no running session to attach to' },
  GPU_HEALTHY: { status: 409, title: 'The GPU is healthy: there is nothing to clear' },
  INSECURE_TRANSPORT: { status: 403, title: 'Attach needs TLS (wss) from a non-loopback address' },
  HOST_UNREACHABLE: { status: 503, title: 'The host is not connected to this coordinator' },
  UNAVAILABLE: { status: 503, title: 'A dependency is unavailable' },
  NO_READY_REPLICA: { status: 503, title: 'The endpoint has no ready replica now' },
  BAD_GATEWAY: { status: 502, title: 'The replica failed during the call' },
  GATEWAY_TIMEOUT: { status: 504, title: 'The replica sent nothing for too long' },
  INTERNAL: { status: 500, title: 'Internal error' }
} as const

export type ErrorCode = keyof typeof ERRORS

export const PROBLEM_TYPE_PREFIX = 'urn:gpumesh:problem:'
