// The agent's end of `/gpumesh/session/1`: the coordinator opens one stream
// per attach; its first frame is `open` (placement, terminal size). The agent
// checks that the placement is one of its running sessions, connects to the
// placement's pty holder (agent/session/holder.ts) and from then on passes
// bytes through unchanged both ways: both hops speak the same frames, and the
// holder and the coordinator check what they receive.
//
// Only coordinator peers may open a session stream (a terminal is a shell on
// this host); backpressure passes through (agent/mesh/relay-streams.ts): a
// full unix socket pauses the coordinator, a stream that cannot send pauses
// the holder (which then pauses the terminal).
import { connect, type Socket } from 'node:net'
import { resolve } from 'node:path'
import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from '../../common/log.js'
import type { MeshNode } from '../../common/mesh/node.js'
import {
  encodeControl,
  Open,
  SESSION_PROTOCOL,
  SESSION_VERSION,
  TAG_CONTROL,
  type SessionErrorCode
} from '../../protocol/session.js'
import { isValid, schemaErrors } from '../../protocol/validate.js'
import { firstFrame } from '../../common/mesh/stream-bytes.js'
import { coordinatorPeers, pipeSocket } from '../mesh/relay-streams.js'
import { placementDir } from '../runtime/state.js'
import type { Runtime } from '../runtime/types.js'
import { socketPath } from './paths.js'

/** How long the coordinator has to send `open` after opening the stream. */
const OPEN_TIMEOUT_MS = 10_000
const MAX_STREAMS = 256
/** How long after a session starts its holder may take to listen. */
const HOLDER_START_MS = 5000

export interface SessionRelayOptions {
  node: MeshNode
  runtime: Runtime
  stateDir: string
  /** Coordinator multiaddrs ending in /p2p/<peer id>: the only peers that may attach. */
  coordinators: string[]
  log: Logger
}

export class SessionRelay {
  private readonly allowed: Set<string>
  private readonly active = new Set<{ stream: Stream; socket: Socket | null }>()

  constructor(private readonly o: SessionRelayOptions) {
    this.allowed = coordinatorPeers(o.coordinators)
  }

  async start(): Promise<void> {
    await this.o.node.handle(
      SESSION_PROTOCOL,
      (stream, connection) => {
        this.serve(stream, connection)
      },
      { maxInboundStreams: MAX_STREAMS }
    )
  }

  /** Stops accepting attaches and drops the current ones (the sessions themselves go on). */
  async stop(): Promise<void> {
    await this.o.node.unhandle(SESSION_PROTOCOL).catch(() => {})
    for (const a of this.active) {
      a.socket?.destroy()
      a.stream.abort(new Error('agent stopping'))
    }
    this.active.clear()
  }

  private serve(stream: Stream, connection: Connection): void {
    const peer = connection.remotePeer.toString()
    const refuse = (code: SessionErrorCode, message: string) => {
      this.o.log.warn({ peer, code }, `session attach refused: ${message}`)
      try {
        stream.send(encodeControl({ v: SESSION_VERSION, type: 'error', code, message }))
      } catch {}
      void stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => stream.abort(new Error(message)))
    }
    if (!this.allowed.has(peer)) {
      refuse('ERR_FORBIDDEN', 'session streams are accepted from the coordinator only')
      return
    }

    firstFrame(stream, OPEN_TIMEOUT_MS).then(
      ({ frame, rest }) => {
        if (frame.tag !== TAG_CONTROL || !isValid(Open, frame.value)) {
          refuse(
            'ERR_FRAME',
            `the first frame must be open${frame.tag === TAG_CONTROL ? `: ${schemaErrors(Open, frame.value, 3).join('; ')}` : ''}`
          )
          return
        }
        this.attach(stream, frame.value, rest, refuse)
      },
      (err: Error) => refuse('ERR_FRAME', err.message)
    )
  }

  private attach(
    stream: Stream,
    open: Open,
    rest: Uint8Array,
    refuse: (code: SessionErrorCode, message: string) => void
  ): void {
    const id = open.placementId
    const assignment = this.o.runtime.assignment(id)
    if (assignment === undefined) {
      refuse('ERR_NOT_FOUND', `placement ${id} is not on this host`)
      return
    }
    if (assignment.session === undefined) {
      refuse('ERR_NOT_SESSION', `placement ${id} is not a session`)
      return
    }
    const state = this.o.runtime.list().find((p) => p.placementId === id)?.state
    if (state !== 'running') {
      refuse('ERR_NOT_RUNNING', `session ${id} is ${state ?? 'unknown'}, not running`)
      return
    }

    stream.pause() // nothing is read until the holder is there to take it
    const path = socketPath(placementDir(resolve(this.o.stateDir), id))
    const deadline = Date.now() + HOLDER_START_MS
    const tryConnect = () => {
      const socket = connect(path)
      let connected = false
      socket.once('connect', () => {
        connected = true
        this.pipe(stream, socket, open, rest)
      })
      socket.once('error', (err: NodeJS.ErrnoException) => {
        if (connected) return // after connecting, 'close' handles it
        // Placement 'running' means the holder was started; it listens a moment later.
        const running = this.o.runtime.list().find((p) => p.placementId === id)?.state === 'running'
        if (
          running &&
          stream.status === 'open' &&
          Date.now() < deadline &&
          (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')
        )
          setTimeout(tryConnect, 50)
        else refuse('ERR_NOT_RUNNING', `the terminal of session ${id} is not reachable (${err.code ?? err.message})`)
      })
    }
    tryConnect()
  }

  private pipe(stream: Stream, socket: Socket, open: Open, rest: Uint8Array): void {
    const entry = { stream, socket }
    this.active.add(entry)
    socket.write(encodeControl(open))
    if (rest.length > 0) socket.write(rest)
    pipeSocket(stream, socket, () => {
      this.active.delete(entry)
    })
  }
}
