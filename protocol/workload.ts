// Workload specs: what `POST /v1/workloads` accepts (docs/design.md "Contracts").
// `gpus` is per replica (endpoint) or per host (recipe).
import { Type, type Static } from '@sinclair/typebox'

export const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
export const POOL_KEY_PATTERN = '^[a-z0-9][a-z0-9.-]{0,127}$'
/** An operator's pool label (GPUMESH_POOL_LABEL): with the derived part of a key (at most ~32 characters) it fits in 128. */
export const MAX_POOL_LABEL_LENGTH = 63
/** More GPUs than any single host has is rejected by the API against live capacity; this is the shape bound. */
export const MAX_GPUS_PER_HOST = 72

const Name = Type.String({
  pattern: NAME_PATTERN,
  description: 'lower-case letters, digits and "-", at most 63 characters'
})
const PoolKey = Type.String({ pattern: POOL_KEY_PATTERN })
const Gpus = Type.Integer({ minimum: 1, maximum: MAX_GPUS_PER_HOST })

export const Run = Type.Object(
  {
    driver: Type.Union([Type.Literal('process'), Type.Literal('docker')]),
    command: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 256 }),
    env: Type.Optional(
      Type.Record(
        Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 256 }),
        Type.String({ maxLength: 32768 }),
        // Names that are not variable names are refused, not passed on (the pattern alone would let them through).
        { maxProperties: 256, additionalProperties: false }
      )
    ),
    /** Container image, for the docker driver. */
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 512 }))
  },
  { additionalProperties: false }
)

/** How the agent learns that a replica serves: GET http://127.0.0.1:$PORT<path> answers 2xx. */
export const Readiness = Type.Object(
  {
    path: Type.String({
      pattern: '^/[\\x21-\\x7e]*$',
      maxLength: 1024,
      description: 'HTTP path probed on the replica'
    }),
    periodSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 300, description: 'default 2' })),
    timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 60, description: 'default 1' })),
    failureThreshold: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100, description: 'failures in a row that make it unready; default 3' })
    ),
    initialDelaySeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'default 0' }))
  },
  { additionalProperties: false }
)

/** An endpoint that serves HTTP on $PORT (docs/design.md "Serving endpoints"). */
export const Serve = Type.Object(
  {
    readiness: Type.Optional(Readiness),
    /** A replica not ready this long after it started (or unready this long after it was) is restarted. */
    startupSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86400, description: 'default 600' })),
    /** docker driver: the container port published on $PORT (default: $PORT itself). */
    containerPort: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Reachable through the gateway's OpenAI-compatible front under its name as `model`. */
    openai: Type.Optional(Type.Boolean())
  },
  { additionalProperties: false }
)

/** What an omitted readiness or startup setting means (the agent probes with these). */
export const READINESS_DEFAULTS = {
  periodSeconds: 2,
  timeoutSeconds: 1,
  failureThreshold: 3,
  initialDelaySeconds: 0
} as const satisfies Required<Omit<Readiness, 'path'>>
export const DEFAULT_STARTUP_SECONDS = 600

export const EndpointSpec = Type.Object(
  {
    name: Name,
    kind: Type.Literal('endpoint'),
    replicas: Type.Integer({ minimum: 1, maximum: 1024 }),
    gpus: Gpus,
    /** Pools the replicas may use (inference or static pools), in order of preference. */
    pools: Type.Array(PoolKey, { minItems: 1, maxItems: 32, uniqueItems: true }),
    run: Run,
    serve: Type.Optional(Serve)
  },
  { additionalProperties: false }
)

export const RecipeSpec = Type.Object(
  {
    name: Name,
    kind: Type.Literal('recipe'),
    pool: PoolKey,
    /** Hosts of the gang: all are placed together or none is. */
    hosts: Type.Integer({ minimum: 1, maximum: 1024 }),
    gpus: Gpus,
    restart: Type.Optional(
      Type.Union([Type.Literal('never'), Type.Literal('on-failure')], { description: 'default never' })
    ),
    run: Run
  },
  { additionalProperties: false }
)

export const SessionSpec = Type.Object(
  {
    name: Name,
    kind: Type.Literal('session'),
    pool: PoolKey,
    gpus: Gpus,
    /** The session ends after this long without terminal input or output (default: never). */
    idleTimeoutSeconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 7 * 86400,
        description: 'end the session after this long without terminal input or output'
      })
    ),
    /** The session ends this long after it started, attached or not (default: never). */
    maxDurationSeconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 30 * 86400, description: 'end the session this long after it started' })
    ),
    run: Run
  },
  { additionalProperties: false }
)

export const WorkloadSpec = Type.Union([EndpointSpec, RecipeSpec, SessionSpec])

export type Run = Static<typeof Run>
export type Readiness = Static<typeof Readiness>
export type Serve = Static<typeof Serve>
export type EndpointSpec = Static<typeof EndpointSpec>
export type RecipeSpec = Static<typeof RecipeSpec>
export type SessionSpec = Static<typeof SessionSpec>
export type WorkloadSpec = Static<typeof WorkloadSpec>
export type WorkloadKind = WorkloadSpec['kind']
