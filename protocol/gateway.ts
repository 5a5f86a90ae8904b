// Calls through the gateway (docs/serving.md "Gateway"): the wire shape of
// the hop between the coordinator and the agent that runs the replica.
//
//   client --HTTP--> coordinator --/gpumesh/gateway/1--> agent --TCP--> 127.0.0.1:$PORT
//
// The coordinator opens one stream per upstream connection and sends `open`
// (the placement); the agent checks it, connects to the replica's port and
// answers `connected` or `error`. Both are CONTROL frames of the session
// framing (protocol/session.ts: u32 length | u8 tag | JSON). After
// `connected` the stream is a raw byte pipe to the replica's socket, and the
// coordinator speaks plain HTTP/1.1 over it: the agent never parses HTTP, so
// anything the replica speaks over HTTP/1.1 (chunked, SSE, keep-alive) works
// unchanged, and a stream is reused for further calls as a kept-alive TCP
// connection would be. Pure shapes only: no I/O here.
import { Type, type Static } from '@sinclair/typebox'
import { Literals } from './schema.js'

export const GATEWAY_PROTOCOL = '/gpumesh/gateway/1'
/** Workload names the gateway's own routes take (/openai/v1/...): no workload may have them. */
export const RESERVED_NAMES: readonly string[] = ['openai']
export const GATEWAY_VERSION = 1
/** Gateway streams open at once between a coordinator and an agent (each is one upstream connection). */
export const MAX_GATEWAY_STREAMS = 1024
/** The opening frames are small; anything larger is not one. */
export const MAX_GATEWAY_FRAME = 4096

export const GatewayOpen = Type.Object(
  {
    v: Type.Literal(GATEWAY_VERSION),
    type: Type.Literal('open'),
    placementId: Type.String({ format: 'uuid' })
  },
  { additionalProperties: false }
)

export const GatewayConnected = Type.Object(
  { v: Type.Literal(GATEWAY_VERSION), type: Type.Literal('connected') },
  { additionalProperties: false }
)

export const GatewayRefusalCode = Literals(
  /** Not a coordinator peer. */
  'ERR_FORBIDDEN',
  /** The first frame is not a valid `open`. */
  'ERR_FRAME',
  /** No such placement on this host, or not an endpoint replica. */
  'ERR_NOT_FOUND',
  /** The placement is not running. */
  'ERR_NOT_RUNNING',
  /** Its port refused the connection (or did not answer in time). */
  'ERR_CONNECT',
  /** Too many gateway streams on this agent now. */
  'ERR_BUSY'
)
export type GatewayRefusalCode = Static<typeof GatewayRefusalCode>

export const GatewayRefusal = Type.Object(
  {
    v: Type.Literal(GATEWAY_VERSION),
    type: Type.Literal('error'),
    code: GatewayRefusalCode,
    message: Type.String({ maxLength: 1024 })
  },
  { additionalProperties: false }
)

/** The agent's answer to `open`. */
export const GatewayReply = Type.Union([GatewayConnected, GatewayRefusal])

export type GatewayOpen = Static<typeof GatewayOpen>
export type GatewayReply = Static<typeof GatewayReply>
