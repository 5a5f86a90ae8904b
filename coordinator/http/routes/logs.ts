// GET /v1/placements/:id/logs (docs/design.md "Serving endpoints"): a
// placement's output, read from its host over the mesh. The coordinator
// opens /gpumesh/logs/1 to the host's agent (protocol/logs.ts), sends the
// request, and once the agent answers `ok` passes the text through as the
// response body: text/plain, chunked, for as long as the agent sends
// (until the placement ends when following).
//
// Backpressure is passed along: a response that cannot take more pauses
// the libp2p stream (yamux then stops the agent, which stops reading the
// files). A client that goes away resets the stream, which ends the
// agent's reading. Everything that can refuse (unknown placement, host not
// connected, the agent's refusal) is answered before the 200, as problem+json.
import type { ServerResponse } from 'node:http'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Connection, Stream } from '@libp2p/interface'
import { bytes, resume } from '../../../common/mesh/stream-bytes.js'
import { IdParams, type Placement } from '../../../protocol/api.js'
import { LOGS_PROTOCOL, LOGS_VERSION, LogsQuery, LogsReply, MAX_LOGS_FRAME } from '../../../protocol/logs.js'
import { encodeJsonFrame, FrameDecoder, TAG_CONTROL } from '../../../protocol/session.js'
import { isValid } from '../../../protocol/validate.js'
import type { ConnectedHosts } from '../../attach/target.js'
import type { Pool } from '../../store/db.js'
import { getPlacement } from '../../store/workloads.js'
import { scopeOf } from '../auth.js'
import { ApiError } from '../problem.js'
import { responses } from '../schemas.js'

const DIAL_TIMEOUT_MS = 10_000
const REPLY_TIMEOUT_MS = 10_000

export interface LogsDeps {
  hosts: ConnectedHosts
  /** Opens a stream to a connected agent. */
  dial: (peerId: string, protocol: string, signal: AbortSignal) => Promise<{ stream: Stream; connection: Connection }>
}

/**
 * One log stream from an agent: its reply frame, then the text. One
 * 'message' listener from the start, so nothing the agent sends early is
 * missed; the text waits (the stream paused) until the response is there.
 */
class LogTap {
  private readonly decoder = new FrameDecoder(MAX_LOGS_FRAME)
  private answered = false
  private onReply: ((reply: LogsReply | Error) => void) | null = null
  private out: ServerResponse | null = null
  private early: Uint8Array | null = null
  private remoteDone = false
  private finished = false

  constructor(private readonly stream: Stream) {
    stream.addEventListener('message', (e) => {
      this.data(bytes(e.data))
    })
    stream.addEventListener('remoteCloseWrite', () => {
      this.remoteDone = true
      this.maybeFinish()
    })
    stream.addEventListener('close', (e) => {
      if (!this.answered) this.settle(new Error('the host closed the log stream without an answer'))
      else if (e.error !== undefined) this.fail()
      else {
        this.remoteDone = true
        this.maybeFinish()
      }
    })
  }

  /** The agent's answer to the request; rejects when none comes in time. */
  async reply(ms: number): Promise<LogsReply> {
    const answer = await new Promise<LogsReply | Error>((resolve) => {
      const timer = setTimeout(() => this.settle(new Error(`no answer within ${ms / 1000} s`)), ms)
      this.onReply = (r) => {
        clearTimeout(timer)
        resolve(r)
      }
    })
    if (answer instanceof Error) throw answer
    return answer
  }

  /** Sends the text into `out` until the agent ends it; resolves when the response is done. */
  async pipe(out: ServerResponse): Promise<void> {
    if (out.destroyed || out.socket === null || out.socket.destroyed) {
      this.abort('the client left') // while the host was asked
      return
    }
    this.out = out
    const done = new Promise<void>((resolve) => out.once('close', resolve))
    out.on('close', () => {
      if (!this.finished) this.stream.abort(new Error('the client left'))
    })
    out.on('drain', () => {
      resume(this.stream)
    })
    if (this.early !== null && this.early.length > 0) out.write(this.early)
    this.early = null
    resume(this.stream)
    this.maybeFinish()
    await done
  }

  abort(reason: string): void {
    this.stream.abort(new Error(reason))
  }

  private settle(r: LogsReply | Error): void {
    if (this.answered) return
    this.answered = true
    if (r instanceof Error) this.stream.abort(r)
    this.onReply?.(r)
  }

  private data(chunk: Uint8Array): void {
    if (!this.answered) {
      let frame
      try {
        frame = this.decoder.push(chunk, 1)[0]
      } catch (err) {
        this.settle(new Error(`the host sent a malformed reply: ${(err as Error).message}`))
        return
      }
      if (frame === undefined) return
      if (frame.tag !== TAG_CONTROL || !isValid(LogsReply, frame.value)) {
        this.settle(new Error('the host sent a malformed reply'))
        return
      }
      // Text that came with the reply waits, with the stream paused, for the response to exist.
      this.early = this.decoder.takeRest()
      this.stream.pause()
      this.settle(frame.value)
      return
    }
    const out = this.out
    if (out === null || out.destroyed) return
    if (!out.write(chunk)) this.stream.pause()
    this.maybeFinish()
  }

  /** Ends the response once the agent has closed its end and everything it sent is written. */
  private maybeFinish(): void {
    if (this.finished || this.out === null || !this.remoteDone || this.stream.readBufferLength > 0) return
    this.finished = true
    this.out.end()
    void this.stream.close({ signal: AbortSignal.timeout(5000) }).catch(() => this.stream.abort(new Error('closed')))
  }

  /** The host went away mid-stream: the response ends abruptly (no valid end of chunked body), which clients see as an error. */
  private fail(): void {
    if (this.finished) return
    this.finished = true
    this.out?.destroy()
  }
}

/** The problem an agent's refusal is to the client. */
function refusal(p: Placement, reply: Extract<LogsReply, { type: 'error' }>): ApiError {
  if (reply.code === 'ERR_NOT_FOUND')
    return new ApiError(
      'NOT_FOUND',
      p.state === 'assigned'
        ? `placement ${p.id} has not started on host ${p.hostName} yet`
        : `host ${p.hostName} no longer has the logs of placement ${p.id}: ${reply.message}`
    )
  if (reply.code === 'ERR_FORBIDDEN')
    return new ApiError('HOST_UNREACHABLE', `host ${p.hostName} refused: ${reply.message}`)
  return new ApiError('INTERNAL', `host ${p.hostName}: ${reply.message}`)
}

export const placementLogRoutes =
  (pool: Pool, deps: LogsDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    const live = new Set<LogTap>()
    // Following streams would otherwise hold the server open at shutdown.
    app.addHook('preClose', async () => {
      for (const tap of live) tap.abort('coordinator stopping')
    })

    app.get(
      '/v1/placements/:id/logs',
      {
        schema: {
          operationId: 'placementLogs',
          tags: ['placements'],
          summary: "A placement's output (stdout, stderr or both), read from its host; streamed while following",
          description:
            'text/plain. Works while the placement runs and after it ended, as long as its host keeps its folder (the last few ended placements of each replica). `tail` counts lines across the rotated previous file; with `stream=both`, the last `tail` lines of each, stdout first, then new lines of either as they come. `follow=true` keeps the response open until the placement has ended and its output is read to the end.',
          params: IdParams,
          querystring: LogsQuery,
          response: {
            ...responses({}, 404),
            200: {
              description: 'The log text',
              content: { 'text/plain': { schema: Type.String() } }
            }
          }
        }
      },
      async (req, reply) => {
        const p = await getPlacement(pool, req.params.id, scopeOf(req))
        const peerId = deps.hosts.peerOf(p.hostId)
        if (peerId === undefined)
          throw new ApiError(
            'HOST_UNREACHABLE',
            `host ${p.hostName} of placement ${p.id} is not connected to this coordinator (its agent is down or reconnecting, or connected to another coordinator); the logs are on that host`
          )
        let stream: Stream
        try {
          ;({ stream } = await deps.dial(peerId, LOGS_PROTOCOL, AbortSignal.timeout(DIAL_TIMEOUT_MS)))
        } catch (err) {
          throw new ApiError(
            'HOST_UNREACHABLE',
            `cannot open a log stream to host ${p.hostName}: ${(err as Error).message}`
          )
        }
        const tap = new LogTap(stream)
        live.add(tap)
        try {
          const q = req.query
          stream.send(
            encodeJsonFrame({
              v: LOGS_VERSION,
              type: 'logs',
              placementId: p.id,
              stream: q.stream ?? 'stdout',
              tail: q.tail ?? null,
              follow: q.follow ?? false
            })
          )
          let answer: LogsReply
          try {
            answer = await tap.reply(REPLY_TIMEOUT_MS)
          } catch (err) {
            throw new ApiError('HOST_UNREACHABLE', `host ${p.hostName}: ${(err as Error).message}`)
          }
          if (answer.type === 'error') {
            tap.abort('refused')
            throw refusal(p, answer)
          }
          reply.hijack()
          reply.raw.writeHead(200, {
            'content-type': 'text/plain; charset=utf-8',
            'cache-control': 'no-store',
            'x-content-type-options': 'nosniff',
            // Proxies (nginx) must pass a followed log through as it comes.
            'x-accel-buffering': 'no'
          })
          await tap.pipe(reply.raw)
        } finally {
          live.delete(tap)
        }
      }
    )
  }
