// Interactive sessions (`gpumesh attach`): the wire shapes of the three hops
// a keystroke crosses, and the one binary frame format two of them share.
//
//   client --WebSocket--> coordinator --/gpumesh/session/1--> agent --unix socket--> pty holder
//
// WebSocket (GET /v1/workloads/:id/attach, docs/design.md "Contracts"): binary
// messages are terminal bytes both ways; text messages are JSON control
// (ClientMessage from the client, ServerMessage from the coordinator). The
// socket's close code and reason say why an attach ended (SESSION_CLOSE).
//
// libp2p stream and the agent's unix socket to the holder: a sequence of
// frames, each `u32 length (big endian) | u8 tag | payload`, where length
// counts the tag and the payload. Tag DATA carries terminal bytes, tag
// CONTROL one UTF-8 JSON object checked against the schemas below. The
// first frame on a stream is the coordinator's (or agent's) `open`.
// Pure encoding and decoding only: no I/O here.
import { Type, type Static } from '@sinclair/typebox'
import { Literals, Nullable } from './schema.js'

export const SESSION_PROTOCOL = '/gpumesh/session/1'
export const SESSION_VERSION = 1

/** WebSocket subprotocol a browser names next to `bearer.<token>`; the server selects it (never the token). */
export const WS_SUBPROTOCOL = 'gpumesh.v1'

export const TAG_DATA = 0
export const TAG_CONTROL = 1
/** Largest frame (tag + payload) either side accepts; terminal data travels in chunks far below it. */
export const MAX_SESSION_FRAME = 256 * 1024
/** Largest WebSocket message a client may send (a paste); larger ones close the attach with 1009. */
export const MAX_CLIENT_MESSAGE = 64 * 1024
/** Terminal sizes a pty accepts (ioctl TIOCSWINSZ takes 16-bit values; nobody has a 10 000-column screen). */
const Cols = Type.Integer({ minimum: 1, maximum: 10_000 })
const Rows = Type.Integer({ minimum: 1, maximum: 10_000 })

/**
 * What makes an assignment a session (its presence): the agent runs the
 * command in a pseudo-terminal held by a small holder process, and ends it
 * after this long without input or output, or this long in all (null: never).
 */
export const SessionSettings = Type.Object(
  {
    idleTimeoutSeconds: Nullable(Type.Integer({ minimum: 1 })),
    maxDurationSeconds: Nullable(Type.Integer({ minimum: 1 }))
  },
  { additionalProperties: false }
)

/** Why a session's terminal ended. */
export const EndReason = Literals('exited', 'idle-timeout', 'max-duration', 'stopped')

// Coordinator -> agent -> holder
export const Open = Type.Object(
  {
    v: Type.Literal(SESSION_VERSION),
    type: Type.Literal('open'),
    placementId: Type.String({ format: 'uuid' }),
    cols: Cols,
    rows: Rows
  },
  { additionalProperties: false }
)

export const Resize = Type.Object(
  {
    v: Type.Literal(SESSION_VERSION),
    type: Type.Literal('resize'),
    cols: Cols,
    rows: Rows
  },
  { additionalProperties: false }
)

// Holder -> agent -> coordinator
/** Attached: terminal output follows (the last bytes of scrollback first). */
export const Ready = Type.Object(
  {
    v: Type.Literal(SESSION_VERSION),
    type: Type.Literal('ready'),
    /** Attaches to this session now, this one included. */
    attached: Type.Integer({ minimum: 1 })
  },
  { additionalProperties: false }
)

/** The terminal's command ended; the stream closes after it. */
export const Exit = Type.Object(
  {
    v: Type.Literal(SESSION_VERSION),
    type: Type.Literal('exit'),
    /** Exit status; 128 + n when the command was killed by signal n. */
    code: Type.Integer({ minimum: 0, maximum: 255 }),
    signal: Nullable(Type.String({ maxLength: 16 })),
    reason: EndReason
  },
  { additionalProperties: false }
)

export const SessionErrorCode = Literals(
  'ERR_FRAME',
  'ERR_NOT_FOUND',
  'ERR_NOT_RUNNING',
  'ERR_NOT_SESSION',
  'ERR_SLOW_CLIENT',
  'ERR_FORBIDDEN',
  'ERR_INTERNAL'
)

export const SessionError = Type.Object(
  {
    v: Type.Literal(SESSION_VERSION),
    type: Type.Literal('error'),
    code: SessionErrorCode,
    message: Type.String({ maxLength: 1024 })
  },
  { additionalProperties: false }
)

export const ToHost = Type.Union([Open, Resize])
export const FromHost = Type.Union([Ready, Exit, SessionError])

/** GET /v1/workloads/:id/attach query: the client's terminal size when it attaches. */
export const AttachQuery = Type.Object(
  {
    cols: Type.Optional(Cols),
    rows: Type.Optional(Rows)
  },
  { additionalProperties: false }
)

// WebSocket text messages
export const ClientMessage = Type.Union([
  Type.Object({ type: Type.Literal('resize'), cols: Cols, rows: Rows }, { additionalProperties: false })
])

export const ServerMessage = Type.Union([
  Type.Object(
    {
      type: Type.Literal('attached'),
      workload: Type.String(),
      placement: Type.String(),
      host: Type.String(),
      attached: Type.Integer()
    },
    { additionalProperties: false }
  ),
  Type.Object(
    { type: Type.Literal('exit'), code: Type.Integer(), signal: Nullable(Type.String()), reason: EndReason },
    { additionalProperties: false }
  )
])

/**
 * WebSocket close codes of an attach (RFC 6455 §7.4: 4000-4999 are ours).
 * The close reason is a sentence for people; the code is for programs.
 */
export const SESSION_CLOSE = {
  /** The terminal's command exited (an `exit` message came first). */
  EXITED: 1000,
  /** The coordinator is shutting down. */
  GOING_AWAY: 1001,
  /** A message that is not JSON, of an unknown type, or of the wrong shape. */
  BAD_MESSAGE: 1008,
  /** A message larger than MAX_CLIENT_MESSAGE. */
  TOO_BIG: 1009,
  INTERNAL: 1011,
  /** The session was stopped: the workload was deleted, or its host drained or fenced. */
  STOPPED: 4000,
  /** No input and no output for the workload's idleTimeoutSeconds. */
  IDLE_TIMEOUT: 4001,
  /** The workload's maxDurationSeconds passed. */
  MAX_DURATION: 4002,
  /** This client did not read its output for too long (the others were kept waiting). */
  SLOW_CLIENT: 4003,
  /** The session is not running on its host (ended, or not started yet). */
  NOT_RUNNING: 4004,
  /** The coordinator lost its connection to the session's host (crashed, partitioned, stopped). */
  HOST_LOST: 4005
} as const

export const closeCodeFor = (reason: Static<typeof EndReason>): number =>
  reason === 'exited'
    ? SESSION_CLOSE.EXITED
    : reason === 'idle-timeout'
      ? SESSION_CLOSE.IDLE_TIMEOUT
      : reason === 'max-duration'
        ? SESSION_CLOSE.MAX_DURATION
        : SESSION_CLOSE.STOPPED

export type SessionSettings = Static<typeof SessionSettings>
export type EndReason = Static<typeof EndReason>
export type Open = Static<typeof Open>
export type Resize = Static<typeof Resize>
export type Ready = Static<typeof Ready>
export type Exit = Static<typeof Exit>
export type SessionError = Static<typeof SessionError>
export type SessionErrorCode = Static<typeof SessionErrorCode>
export type ToHost = Static<typeof ToHost>
export type FromHost = Static<typeof FromHost>
export type ClientMessage = Static<typeof ClientMessage>
export type AttachQuery = Static<typeof AttachQuery>
export type ServerMessage = Static<typeof ServerMessage>

// ------------------------------------------------------------------ frames

const encoder = new TextEncoder()

export function encodeData(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + bytes.length)
  new DataView(out.buffer).setUint32(0, bytes.length + 1)
  out[4] = TAG_DATA
  out.set(bytes, 5)
  return out
}

export function encodeControl(frame: ToHost | FromHost): Uint8Array {
  return encodeJsonFrame(frame)
}

/** A CONTROL frame of any JSON value (other protocols that share this framing check their own shapes). */
export function encodeJsonFrame(value: object): Uint8Array {
  const json = encoder.encode(JSON.stringify(value))
  const out = new Uint8Array(5 + json.length)
  new DataView(out.buffer).setUint32(0, json.length + 1)
  out[4] = TAG_CONTROL
  out.set(json, 5)
  return out
}

export type RawFrame = { tag: typeof TAG_DATA; data: Uint8Array } | { tag: typeof TAG_CONTROL; value: unknown }

export class SessionFrameError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SessionFrameError'
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Splits a byte stream into frames. push() returns the complete frames so
 * far; bytes of an incomplete frame wait for the next chunk. Throws
 * SessionFrameError on a frame over `max`, an unknown tag, or a control
 * payload that is not UTF-8 JSON; the stream is unusable after that.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = []
  private buffered = 0

  constructor(private readonly max = MAX_SESSION_FRAME) {}

  /** Adds `chunk`; returns the frames it completed, at most `limit` (the rest stay buffered). */
  push(chunk: Uint8Array, limit = Infinity): RawFrame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.buffered += chunk.length
    }
    const out: RawFrame[] = []
    for (;;) {
      if (this.buffered < 4 || out.length >= limit) return out
      const head = this.peek(4)
      const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0)
      if (length === 0 || length > this.max)
        throw new SessionFrameError(`frame of ${length} bytes (the limit is ${this.max})`)
      if (this.buffered < 4 + length) return out
      const frame = this.take(4 + length).subarray(4)
      const tag = frame[0]
      const payload = frame.subarray(1)
      if (tag === TAG_DATA) out.push({ tag: TAG_DATA, data: payload })
      else if (tag === TAG_CONTROL) {
        let value: unknown
        try {
          value = JSON.parse(strictUtf8.decode(payload))
        } catch {
          throw new SessionFrameError('control frame is not UTF-8 JSON')
        }
        out.push({ tag: TAG_CONTROL, value })
      } else throw new SessionFrameError(`unknown frame tag ${String(tag)}`)
    }
  }

  /** Bytes received after the last complete frame, handed over (the decoder is empty after). */
  takeRest(): Uint8Array {
    const rest = this.chunks.length === 1 ? (this.chunks[0] as Uint8Array) : this.join()
    this.chunks = []
    this.buffered = 0
    return rest ?? new Uint8Array(0)
  }

  /** The first n buffered bytes, without consuming them. */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array
    if (first.length >= n) return first.subarray(0, n)
    return this.join().subarray(0, n)
  }

  private take(n: number): Uint8Array {
    const first = this.chunks[0] as Uint8Array
    if (first.length < n) this.join()
    const whole = this.chunks[0] as Uint8Array
    const out = whole.subarray(0, n)
    if (whole.length === n) this.chunks.shift()
    else this.chunks[0] = whole.subarray(n)
    this.buffered -= n
    return out
  }

  private join(): Uint8Array {
    const all = new Uint8Array(this.buffered)
    let at = 0
    for (const c of this.chunks) {
      all.set(c, at)
      at += c.length
    }
    this.chunks = [all]
    return all
  }
}
