// forward(): one call to one ready replica of an endpoint, streamed both
// ways (docs/serving.md "Gateway"). The replica is the least busy one on this
// coordinator (calls in flight; ties at random). A replica that cannot be
// reached (stream not opened, the agent's connect refused) has been sent
// nothing, so the call moves to another replica once. From the moment a
// response begins, forward() owns the client's response: a failure then
// cuts it (the client sees a truncated body, never a second status).
//
// drain(): no new calls for a placement; resolves when its calls through
// this coordinator have ended (rolling updates and scale-down stop a replica
// after it).
import { type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { CodedError } from '../../common/coded-error.js'
import type { Logger } from '../../common/log.js'
import { ERRORS } from '../../protocol/errors.js'
import type { Metrics } from '../metrics.js'
import { downstreamResponseHeaders, flatten, requestIdOf, upstreamRequestHeaders } from './headers.js'
import type { ReadyReplicas, Replica } from './replicas.js'
import { type Dial, ReplicaAgent, UpstreamConnectError } from './upstream.js'

export type GatewayErrorCode =
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'VALIDATION'
  | 'PAYLOAD_TOO_LARGE'
  | 'NO_READY_REPLICA'
  | 'BAD_GATEWAY'
  | 'GATEWAY_TIMEOUT'
  | 'UNAVAILABLE'

/**
 * What a call through the gateway is refused or fails with; rendered as
 * problem+json on /<endpoint>/ routes and as OpenAI's error body on
 * /openai/ routes.
 */
export class GatewayError extends CodedError<GatewayErrorCode> {
  readonly status: number
  constructor(
    code: GatewayErrorCode,
    message: string,
    readonly retryAfterSeconds?: number
  ) {
    super(code, message)
    this.status = ERRORS[code].status
  }
}

export interface ForwardCall {
  /** Workload name. */
  endpoint: string
  method: string
  /** What the replica gets: '/<path>?<query>'. */
  path: string
  /** The client's; forward() strips hop-by-hop ones and adds x-forwarded-*, x-request-id. */
  headers: IncomingHttpHeaders
  /** The client's headers as received (names' case kept); derived from `headers` when absent. */
  rawHeaders?: string[]
  /** The client's request stream, or Readable.from(buffer) for a body already read. */
  body: Readable
  clientAddress: string
  secure: boolean
}

export interface Gateway {
  /**
   * Picks a ready replica (least outstanding, ties random), streams both
   * ways; throws GatewayError before any response byte was sent (the caller
   * renders it); after that, ends the response itself.
   */
  forward(call: ForwardCall, res: ServerResponse): Promise<void>
  /**
   * Stops sending new calls to a placement and resolves when its calls in
   * flight (on this coordinator) have ended, or after timeoutMs.
   */
  drain(placementId: string, timeoutMs: number): Promise<void>
}

export interface GatewayLimits {
  /** Per-call idle timeout: no byte either way for this long ends the call (GPUMESH_GATEWAY_TIMEOUT_MS). */
  timeoutMs: number
  /** Largest request body (GPUMESH_GATEWAY_MAX_BODY_BYTES): 413 over it. */
  maxBodyBytes: number
  /** Largest response body (GPUMESH_GATEWAY_MAX_RESPONSE_BYTES): the response is cut over it. */
  maxResponseBytes: number
}

export const DEFAULT_LIMITS: GatewayLimits = {
  timeoutMs: 300_000,
  maxBodyBytes: 1024 ** 3,
  maxResponseBytes: 16 * 1024 ** 3
}

/** What the client is told to wait before retrying when no replica is ready. */
const RETRY_AFTER_S = 2

type Outcome = { done: true } | { done: false; retry: UpstreamConnectError }

export class MeshGateway implements Gateway {
  private readonly agents = new Map<string, ReplicaAgent>()
  private readonly inFlight = new Map<string, number>()
  private readonly draining = new Map<string, Array<() => void>>()

  constructor(
    private readonly replicas: ReadyReplicas,
    private readonly dial: Dial,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly limits: GatewayLimits = DEFAULT_LIMITS
  ) {
    replicas.onGone((ids) => {
      for (const id of ids) this.forget(id)
    })
  }

  async forward(call: ForwardCall, res: ServerResponse): Promise<void> {
    if (!this.replicas.has(call.endpoint)) throw new GatewayError('NOT_FOUND', `no endpoint named ${call.endpoint}`)
    const requestId = requestIdOf(call.headers)
    const tried = new Set<string>()
    let failure: UpstreamConnectError | null = null
    // A replica that cannot be reached was sent nothing: one more on another replica.
    for (let attempt = 0; attempt < 2; attempt++) {
      const replica = this.pick(call.endpoint, tried)
      if (replica === null) break
      tried.add(replica.placementId)
      const outcome = await this.attempt(replica, call, res, requestId)
      if (outcome.done) return
      failure = outcome.retry
      // A stale kept-alive stream says nothing against the replica: it may take the call again.
      if (failure.code === 'ERR_STALE') {
        tried.delete(replica.placementId)
        continue
      }
      this.replicas.setAside(replica.placementId)
      this.log.warn(
        { endpoint: call.endpoint, placement: replica.placementId, code: failure.code, err: failure.message },
        'gateway: replica unreachable'
      )
    }
    throw new GatewayError(
      'NO_READY_REPLICA',
      failure === null
        ? `endpoint ${call.endpoint} has no ready replica now`
        : `no replica of endpoint ${call.endpoint} could be reached (${failure.message})`,
      RETRY_AFTER_S
    )
  }

  async drain(placementId: string, timeoutMs: number): Promise<void> {
    const waiters = this.draining.get(placementId) ?? []
    this.draining.set(placementId, waiters)
    if ((this.inFlight.get(placementId) ?? 0) === 0) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      waiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Whether calls may go to this placement now (ready, known to this coordinator, not draining). */
  routable(placementId: string): boolean {
    return this.replicas.get(placementId) !== undefined && !this.draining.has(placementId)
  }

  /** Calls in flight through this coordinator to a placement. */
  inFlightTo(placementId: string): number {
    return this.inFlight.get(placementId) ?? 0
  }

  /** Closes every kept-alive upstream stream (coordinator shutdown). */
  close(): void {
    for (const agent of this.agents.values()) agent.destroy()
    this.agents.clear()
  }

  /** Least outstanding calls, ties at random (reservoir: each tie equally likely). */
  private pick(endpoint: string, tried: Set<string>): Replica | null {
    let best: Replica | null = null
    let bestLoad = Infinity
    let ties = 0
    for (const r of this.replicas.ready(endpoint)) {
      if (tried.has(r.placementId) || this.draining.has(r.placementId)) continue
      const load = this.inFlight.get(r.placementId) ?? 0
      if (load < bestLoad) {
        best = r
        bestLoad = load
        ties = 1
      } else if (load === bestLoad && Math.random() * ++ties < 1) best = r
    }
    return best
  }

  private agentFor(replica: Replica): ReplicaAgent {
    let agent = this.agents.get(replica.placementId)
    if (agent === undefined) {
      agent = new ReplicaAgent(this.dial, replica)
      this.agents.set(replica.placementId, agent)
    }
    return agent
  }

  /** A placement left the ready set: its pooled streams close, its drain waiters are let go. */
  private forget(placementId: string): void {
    this.agents.get(placementId)?.destroy()
    this.agents.delete(placementId)
    for (const w of this.draining.get(placementId) ?? []) w()
    this.draining.delete(placementId)
  }

  private track(replica: Replica, delta: 1 | -1): void {
    const n = (this.inFlight.get(replica.placementId) ?? 0) + delta
    const labels = { endpoint: replica.endpoint, placement: replica.placementId }
    if (n === 0) {
      this.inFlight.delete(replica.placementId)
      this.metrics.gatewayInFlight.remove(labels)
      const waiters = this.draining.get(replica.placementId)
      if (waiters !== undefined) {
        this.draining.set(replica.placementId, [])
        for (const w of waiters) w()
      }
    } else {
      this.inFlight.set(replica.placementId, n)
      this.metrics.gatewayInFlight.set(labels, n)
    }
  }

  /**
   * One try on one replica. Resolves done once the call has ended (response
   * sent, cut, or the client gone), or with the connect error to retry on;
   * rejects with a GatewayError before any response byte.
   */
  private attempt(replica: Replica, call: ForwardCall, res: ServerResponse, requestId: string): Promise<Outcome> {
    const { limits } = this
    return new Promise<Outcome>((resolve, reject) => {
      let settled = false
      let connected = false
      let responded = false
      this.track(replica, 1)
      const settle = (f: () => void) => {
        if (settled) return
        settled = true
        this.track(replica, -1)
        f()
      }
      let req: ReturnType<typeof request>
      try {
        req = request({
          agent: this.agentFor(replica),
          method: call.method,
          path: call.path,
          setHost: false,
          headers: upstreamRequestHeaders(call.rawHeaders ?? flatten(call.headers), call.headers, requestId, {
            clientAddress: call.clientAddress,
            secure: call.secure,
            upstreamHost: `127.0.0.1:${replica.port}`
          }) as unknown as Record<string, string>,
          timeout: limits.timeoutMs
        })
      } catch (err) {
        settle(() => reject(new GatewayError('VALIDATION', (err as Error).message)))
        return
      }

      // The client went away: the replica's request is cut too (the agent closes its connection).
      const onClientGone = () => {
        if (!res.writableFinished) req.destroy(new Error('the client went away'))
      }
      res.once('close', onClientGone)

      let bodyBytes = 0
      req.on('socket', () => {
        connected = true
        this.sendBody(call.body, req, limits.maxBodyBytes, (n) => {
          bodyBytes += n
        })
      })
      req.on('timeout', () => {
        req.destroy(
          new GatewayError(
            'GATEWAY_TIMEOUT',
            `replica ${replica.placementId} sent nothing for ${limits.timeoutMs / 1000} s`
          )
        )
      })
      req.on('error', (err) => {
        res.off('close', onClientGone)
        if (responded) {
          res.destroy()
          settle(() => resolve({ done: true }))
        } else if (res.destroyed || res.writableEnded) settle(() => resolve({ done: true }))
        else if (!connected && err instanceof UpstreamConnectError) settle(() => resolve({ done: false, retry: err }))
        else if (req.reusedSocket && bodyBytes === 0 && !(err instanceof GatewayError))
          // A kept-alive stream the replica closed as the call went down it: nothing of the body
          // was used up, so the call can go again (Node.js's own advice for reused sockets).
          settle(() =>
            resolve({
              done: false,
              retry: new UpstreamConnectError('ERR_STALE', `a kept-alive connection closed: ${err.message}`)
            })
          )
        else if (err instanceof GatewayError) settle(() => reject(err))
        else
          settle(() =>
            reject(
              new GatewayError('BAD_GATEWAY', `replica ${replica.placementId} failed before answering: ${err.message}`)
            )
          )
      })
      req.on('response', (up: IncomingMessage) => {
        responded = true
        this.relayResponse(
          up,
          res,
          replica,
          requestId,
          () => {
            res.off('close', onClientGone)
            settle(() => resolve({ done: true }))
          },
          req
        )
      })
    })
  }

  /** The client's body to the replica, paused while the stream cannot take more, cut over the limit. */
  private sendBody(body: Readable, req: ReturnType<typeof request>, max: number, onBytes: (n: number) => void): void {
    // An empty body already read to its end by an earlier try: there is nothing more to read.
    if (body.readableEnded) {
      req.end()
      return
    }
    let sent = 0
    body.on('data', (chunk: Buffer) => {
      onBytes(chunk.length)
      sent += chunk.length
      if (sent > max) {
        body.pause()
        req.destroy(new GatewayError('PAYLOAD_TOO_LARGE', `the body is larger than ${max} bytes`))
        return
      }
      if (!req.write(chunk)) body.pause()
    })
    req.on('drain', () => body.resume())
    body.once('end', () => req.end())
    body.once('error', (err) => req.destroy(err))
    body.resume()
  }

  private relayResponse(
    up: IncomingMessage,
    res: ServerResponse,
    replica: Replica,
    requestId: string,
    done: () => void,
    req: ReturnType<typeof request>
  ): void {
    if (res.destroyed) {
      req.destroy()
      done()
      return
    }
    const headers = downstreamResponseHeaders(up.rawHeaders, up.headers)
    headers.push('x-gpumesh-placement', replica.placementId, 'x-request-id', requestId)
    res.writeHead(up.statusCode ?? 502, up.statusMessage, headers)
    // SSE and other slow streams: each chunk leaves as it arrives (Nagle off on the client's socket).
    res.socket?.setNoDelay(true)
    let received = 0
    const max = this.limits.maxResponseBytes
    up.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (received > max) {
        this.log.warn({ placement: replica.placementId, max }, 'gateway: response over the limit, cut')
        req.destroy()
        res.destroy()
        return
      }
      if (!res.write(chunk)) up.pause()
    })
    res.on('drain', () => up.resume())
    up.once('end', () => {
      if (up.complete) res.end()
      else res.destroy()
    })
    up.once('error', () => res.destroy())
    res.once('close', done)
  }
}
