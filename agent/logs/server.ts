// The agent's end of `/gpumesh/logs/1` (protocol/logs.ts): the coordinator
// asks for a placement's stdout, stderr or both (the last N lines, or all
// the files keep) and, with `follow`, for what the process writes next. The
// files are read where the runtime's log keepers write them, for running
// placements and for ended ones whose folders are still kept.
//
// Only coordinator peers may open it: a workload's output is its own.
//
// Backpressure: a file is read a chunk at a time, and the next chunk only
// once the stream has taken the last, so a slow client slows the reading,
// never the process (its log keepers write to disk regardless). Following
// polls the files; it ends once the placement has ended and a poll after
// that finds nothing new, or at once when the coordinator closes or resets
// the stream (its client went away).
import { join, resolve } from 'node:path'
import type { Connection, Stream } from '@libp2p/interface'
import { sleep } from '../../common/daemon/sleep.js'
import type { Logger } from '../../common/log.js'
import type { MeshNode } from '../../common/mesh/node.js'
import { firstFrame, resume } from '../../common/mesh/stream-bytes.js'
import {
  LOGS_PROTOCOL,
  LOGS_VERSION,
  LogsRequest,
  MAX_LOGS_FRAME,
  type LogsErrorCode,
  type LogsReply
} from '../../protocol/logs.js'
import { encodeJsonFrame, TAG_CONTROL } from '../../protocol/session.js'
import { isValid, schemaErrors } from '../../protocol/validate.js'
import { coordinatorPeers } from '../mesh/relay-streams.js'
import { isFinal } from '../runtime/entry.js'
import { placementDir, STDERR_FILE, STDOUT_FILE } from '../runtime/state.js'
import type { Runtime } from '../runtime/types.js'
import { LineJoiner } from './lines.js'
import { type Emit, LogSource } from './source.js'

const REQUEST_TIMEOUT_MS = 10_000
const MAX_STREAMS = 64
/** How often a follow looks for new output (the first look is at once). */
export const FOLLOW_POLL_MS = 200
const ENDED_QUIET_PASSES = 2

export interface LogsServerOptions {
  node: MeshNode
  runtime: Runtime
  stateDir: string
  /** Coordinator multiaddrs ending in /p2p/<peer id>: the only peers that may read logs. */
  coordinators: string[]
  log: Logger
}

export class LogsServer {
  private readonly allowed: ReadonlySet<string>
  private readonly active = new Set<AbortController>()

  constructor(private readonly o: LogsServerOptions) {
    this.allowed = coordinatorPeers(o.coordinators)
  }

  /** Log streams being served now. */
  get streams(): number {
    return this.active.size
  }

  async start(): Promise<void> {
    await this.o.node.handle(
      LOGS_PROTOCOL,
      (stream, connection) => {
        void this.serve(stream, connection)
      },
      { maxInboundStreams: MAX_STREAMS }
    )
  }

  async stop(): Promise<void> {
    await this.o.node.unhandle(LOGS_PROTOCOL).catch(() => {})
    for (const a of this.active) a.abort()
  }

  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const gone = new AbortController()
    const leave = () => gone.abort()
    // The coordinator only ever writes the request: its closing or resetting the stream means its client left.
    stream.addEventListener('close', leave)
    stream.addEventListener('remoteCloseWrite', leave)
    this.active.add(gone)
    try {
      if (!this.allowed.has(peer)) {
        await this.refuse(stream, peer, 'ERR_FORBIDDEN', 'log streams are accepted from the coordinator only')
        return
      }
      let request: LogsRequest
      try {
        const { frame } = await firstFrame(stream, REQUEST_TIMEOUT_MS, MAX_LOGS_FRAME)
        resume(stream) // firstFrame leaves it paused; the coordinator's close must still reach `leave`
        if (frame.tag !== TAG_CONTROL || !isValid(LogsRequest, frame.value))
          throw new Error(
            `the first frame must be a logs request${frame.tag === TAG_CONTROL ? `: ${schemaErrors(LogsRequest, frame.value, 3).join('; ')}` : ''}`
          )
        request = frame.value
      } catch (err) {
        await this.refuse(stream, peer, 'ERR_FRAME', (err as Error).message)
        return
      }
      const id = request.placementId
      if (this.stateOf(id) === undefined) {
        await this.refuse(
          stream,
          peer,
          'ERR_NOT_FOUND',
          `placement ${id} is not on this host (not started here yet, or its folder was removed: ended placements are kept a few per replica)`
        )
        return
      }
      this.reply(stream, { v: LOGS_VERSION, type: 'ok' })
      await this.pump(stream, request, gone.signal)
      await this.end(stream)
    } catch (err) {
      if (!gone.signal.aborted) this.o.log.warn({ peer, err: (err as Error).message }, 'log stream failed')
      stream.abort(err as Error)
    } finally {
      this.active.delete(gone)
      stream.removeEventListener('close', leave)
      stream.removeEventListener('remoteCloseWrite', leave)
    }
  }

  private stateOf(placementId: string) {
    return this.o.runtime.list().find((p) => p.placementId === placementId)?.state
  }

  /** Sends the files' text; with `follow`, then what is written until the placement has ended. */
  private async pump(stream: Stream, request: LogsRequest, signal: AbortSignal): Promise<void> {
    const dir = placementDir(resolve(this.o.stateDir), request.placementId)
    const names =
      request.stream === 'both' ? [STDOUT_FILE, STDERR_FILE] : [request.stream === 'stdout' ? STDOUT_FILE : STDERR_FILE]
    const send: Emit = async (chunk) => {
      if (signal.aborted) throw new Error('the reader left')
      if (!stream.send(chunk)) await stream.onDrain({ signal })
    }
    // One stream: its bytes as they are. Both: whole lines, each stream's held until its newline.
    const sources = names.map((name) => {
      const joiner = request.stream === 'both' ? new LineJoiner() : null
      const emit: Emit =
        joiner === null
          ? send
          : async (chunk) => {
              const lines = joiner.push(chunk)
              if (lines !== null) await send(lines)
            }
      return { source: new LogSource(join(dir, name)), emit, joiner }
    })
    try {
      for (const s of sources) await s.source.start(request.tail, s.emit)
      if (request.follow) {
        // Passes since the placement ended that found nothing new: its log keepers may still be writing its
        // last output a moment after it ended, so one quiet pass is not proof.
        let quiet = 0
        while (!signal.aborted) {
          // Ended is looked at before reading: what the process wrote before it ended is read in this pass.
          const ended = isFinalState(this.stateOf(request.placementId))
          let sent = 0
          for (const s of sources) sent += await s.source.more(s.emit)
          if (ended) quiet = sent === 0 ? quiet + 1 : 0
          if (quiet >= ENDED_QUIET_PASSES) break
          await sleep(FOLLOW_POLL_MS, signal)
        }
      }
      for (const s of sources) {
        const rest = s.joiner?.flush() ?? null
        if (rest !== null) await send(Buffer.concat([rest, Buffer.from('\n')]))
      }
    } finally {
      for (const s of sources) await s.source.close()
    }
  }

  private reply(stream: Stream, reply: LogsReply): void {
    stream.send(encodeJsonFrame(reply))
  }

  private async refuse(stream: Stream, peer: string, code: LogsErrorCode, message: string): Promise<void> {
    this.o.log.warn({ peer, code }, `log stream refused: ${message}`)
    try {
      this.reply(stream, { v: LOGS_VERSION, type: 'error', code, message: message.slice(0, 1024) })
    } catch {}
    await this.end(stream)
  }

  /** Closes our end; a coordinator that does not close its own in time gets a reset. */
  private async end(stream: Stream): Promise<void> {
    await stream.close({ signal: AbortSignal.timeout(5000) }).catch(() => stream.abort(new Error('log stream closed')))
  }
}

/** Unknown (its folder just went) counts as ended: nothing more will be written. */
const isFinalState = (state: ReturnType<Runtime['list']>[number]['state'] | undefined): boolean =>
  state === undefined || isFinal(state)
