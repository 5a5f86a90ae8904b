// Connections to endpoint replicas: one http.Agent per replica whose sockets
// are `/gpumesh/gateway/1` streams to the replica's agent (StreamSocket).
// Keep-alive reuses a stream for the next call as it would a TCP connection,
// so a warm call costs no stream opening and no round trip to the agent.
import { Agent, type ClientRequestArgs } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Connection, Stream } from '@libp2p/interface'
import { CodedError } from '../../common/coded-error.js'
import { firstFrame } from '../../common/mesh/stream-bytes.js'
import {
  GATEWAY_PROTOCOL,
  GATEWAY_VERSION,
  GatewayReply,
  type GatewayRefusalCode,
  MAX_GATEWAY_FRAME
} from '../../protocol/gateway.js'
import { encodeJsonFrame, TAG_CONTROL } from '../../protocol/session.js'
import { isValid } from '../../protocol/validate.js'
import type { Replica } from './replicas.js'
import { StreamSocket } from './stream-socket.js'

export type Dial = (
  peerId: string,
  protocol: string,
  signal: AbortSignal
) => Promise<{ stream: Stream; connection: Connection }>

/** Opening a stream and the agent's connect to the replica, together. */
const CONNECT_TIMEOUT_MS = 5000
/**
 * A kept-alive stream unused this long is closed (a replica's own keep-alive
 * hint may shorten it): below the 5 s after which Node.js and uvicorn servers
 * close an idle connection themselves, so the gateway rarely sends a call
 * down a connection the replica is closing.
 */
const IDLE_STREAM_MS = 4000

/** The replica could not be reached: nothing was sent to it, so another may be tried. */
export class UpstreamConnectError extends CodedError<GatewayRefusalCode | 'ERR_DIAL' | 'ERR_STALE'> {}

/** Opens a stream to the replica's agent and waits for its `connected`. */
export async function openUpstream(dial: Dial, replica: Replica): Promise<StreamSocket> {
  const signal = AbortSignal.timeout(CONNECT_TIMEOUT_MS)
  let stream: Stream
  try {
    ;({ stream } = await dial(replica.peerId, GATEWAY_PROTOCOL, signal))
  } catch (err) {
    throw new UpstreamConnectError('ERR_DIAL', `cannot open a stream to the replica's host: ${(err as Error).message}`)
  }
  try {
    stream.send(encodeJsonFrame({ v: GATEWAY_VERSION, type: 'open', placementId: replica.placementId }))
    const { frame, rest } = await firstFrame(stream, CONNECT_TIMEOUT_MS, MAX_GATEWAY_FRAME)
    const reply = frame.tag === TAG_CONTROL ? frame.value : null
    if (!isValid(GatewayReply, reply))
      throw new UpstreamConnectError('ERR_FRAME', "the replica's agent answered with something other than a reply")
    if (reply.type === 'error') throw new UpstreamConnectError(reply.code, reply.message)
    return new StreamSocket(stream, rest)
  } catch (err) {
    stream.abort(err as Error)
    if (err instanceof UpstreamConnectError) throw err
    throw new UpstreamConnectError('ERR_DIAL', `no answer from the replica's host: ${(err as Error).message}`)
  }
}

/** The keep-alive pool of one replica. */
export class ReplicaAgent extends Agent {
  constructor(
    private readonly dial: Dial,
    private readonly replica: Replica
  ) {
    // lifo: the warmest stream first, so idle ones age out.
    super({ keepAlive: true, maxFreeSockets: 256, timeout: IDLE_STREAM_MS, scheduling: 'lifo' })
  }

  override createConnection(
    _options: ClientRequestArgs,
    callback?: (err: Error | null, socket: Duplex) => void
  ): Duplex {
    openUpstream(this.dial, this.replica).then(
      (socket) => callback?.(null, socket),
      (err: Error) => callback?.(err, undefined as never)
    )
    // node:http waits for the callback when createConnection returns nothing.
    return undefined as never
  }
}
