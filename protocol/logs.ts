// Placement logs (docs/design.md "Serving endpoints"): the wire shapes of
//
//   client --GET /v1/placements/:id/logs--> coordinator --/gpumesh/logs/1--> agent (the placement's log files)
//
// On the libp2p stream the coordinator sends one LogsRequest and the agent
// answers one LogsReply, each a CONTROL frame of protocol/session.ts
// (`u32 length | u8 tag | UTF-8 JSON`). After an `ok` reply the rest of the
// stream is the log text itself, raw bytes, until the agent closes its end:
// at once without `follow`; with it once the placement has ended and its
// files are read to the end. The coordinator closing or resetting the
// stream (its client went away) ends the agent's reading.
//
// Log files (agent/runtime/process-driver.ts): stdout.log and stderr.log in
// the placement's folder, each rotated at a size limit into one previous
// file (stdout.log.1); `tail` counts lines across the two.
import { Type, type Static } from '@sinclair/typebox'
import { Literals, Nullable } from './schema.js'

export const LOGS_PROTOCOL = '/gpumesh/logs/1'
export const LOGS_VERSION = 1
/** The request and reply frames are small; anything larger is not one of ours. */
export const MAX_LOGS_FRAME = 4096
/** The most lines `tail` may ask for. */
export const MAX_TAIL_LINES = 1_000_000

/** Which output: one stream, or both interleaved by arrival (whole lines). */
export const LogStream = Literals('stdout', 'stderr', 'both')

export const LogsRequest = Type.Object(
  {
    v: Type.Literal(LOGS_VERSION),
    type: Type.Literal('logs'),
    placementId: Type.String({ format: 'uuid' }),
    stream: LogStream,
    /** The last this many lines (null: everything kept). */
    tail: Nullable(Type.Integer({ minimum: 0, maximum: MAX_TAIL_LINES })),
    /** Keep sending new output until the placement has ended. */
    follow: Type.Boolean()
  },
  { additionalProperties: false }
)

export const LogsErrorCode = Literals('ERR_FRAME', 'ERR_FORBIDDEN', 'ERR_NOT_FOUND', 'ERR_INTERNAL')

export const LogsReply = Type.Union([
  Type.Object({ v: Type.Literal(LOGS_VERSION), type: Type.Literal('ok') }, { additionalProperties: false }),
  Type.Object(
    {
      v: Type.Literal(LOGS_VERSION),
      type: Type.Literal('error'),
      code: LogsErrorCode,
      message: Type.String({ maxLength: 1024 })
    },
    { additionalProperties: false }
  )
])

/** GET /v1/placements/:id/logs query. */
export const LogsQuery = Type.Object(
  {
    stream: Type.Optional(LogStream),
    tail: Type.Optional(
      Type.Integer({ minimum: 0, maximum: MAX_TAIL_LINES, description: 'the last N lines (default: all kept)' })
    ),
    follow: Type.Optional(
      Type.Boolean({ description: 'keep the response open for new output until the placement ends' })
    )
  },
  { additionalProperties: false }
)

export type LogStream = Static<typeof LogStream>
export type LogsRequest = Static<typeof LogsRequest>
export type LogsReply = Static<typeof LogsReply>
export type LogsErrorCode = Static<typeof LogsErrorCode>
export type LogsQuery = Static<typeof LogsQuery>
