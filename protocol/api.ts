// Admin HTTP API resources (docs/design.md "Contracts"): request bodies, responses,
// problem+json. The same schemas validate requests, serialise responses and
// generate /openapi.json.
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { HostFacts } from './host-facts.js'
import { Literals, Nullable } from './schema.js'
import { GpuHealth, GpuLiveUsage } from './telemetry.js'
import { NAME_PATTERN, POOL_KEY_PATTERN, Run, Serve, WorkloadSpec } from './workload.js'

const Timestamp = Type.String({ format: 'date-time' })
/** A join token serves at most this many enrollments (a fleet rollout). */
export const MAX_JOIN_TOKEN_USES = 100_000
const Uuid = Type.String({ format: 'uuid' })

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.Optional(Type.String()),
    instance: Type.Optional(Type.String()),
    code: Type.String()
  },
  { $id: 'Problem' }
)

export const HostState = Literals('ready', 'suspect', 'down', 'draining', 'cordoned', 'quarantined')
export const PoolKind = Literals('static', 'inference', 'training')
export const PlacementState = Literals(
  'assigned',
  'starting',
  'running',
  'stopping',
  'exited',
  'failed',
  'stopped',
  'lost'
)
export const WorkloadState = Literals('pending', 'placed', 'completed', 'failed', 'deleted')
/** `invoke` tokens call the endpoints they name through the gateway and nothing else. */
export const Role = Literals('admin', 'operator', 'viewer', 'invoke')

/** One GPU of a host: what its facts say, its health as stored, and its live usage. */
export const HostGpu = Type.Object({
  index: Type.Integer({ minimum: 0 }),
  /** As nvidia-smi names it (facts). */
  model: Nullable(Type.String()),
  uuid: Nullable(Type.String()),
  pciBusId: Nullable(Type.String()),
  /** As its agent last reported it (docs/health.md); null until it has (no agent yet, or an agent that does not report health). */
  health: Nullable(GpuHealth),
  /** Live usage as the agent's last heartbeat to this coordinator gave it; null when this coordinator has none. */
  usage: Nullable(GpuLiveUsage)
})

export const Host = Type.Object({
  id: Uuid,
  name: Type.String(),
  peerId: Type.String(),
  pool: Type.String(),
  state: HostState,
  stateReason: Nullable(Type.String()),
  gpuCount: Type.Integer(),
  freeGpus: Type.Array(Type.Integer()),
  agentVersion: Nullable(Type.String()),
  registeredAt: Timestamp,
  lastSeenAt: Timestamp,
  /** What its agent reported and is still true (disk-full: it cannot write its state directory). */
  conditions: Type.Array(Type.Object({ type: Type.String(), detail: Type.String(), since: Timestamp })),
  /** Every GPU with its health and usage; failed GPUs are never in `freeGpus` (the scheduler does not place on them). */
  gpus: Type.Array(HostGpu),
  facts: HostFacts
})

export const PoolHost = Type.Object({
  id: Uuid,
  name: Type.String(),
  state: HostState,
  gpuCount: Type.Integer(),
  freeGpus: Type.Array(Type.Integer())
})

export const Pool = Type.Object({
  key: Type.String(),
  kind: PoolKind,
  labels: Type.Record(Type.String(), Type.String()),
  hostCount: Type.Integer(),
  /** Schedulable hosts (ready). */
  readyHosts: Type.Integer(),
  gpus: Type.Object({ total: Type.Integer(), free: Type.Integer() }),
  /** The largest free GPU block on one ready host. */
  largestFreeBlock: Type.Integer(),
  hosts: Type.Optional(Type.Array(PoolHost))
})

export const PoolPatch = Type.Object(
  {
    kind: Type.Optional(PoolKind),
    labels: Type.Optional(
      Type.Record(Type.String({ maxLength: 63 }), Type.String({ maxLength: 256 }), { maxProperties: 64 })
    )
  },
  { additionalProperties: false, minProperties: 1 }
)

export const Placement = Type.Object({
  id: Uuid,
  workloadId: Uuid,
  hostId: Uuid,
  hostName: Type.String(),
  replica: Type.Integer(),
  gpus: Type.Array(Type.Integer()),
  state: PlacementState,
  exitCode: Nullable(Type.Integer()),
  reason: Nullable(Type.String()),
  /** Endpoint replicas: the host port the replica serves on; null for recipes and sessions. */
  port: Nullable(Type.Integer()),
  /** Endpoint replicas: the readiness probe passes (without `serve.readiness`: the process runs). */
  ready: Type.Boolean(),
  /** The workload's spec generation this placement runs (a rolling update raises it). */
  generation: Type.Integer(),
  createdAt: Timestamp,
  updatedAt: Timestamp
})

/** What a viewer token reads in place of each `run.env` value. */
export const REDACTED = '<redacted>'

/** An endpoint's last rolling update (docs/serving.md "Scaling and rolling updates"). */
export const Rollout = Type.Object({
  /** The spec generation it rolls to. */
  generation: Type.Integer(),
  state: Literals('rolling', 'completed', 'stopped'),
  /** Ready replicas when it started: it never lets fewer be ready (at most `replicas`). */
  readyBefore: Type.Integer(),
  /** Why it stopped; null while rolling and once completed. */
  reason: Nullable(Type.String()),
  startedAt: Timestamp,
  updatedAt: Timestamp
})

/** PATCH /v1/workloads/:id (endpoints): `replicas` scales; `run` and/or `serve` roll to a new generation. */
export const WorkloadPatch = Type.Object(
  {
    replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
    run: Type.Optional(Run),
    serve: Type.Optional(Serve)
  },
  { additionalProperties: false, minProperties: 1 }
)

export const Workload = Type.Object({
  id: Uuid,
  name: Type.String(),
  kind: Literals('endpoint', 'recipe', 'session'),
  state: WorkloadState,
  /** Why it is (partly) not placed; null once placed. */
  reason: Nullable(Type.String()),
  spec: WorkloadSpec,
  /** The generation of `spec`: a rolling update raises it; each placement runs the generation it started with. */
  generation: Type.Integer(),
  placements: Type.Array(Placement),
  /** Endpoints: the last rolling update; null when there was none. */
  rollout: Nullable(Rollout),
  /** The team that owns it (the team of the token that created it); null: the cluster's. */
  team: Nullable(Type.String()),
  createdAt: Timestamp,
  updatedAt: Timestamp
})

export const Event = Type.Object({
  id: Type.Integer(),
  type: Type.String(),
  subject: Type.Object({ kind: Type.String(), id: Type.String() }),
  data: Type.Record(Type.String(), Type.Unknown()),
  at: Timestamp
})

export const HostAction = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 512 })) },
  { additionalProperties: false }
)

/** Most endpoints one invoke token may name. */
export const MAX_TOKEN_ENDPOINTS = 64

export const TokenCreate = Type.Object(
  {
    role: Role,
    name: Type.String({ minLength: 1, maxLength: 128 }),
    endpoints: Type.Optional(
      Type.Array(Type.String({ pattern: NAME_PATTERN }), {
        minItems: 1,
        maxItems: MAX_TOKEN_ENDPOINTS,
        uniqueItems: true,
        description: 'role invoke only (and required there): the endpoints (workload names) the token may call'
      })
    ),
    team: Type.Optional(
      Type.String({
        pattern: NAME_PATTERN,
        description:
          'operator and viewer tokens: the team whose workloads alone the token sees and changes (absent: the whole cluster)'
      })
    )
  },
  { additionalProperties: false }
)

/** invoke tokens: the endpoints they may call; null for the other roles. */
const TokenEndpoints = Nullable(Type.Array(Type.String()))

/** A team token's team; null for the cluster's tokens. */
const TokenTeam = Nullable(Type.String())

export const Token = Type.Object({
  id: Uuid,
  name: Type.String(),
  role: Role,
  endpoints: TokenEndpoints,
  team: TokenTeam,
  token: Type.String()
})

/** A token as listed: never its secret nor its hash. */
export const TokenInfo = Type.Object({
  id: Uuid,
  name: Type.String(),
  role: Role,
  endpoints: TokenEndpoints,
  team: TokenTeam,
  createdAt: Timestamp,
  /** To the minute: the API records a use at most once a minute per token. */
  lastUsedAt: Nullable(Timestamp),
  revokedAt: Nullable(Timestamp)
})

export const TeamCreate = Type.Object(
  { name: Type.String({ pattern: NAME_PATTERN, maxLength: 63 }) },
  { additionalProperties: false }
)

export const Team = Type.Object({ id: Uuid, name: Type.String(), createdAt: Timestamp })

export const JoinTokenCreate = Type.Object(
  {
    pool: Type.Optional(Type.String({ pattern: POOL_KEY_PATTERN })),
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86400, description: 'default 86400' })),
    uses: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_JOIN_TOKEN_USES,
        description: 'how many hosts may enroll with it; default 1'
      })
    )
  },
  { additionalProperties: false }
)

export const JoinToken = Type.Object({
  id: Uuid,
  token: Type.String(),
  expiresAt: Timestamp,
  pool: Nullable(Type.String()),
  uses: Type.Integer()
})

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'default 100' })),
    cursor: Type.Optional(Type.String({ maxLength: 512 }))
  },
  { additionalProperties: false }
)

export const Page = <T extends TSchema>(item: T) =>
  Type.Object({ items: Type.Array(item), nextCursor: Nullable(Type.String()) })

export const IdParams = Type.Object({ id: Uuid })
export const KeyParams = Type.Object({ key: Type.String({ pattern: POOL_KEY_PATTERN }) })

export type Problem = Static<typeof Problem>
export type HostState = Static<typeof HostState>
export type PoolKind = Static<typeof PoolKind>
export type Role = Static<typeof Role>
export type Host = Static<typeof Host>
export type HostGpu = Static<typeof HostGpu>
export type Pool = Static<typeof Pool>
export type PoolPatch = Static<typeof PoolPatch>
export type Placement = Static<typeof Placement>
export type PlacementState = Static<typeof PlacementState>
export type Workload = Static<typeof Workload>
export type WorkloadPatch = Static<typeof WorkloadPatch>
export type Rollout = Static<typeof Rollout>
export type WorkloadState = Static<typeof WorkloadState>
export type Event = Static<typeof Event>
export type Token = Static<typeof Token>
export type TokenCreate = Static<typeof TokenCreate>
export type TokenInfo = Static<typeof TokenInfo>
export type JoinToken = Static<typeof JoinToken>
export type Team = Static<typeof Team>
export type TeamCreate = Static<typeof TeamCreate>
