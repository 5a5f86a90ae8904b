// The agent's end of `/gpumesh/gateway/1` (protocol/gateway.ts): the
// coordinator opens a stream per upstream connection and names a placement;
// the agent checks it is one of its own running endpoint replicas, connects
// to 127.0.0.1:<its port>, answers `connected`, and from then on passes bytes
// through unchanged both ways. The agent never parses HTTP: the coordinator
// speaks HTTP/1.1 to the replica over the stream.
//
// Bounded: at most MAX_STREAMS relays at once (the coordinator keeps idle
// ones for reuse, as HTTP keep-alive does); one over that is refused with
// ERR_BUSY, which the gateway treats as a replica it cannot reach now.
import { connect, type Socket } from 'node:net'
import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from '../../common/log.js'
import type { MeshNode } from '../../common/mesh/node.js'
import {
  GATEWAY_PROTOCOL,
  GATEWAY_VERSION,
  GatewayOpen,
  type GatewayRefusalCode,
  type GatewayReply,
  MAX_GATEWAY_FRAME,
  MAX_GATEWAY_STREAMS
} from '../../protocol/gateway.js'
import { encodeJsonFrame, TAG_CONTROL } from '../../protocol/session.js'
import { isValid, schemaErrors } from '../../protocol/validate.js'
import { firstFrame } from '../../common/mesh/stream-bytes.js'
import { coordinatorPeers, pipeSocket } from '../mesh/relay-streams.js'
import type { Runtime } from '../runtime/types.js'

const OPEN_TIMEOUT_MS = 10_000
const CONNECT_TIMEOUT_MS = 5000
/** Relays at once on this agent (each holds a socket to a replica and a yamux stream). */
const MAX_STREAMS = MAX_GATEWAY_STREAMS

export interface GatewayRelayOptions {
  node: MeshNode
  runtime: Runtime
  /** Coordinator multiaddrs ending in /p2p/<peer id>: the only peers that may call. */
  coordinators: string[]
  log: Logger
}

export class GatewayRelay {
  private readonly allowed: Set<string>
  private readonly active = new Set<{ stream: Stream; socket: Socket | null }>()

  constructor(private readonly o: GatewayRelayOptions) {
    this.allowed = coordinatorPeers(o.coordinators)
  }

  async start(): Promise<void> {
    await this.o.node.handle(
      GATEWAY_PROTOCOL,
      (stream, connection) => {
        this.serve(stream, connection)
      },
      { maxInboundStreams: MAX_STREAMS }
    )
  }

  /** Stops accepting calls and cuts the relays in flight (the replicas go on). */
  async stop(): Promise<void> {
    await this.o.node.unhandle(GATEWAY_PROTOCOL).catch(() => {})
    for (const a of this.active) {
      a.socket?.destroy()
      a.stream.abort(new Error('agent stopping'))
    }
    this.active.clear()
  }

  /** Relays now (for tests and the agent's own accounting). */
  get size(): number {
    return this.active.size
  }

  private serve(stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString()
    const entry: { stream: Stream; socket: Socket | null } = { stream, socket: null }
    const reply = (frame: GatewayReply) => {
      stream.send(encodeJsonFrame(frame))
    }
    const refuse = (code: GatewayRefusalCode, message: string) => {
      this.active.delete(entry)
      if (code !== 'ERR_CONNECT') this.o.log.warn({ peer, code }, `gateway call refused: ${message}`)
      try {
        reply({ v: GATEWAY_VERSION, type: 'error', code, message })
      } catch {}
      void stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => stream.abort(new Error(message)))
    }
    if (!this.allowed.has(peer)) {
      refuse('ERR_FORBIDDEN', 'gateway streams are accepted from the coordinator only')
      return
    }
    if (this.active.size >= MAX_STREAMS) {
      refuse('ERR_BUSY', `this agent relays ${MAX_STREAMS} gateway calls already`)
      return
    }
    this.active.add(entry)
    stream.addEventListener('close', () => {
      this.active.delete(entry)
    })
    firstFrame(stream, OPEN_TIMEOUT_MS, MAX_GATEWAY_FRAME).then(
      ({ frame, rest }) => {
        if (frame.tag !== TAG_CONTROL || !isValid(GatewayOpen, frame.value)) {
          refuse(
            'ERR_FRAME',
            `the first frame must be open${frame.tag === TAG_CONTROL ? `: ${schemaErrors(GatewayOpen, frame.value, 3).join('; ')}` : ''}`
          )
          return
        }
        const port = this.portOf(frame.value.placementId, refuse)
        if (port === null) return
        const socket = connect({ host: '127.0.0.1', port, timeout: CONNECT_TIMEOUT_MS })
        entry.socket = socket
        socket.setNoDelay(true)
        const failed = (err: NodeJS.ErrnoException) => {
          socket.destroy()
          refuse('ERR_CONNECT', `cannot connect to the replica on port ${port}: ${err.code ?? err.message}`)
        }
        socket.once('error', failed)
        socket.once('timeout', () => failed(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })))
        socket.once('connect', () => {
          socket.off('error', failed)
          socket.setTimeout(0)
          socket.removeAllListeners('timeout')
          try {
            reply({ v: GATEWAY_VERSION, type: 'connected' })
          } catch {
            socket.destroy()
            return
          }
          if (rest.length > 0) socket.write(rest)
          pipeSocket(stream, socket, () => {
            this.active.delete(entry)
          })
        })
      },
      (err: Error) => refuse('ERR_FRAME', err.message)
    )
  }

  /** The port of a running endpoint replica of this host, or null (refused). */
  private portOf(id: string, refuse: (code: GatewayRefusalCode, message: string) => void): number | null {
    const assignment = this.o.runtime.assignment(id)
    if (assignment?.port === undefined) {
      refuse('ERR_NOT_FOUND', `placement ${id} is not an endpoint replica on this host`)
      return null
    }
    const state = this.o.runtime.list().find((p) => p.placementId === id)?.state
    if (state !== 'running') {
      refuse('ERR_NOT_RUNNING', `placement ${id} is ${state ?? 'unknown'}, not running`)
      return null
    }
    return assignment.port
  }
}
