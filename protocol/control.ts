// The mesh's wire contract: libp2p protocol ids, gossip topics, and the
// frames of the control session (agent <-> coordinator). Frames are JSON,
// length-prefixed, validated against these schemas on receipt; anything else
// gets an `error` frame and the stream is closed.
import { Type, type Static } from '@sinclair/typebox'
import { HostFacts } from './host-facts.js'
import { Literals, Nullable } from './schema.js'
import { SessionSettings } from './session.js'
import { GpuHealth, TelemetryDelta } from './telemetry.js'
import { Run, Serve } from './workload.js'

export const CONTROL_PROTOCOL = '/gpumesh/control/1'
export const CONTROL_VERSION = 1
/** Largest frame either side accepts (facts of a 72-GPU rack fit well under it). */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024

export const ACK_AFTER_MS = 2000
/**
 * Host ports endpoint replicas serve on, one per live replica of a host (as Nomad's dynamic ports):
 * above the gang rendezvous ports (20000-29999) and below Linux's ephemeral range (32768+).
 */
export const SERVE_PORTS = { first: 30000, last: 32767 } as const
/**
 * Ended placements kept per replica, by the coordinator (rows) and the agent
 * (folders with their logs) alike: a crash loop must not grow either without bound.
 */
export const KEEP_ENDED_PLACEMENTS = 3
export function agentSilenceMs(heartbeatMs: number): number {
  return Math.max(3 * ACK_AFTER_MS, 5 * heartbeatMs)
}

export const CLUSTER_TOPIC = 'gpumesh/cluster/1'
export const poolTopic = (pool: string) => `gpumesh/pool/${pool}/1`

/** What a placement's process is doing, as the agent reports it. */
export const RunState = Literals('starting', 'running', 'exited', 'failed', 'stopped', 'lost')

/** Everything an agent needs to run one placement. */
export const Assignment = Type.Object(
  {
    placementId: Type.String({ format: 'uuid' }),
    workloadId: Type.String({ format: 'uuid' }),
    workloadName: Type.String(),
    replica: Type.Integer({ minimum: 0 }),
    gpus: Type.Array(Type.Integer({ minimum: 0 })),
    run: Run,
    /** Extra environment from the coordinator: GPUMESH_RANK, GPUMESH_WORLD_SIZE, MASTER_ADDR, MASTER_PORT for gangs. */
    env: Type.Record(Type.String(), Type.String()),
    /** Set for session workloads only: run the command in a pseudo-terminal that `gpumesh attach` reaches. */
    session: Type.Optional(SessionSettings),
    /** Endpoint replicas: the host port the process serves on (env PORT), chosen by the coordinator from SERVE_PORTS. */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Endpoint replicas: how readiness is probed on `port` (absent: a running process is ready). */
    serve: Type.Optional(Serve)
  },
  { additionalProperties: false }
)

export const RunningPlacement = Type.Object(
  {
    placementId: Type.String({ format: 'uuid' }),
    state: RunState,
    exitCode: Nullable(Type.Integer()),
    reason: Nullable(Type.String()),
    /** Endpoint replicas: whether the readiness probe passes (absent: not an endpoint, or not known yet). */
    ready: Type.Optional(Type.Boolean())
  },
  { additionalProperties: false }
)

export const GpuUsage = Type.Object(
  {
    index: Type.Integer({ minimum: 0 }),
    utilizationPct: Nullable(Type.Number({ minimum: 0, maximum: 100 })),
    memoryUsedMiB: Nullable(Type.Integer({ minimum: 0 }))
  },
  { additionalProperties: false }
)

// Agent -> coordinator
export const Hello = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('hello'),
    name: Type.String({ minLength: 1, maxLength: 253 }),
    agentVersion: Type.String(),
    /** Required the first time (enrollment); the peer id is the credential after that. */
    joinToken: Type.Optional(Type.String({ maxLength: 256 })),
    facts: HostFacts,
    /** What the agent runs now (after a restart: what it re-adopted). */
    running: Type.Array(RunningPlacement),
    /** Highest coordinator epoch this agent has obeyed; a coordinator behind it is refused. */
    epoch: Type.Integer({ minimum: 0 }),
    /** The first hello of a new agent process on an enrolled host: `running` is what it re-adopted. */
    restarted: Type.Optional(Type.Boolean())
  },
  { additionalProperties: false }
)

export const Heartbeat = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('heartbeat'),
    seq: Type.Integer({ minimum: 0 }),
    gpus: Type.Array(GpuUsage),
    /** What changed in the GPUs' health and usage since the last heartbeat of this session (the first: all). */
    telemetry: Type.Optional(TelemetryDelta)
  },
  { additionalProperties: false }
)

export const Status = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('status'),
    placement: RunningPlacement
  },
  { additionalProperties: false }
)

export const FactsUpdate = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('facts'),
    facts: HostFacts
  },
  { additionalProperties: false }
)

export const ProbeResult = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('probe-result'),
    requestId: Type.String({ maxLength: 64 }),
    target: Type.String({ maxLength: 128 }),
    reachable: Type.Boolean(),
    rttMs: Nullable(Type.Number({ minimum: 0 }))
  },
  { additionalProperties: false }
)

/**
 * A planned stop (SIGTERM: an upgrade, `systemctl restart`): the placements keep running and the
 * coordinator waits for the agent's return instead of declaring the host down.
 */
export const Goodbye = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('goodbye'),
    reason: Type.String({ maxLength: 256 })
  },
  { additionalProperties: false }
)

/** Host conditions an agent reports: it cannot write its state directory (disk-full: ENOSPC or EDQUOT). */
export const HostConditionType = Type.Union([Type.Literal('disk-full'), Type.Literal('state-unwritable')])

/** A host condition begins (active) or ends; the session goes on either way. */
export const Condition = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('condition'),
    condition: HostConditionType,
    active: Type.Boolean(),
    detail: Type.String({ maxLength: 1024 })
  },
  { additionalProperties: false }
)

/** The agent's answer to a clear-health: the GPU's health after the clear, or why it could not. */
export const ClearHealthResult = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('clear-health-result'),
    requestId: Type.String({ maxLength: 64 }),
    health: Nullable(GpuHealth),
    /** ERR_GPU_UNKNOWN: the host has no such GPU; anything else: the clear failed there. */
    error: Nullable(Type.Object({ code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 1024 }) }))
  },
  { additionalProperties: false }
)

export const AgentFrame = Type.Union([
  Hello,
  Heartbeat,
  Status,
  FactsUpdate,
  ProbeResult,
  Goodbye,
  Condition,
  ClearHealthResult
])

// Coordinator -> agent
export const Welcome = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('welcome'),
    hostId: Type.String({ format: 'uuid' }),
    /** Raised at every registration; the agent ignores frames from lower epochs. */
    epoch: Type.Integer({ minimum: 1 }),
    heartbeatMs: Type.Integer({ minimum: 100 }),
    /** The authoritative list: anything else the agent runs is stopped (fencing). */
    placements: Type.Array(Assignment)
  },
  { additionalProperties: false }
)

export const Assign = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('assign'),
    epoch: Type.Integer({ minimum: 1 }),
    placement: Assignment
  },
  { additionalProperties: false }
)

export const Stop = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('stop'),
    epoch: Type.Integer({ minimum: 1 }),
    placementId: Type.String({ format: 'uuid' }),
    reason: Type.String()
  },
  { additionalProperties: false }
)

export const Drain = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('drain'),
    epoch: Type.Integer({ minimum: 1 }),
    reason: Type.String()
  },
  { additionalProperties: false }
)

export const Probe = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('probe'),
    requestId: Type.String({ maxLength: 64 }),
    /** Peer id to reach, and where it was last seen. */
    target: Type.String({ maxLength: 128 }),
    multiaddrs: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 16 }),
    timeoutMs: Type.Integer({ minimum: 100, maximum: 30_000 })
  },
  { additionalProperties: false }
)

/** An admin cleared a GPU's health (POST /v1/hosts/:id/gpus/:index/clear-health); the agent answers with a ClearHealthResult. */
export const ClearHealth = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('clear-health'),
    epoch: Type.Integer({ minimum: 1 }),
    requestId: Type.String({ maxLength: 64 }),
    gpu: Type.Integer({ minimum: 0 })
  },
  { additionalProperties: false }
)

/**
 * The agent's evidence that the coordinator still hears it. Sent in answer to a heartbeat when
 * the coordinator has sent that agent nothing for ACK_AFTER_MS (every frame costs both sides
 * an encrypted write and a yamux window update); an agent that hears nothing for
 * agentSilenceMs() drops the connection and dials again.
 */
export const HeartbeatAck = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('heartbeat-ack'),
    seq: Type.Integer({ minimum: 0 })
  },
  { additionalProperties: false }
)

/** Ends the session. `ERR_REVOKED` (the host was revoked) also ends the agent: it stops its placements and exits 78. */
export const ErrorFrame = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    type: Type.Literal('error'),
    code: Type.String(),
    message: Type.String()
  },
  { additionalProperties: false }
)

export const CoordinatorFrame = Type.Union([Welcome, HeartbeatAck, Assign, Stop, Drain, Probe, ClearHealth, ErrorFrame])

/** Gossiped by every agent on the cluster and its pool topic. */
export const Announcement = Type.Object(
  {
    v: Type.Literal(CONTROL_VERSION),
    peerId: Type.String(),
    name: Type.String(),
    pool: Type.String(),
    gpus: Type.Integer({ minimum: 0 }),
    at: Type.Integer()
  },
  { additionalProperties: false }
)

export type RunState = Static<typeof RunState>
export type Assignment = Static<typeof Assignment>
export type RunningPlacement = Static<typeof RunningPlacement>
export type GpuUsage = Static<typeof GpuUsage>
export type Hello = Static<typeof Hello>
export type Heartbeat = Static<typeof Heartbeat>
export type AgentFrame = Static<typeof AgentFrame>
export type HostConditionType = Static<typeof HostConditionType>
export type CoordinatorFrame = Static<typeof CoordinatorFrame>
export type Welcome = Static<typeof Welcome>
export type Assign = Static<typeof Assign>
export type Probe = Static<typeof Probe>
export type ClearHealth = Static<typeof ClearHealth>
export type ClearHealthResult = Static<typeof ClearHealthResult>
export type Announcement = Static<typeof Announcement>
