// One attach: a client's WebSocket joined to a `/gpumesh/session/1` stream to
// the agent that runs the session. The coordinator is the boundary for the
// client (it checks every WebSocket message) and for the agent's frames.
//
// Close reasons (protocol/session.ts SESSION_CLOSE): the command's exit
// (1000, after an `exit` message), the session stopped / idle / too long
// (4000-4002), this client too slow (4003), the session not running on its
// host (4004), the host lost (4005), a bad message from the client (1008,
// 1009), coordinator shutdown (1001).
//
// Backpressure: output waits in the WebSocket's send buffer; above
// HIGH_WATER the agent's stream is paused (yamux then stops the agent, which
// stops the holder, which pauses the terminal) until the buffer is under
// LOW_WATER. A client that stays behind for STALL_MS is dropped (4003): it
// must not hold a terminal that others use. Input from the client is paused
// while the stream to the agent cannot take more.
import type { Stream } from '@libp2p/interface'
import type { WebSocket, RawData } from 'ws'
import type { Logger } from '../../common/log.js'
import { bytes, resume } from '../../common/mesh/stream-bytes.js'
import {
  ClientMessage,
  closeCodeFor,
  encodeControl,
  encodeData,
  FrameDecoder,
  FromHost,
  SESSION_CLOSE,
  SESSION_VERSION,
  type SessionFrameError,
  TAG_DATA,
  type FromHost as HostFrame,
  type ServerMessage
} from '../../protocol/session.js'
import { isValid, schemaErrors } from '../../protocol/validate.js'

const HIGH_WATER = 1024 * 1024
const LOW_WATER = 256 * 1024
export const STALL_MS = 15_000
const CLOSE_SETTLE_MS = 500

export interface AttachTarget {
  workloadId: string
  workloadName: string
  placementId: string
  hostId: string
  hostName: string
  peerId: string
}

const rawBytes = (d: RawData): Buffer => (Buffer.isBuffer(d) ? d : Array.isArray(d) ? Buffer.concat(d) : Buffer.from(d))
/** Close reasons are at most 123 bytes (RFC 6455 §5.5). */
const short = (s: string) =>
  Buffer.byteLength(s) <= 123
    ? s
    : `${Buffer.from(s)
        .subarray(0, 120)
        .toString('utf8')
        .replace(/\uFFFD*$/, '')}...`

export class AttachBridge {
  private readonly decoder = new FrameDecoder()
  private closed = false
  private ended = false
  private pausedSince: number | null = null
  private readonly stallTimer: NodeJS.Timeout

  constructor(
    private readonly ws: WebSocket,
    private readonly stream: Stream,
    hostConnected: () => boolean,
    private readonly target: AttachTarget,
    private readonly log: Logger,
    private readonly onDone: () => void
  ) {
    stream.addEventListener('message', (e) => {
      this.fromHost(bytes(e.data))
    })
    stream.addEventListener('close', (e) => {
      if (this.ended) return
      // No exit or error frame came first: the host or its terminal went away under us.
      // A host shutting down closes its streams before its connection: look again a moment later.
      if (e.error === undefined && hostConnected()) {
        this.ended = true
        setTimeout(() => {
          if (!hostConnected()) this.close(SESSION_CLOSE.HOST_LOST, `lost the connection to host ${target.hostName}`)
          else
            this.close(
              SESSION_CLOSE.NOT_RUNNING,
              `the session's terminal on host ${target.hostName} closed without an exit status`
            )
        }, CLOSE_SETTLE_MS)
      } else this.close(SESSION_CLOSE.HOST_LOST, `lost the connection to host ${target.hostName}`)
    })
    ws.on('message', (data, isBinary) => {
      this.fromClient(data, isBinary)
    })
    ws.on('close', () => {
      this.detach()
    })
    ws.on('error', () => {
      this.detach()
    })
    this.stallTimer = setInterval(() => {
      if (this.pausedSince !== null && Date.now() - this.pausedSince > STALL_MS)
        this.close(SESSION_CLOSE.SLOW_CLIENT, `this client read no output for ${STALL_MS / 1000} s`)
    }, 1000)
    this.stallTimer.unref()
  }

  /** Ends the attach with a close code and reason; the session itself goes on unless it ended. */
  close(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.ended = true
    clearInterval(this.stallTimer)
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) {
      // ws cuts the connection when the close handshake is not answered in 30 s
      // (a stalled client that reads again within that time still learns why).
      this.ws.close(code, short(reason))
    }
    this.endStream()
    this.onDone()
  }

  private detach(): void {
    if (this.closed) return
    this.closed = true
    clearInterval(this.stallTimer)
    this.endStream()
    this.onDone()
  }

  /** Closes our side of the stream (the agent detaches us from the terminal); reset if the agent does not finish in time. */
  private endStream(): void {
    this.ended = true
    if (this.stream.status !== 'open') return
    resume(this.stream)
    void this.stream.close({ signal: AbortSignal.timeout(5000) }).catch(() => {
      this.stream.abort(new Error('attach closed'))
    })
  }

  private fromHost(chunk: Uint8Array): void {
    if (this.closed) return
    let frames
    try {
      frames = this.decoder.push(chunk)
    } catch (err) {
      this.log.warn(
        { host: this.target.hostId, err: (err as SessionFrameError).message },
        'bad session frame from agent'
      )
      this.close(SESSION_CLOSE.INTERNAL, 'the host sent a malformed frame')
      return
    }
    for (const f of frames) {
      if (f.tag === TAG_DATA) {
        this.toClient(f.data)
        continue
      }
      if (!isValid(FromHost, f.value)) {
        this.log.warn(
          { host: this.target.hostId, err: schemaErrors(FromHost, f.value, 3).join('; ') },
          'bad session frame from agent'
        )
        this.close(SESSION_CLOSE.INTERNAL, 'the host sent a malformed frame')
        return
      }
      this.control(f.value)
      if (this.closed) return
    }
  }

  private control(f: HostFrame): void {
    const t = this.target
    if (f.type === 'ready') {
      this.sendText({
        type: 'attached',
        workload: t.workloadId,
        placement: t.placementId,
        host: t.hostName,
        attached: f.attached
      })
    } else if (f.type === 'exit') {
      this.sendText({ type: 'exit', code: f.code, signal: f.signal, reason: f.reason })
      const why =
        f.reason === 'exited'
          ? `exited with code ${f.code}${f.signal === null ? '' : ` (${f.signal})`}`
          : f.reason === 'idle-timeout'
            ? 'idle timeout: no input or output for too long'
            : f.reason === 'max-duration'
              ? 'the session reached its maximum duration'
              : 'session stopped (workload deleted, or its host drained)'
      this.close(closeCodeFor(f.reason), why)
    } else {
      const code =
        f.code === 'ERR_SLOW_CLIENT'
          ? SESSION_CLOSE.SLOW_CLIENT
          : f.code === 'ERR_NOT_FOUND' || f.code === 'ERR_NOT_RUNNING' || f.code === 'ERR_NOT_SESSION'
            ? SESSION_CLOSE.NOT_RUNNING
            : SESSION_CLOSE.INTERNAL
      if (code === SESSION_CLOSE.INTERNAL)
        this.log.warn({ host: t.hostId, code: f.code, err: f.message }, 'agent refused a session frame')
      this.close(code, f.message)
    }
  }

  private toClient(data: Uint8Array): void {
    this.ws.send(data, { binary: true }, () => {
      if (this.pausedSince !== null && this.ws.bufferedAmount < LOW_WATER) {
        this.pausedSince = null
        resume(this.stream)
      }
    })
    if (this.pausedSince === null && this.ws.bufferedAmount > HIGH_WATER) {
      this.pausedSince = Date.now()
      this.stream.pause()
    }
  }

  private sendText(m: ServerMessage): void {
    this.ws.send(JSON.stringify(m))
  }

  private fromClient(data: RawData, isBinary: boolean): void {
    if (this.closed) return
    const buf = rawBytes(data)
    if (isBinary) {
      this.toHost(encodeData(buf))
      return
    }
    let m: unknown
    try {
      m = JSON.parse(buf.toString('utf8'))
    } catch {
      this.close(
        SESSION_CLOSE.BAD_MESSAGE,
        'text messages must be JSON control messages, e.g. {"type":"resize","cols":120,"rows":40}'
      )
      return
    }
    if (!isValid(ClientMessage, m)) {
      const type = (m as { type?: unknown } | null)?.type
      this.close(
        SESSION_CLOSE.BAD_MESSAGE,
        typeof type === 'string' && type !== 'resize'
          ? `unknown message type ${JSON.stringify(type)}`
          : `bad message: ${schemaErrors(ClientMessage, m, 1).join('; ')}`
      )
      return
    }
    this.toHost(encodeControl({ v: SESSION_VERSION, type: 'resize', cols: m.cols, rows: m.rows }))
  }

  private toHost(frame: Uint8Array): void {
    try {
      if (!this.stream.send(frame)) {
        this.ws.pause()
        this.stream.onDrain().then(
          () => this.ws.resume(),
          () => {}
        )
      }
    } catch {
      // The stream is closing; its close event reports why.
    }
  }
}
