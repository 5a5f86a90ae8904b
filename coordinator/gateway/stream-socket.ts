// A `/gpumesh/gateway/1` stream as the socket node:http's client writes its
// request to and parses the response from (an http.Agent's createConnection
// returns it). Everything the client does to a net.Socket that matters here
// is kept: idle timeouts ('timeout'), half close (end() closes the stream's
// write side), destroy (the stream is reset, so the agent drops its TCP
// connection to the replica: the replica sees its request aborted).
// Backpressure both ways: a full stream holds back write callbacks; a reader
// that stops reading pauses the stream (yamux then stops the agent).
import { Duplex } from 'node:stream'
import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { bytes, resume } from '../../common/mesh/stream-bytes.js'

export class StreamSocket extends Duplex {
  private idleMs = 0
  private idleTimer: NodeJS.Timeout | undefined
  private lastActive = Date.now()
  private corkedForTick = false
  /** For the http client's bookkeeping (it logs and compares them; nothing is dialled). */
  readonly remoteAddress = '127.0.0.1'
  readonly remotePort = 0

  constructor(
    private readonly stream: Stream,
    initial: Uint8Array
  ) {
    super({ allowHalfOpen: true })
    stream.addEventListener('message', (e) => {
      this.touch()
      if (!this.push(bytes(e.data))) stream.pause()
    })
    stream.addEventListener('remoteCloseWrite', () => {
      this.push(null)
    })
    stream.addEventListener('close', (e) => {
      // A clean close after our end() is the end of the connection; anything else is an error to the request.
      this.destroy(e.error)
    })
    if (initial.length > 0) this.push(initial)
  }

  override _read(): void {
    resume(this.stream)
  }

  /**
   * The http client writes a message in pieces (the head, each body chunk, a
   * chunked body's end), each its own stream write and so its own yamux frame
   * and encryption: what it writes in one go (this tick) is held back and
   * sent as one (_writev).
   */
  override write(chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
    if (!this.corkedForTick) {
      this.corkedForTick = true
      this.cork()
      process.nextTick(this.uncorkTick)
    }
    return super.write(chunk, encoding as BufferEncoding, callback as (err?: Error | null) => void)
  }

  private readonly uncorkTick = () => {
    this.corkedForTick = false
    this.uncork()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.send(chunk, callback)
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    const list = new Uint8ArrayList()
    for (const c of chunks) list.append(c.chunk)
    this.send(list, callback)
  }

  private send(data: Uint8Array | Uint8ArrayList, callback: (err?: Error | null) => void): void {
    this.touch()
    try {
      if (this.stream.send(data)) callback()
      else this.stream.onDrain().then(() => callback(), callback)
    } catch (err) {
      callback(err as Error)
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.stream.close().then(
      () => callback(),
      () => callback()
    )
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    clearTimeout(this.idleTimer)
    if (this.stream.status === 'open' || this.stream.status === 'closing')
      this.stream.abort(err ?? new Error('upstream connection closed'))
    callback(err)
  }

  /** As net.Socket: emits 'timeout' after `ms` without bytes either way (0: never). */
  setTimeout(ms: number, onTimeout?: () => void): this {
    this.idleMs = ms
    // As net.Socket: 0 with a callback takes that callback off (http's keep-alive does this after each call).
    if (onTimeout !== undefined) {
      if (ms === 0) this.off('timeout', onTimeout)
      else this.once('timeout', onTimeout)
    }
    clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    this.touch()
    return this
  }

  get timeout(): number {
    return this.idleMs
  }

  // The rest of net.Socket that http.Agent and ClientRequest call: nothing to do on a stream.
  setKeepAlive(): this {
    return this
  }
  setNoDelay(): this {
    return this
  }
  ref(): this {
    return this
  }
  unref(): this {
    return this
  }

  /** Bytes moved: the idle clock restarts (a timestamp; the one timer re-arms itself when it fires early). */
  private touch(): void {
    this.lastActive = Date.now()
    if (this.idleTimer === undefined && this.idleMs > 0) this.arm(this.idleMs)
  }

  private arm(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined
      if (this.destroyed || this.idleMs === 0) return
      const idle = Date.now() - this.lastActive
      if (idle >= this.idleMs) this.emit('timeout')
      else this.arm(this.idleMs - idle)
    }, ms)
    this.idleTimer.unref()
  }
}
