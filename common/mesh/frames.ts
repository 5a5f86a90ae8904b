// Length-prefixed JSON frames on a libp2p stream, checked against a protocol
// schema on receipt. A frame that is too large, not JSON, of an unknown
// version or of the wrong shape is a FrameError; the session answers it with
// an error frame and closes that stream only.
import type { Stream } from '@libp2p/interface'
import type { TSchema, Static } from '@sinclair/typebox'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { CONTROL_VERSION, MAX_FRAME_BYTES } from '../../protocol/control.js'
import { schemaErrors, isValid } from '../../protocol/validate.js'
import { CodedError } from '../coded-error.js'

export class FrameError extends CodedError<
  'ERR_FRAME_TOO_LARGE' | 'ERR_FRAME_JSON' | 'ERR_FRAME_VERSION' | 'ERR_FRAME_SHAPE'
> {}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export class FrameChannel<In extends TSchema, Out extends TSchema> {
  private readonly lp: LengthPrefixedStream<Stream>
  private writing: Promise<void> = Promise.resolve()

  constructor(
    readonly stream: Stream,
    private readonly inSchema: In,
    private readonly outSchema: Out
  ) {
    this.lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES })
  }

  /** Sends a frame; frames leave in call order. */
  async send(frame: Static<Out>): Promise<void> {
    if (!isValid(this.outSchema, frame))
      throw new Error(`refusing to send a malformed frame: ${schemaErrors(this.outSchema, frame, 3).join('; ')}`)
    const bytes = encoder.encode(JSON.stringify(frame))
    const next = this.writing.then(async () => {
      await this.lp.write(bytes)
    })
    this.writing = next.catch(() => {})
    await next
  }

  /** The next frame; null when the remote closed the stream cleanly. */
  async receive(signal?: AbortSignal): Promise<Static<In> | null> {
    let data
    try {
      data = await this.lp.read(signal === undefined ? undefined : { signal })
    } catch (err) {
      const name = (err as Error).name
      // The remote closed its end between frames: a clean end of the session.
      if (name === 'UnexpectedEOFError' && this.stream.remoteWriteStatus === 'closed') return null
      if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError')
        throw new FrameError('ERR_FRAME_TOO_LARGE', `frame larger than ${MAX_FRAME_BYTES} bytes`)
      throw err
    }
    let value: unknown
    try {
      value = JSON.parse(decoder.decode(data.subarray()))
    } catch {
      throw new FrameError('ERR_FRAME_JSON', 'frame is not UTF-8 JSON')
    }
    const v = (value as { v?: unknown } | null)?.v
    if (v !== CONTROL_VERSION)
      throw new FrameError(
        'ERR_FRAME_VERSION',
        `unsupported protocol version ${JSON.stringify(v)} (this side speaks ${CONTROL_VERSION})`
      )
    if (!isValid(this.inSchema, value))
      throw new FrameError('ERR_FRAME_SHAPE', `malformed frame: ${schemaErrors(this.inSchema, value, 3).join('; ')}`)
    return value
  }

  /** Closes both ends, waiting at most `ms` for the remote before resetting the stream. */
  async close(ms = 1000): Promise<void> {
    await this.writing
    await this.stream.close({ signal: AbortSignal.timeout(ms) }).catch(() => {
      this.stream.abort(new Error('closed'))
    })
  }

  abort(reason: string): void {
    this.stream.abort(new Error(reason))
  }
}
