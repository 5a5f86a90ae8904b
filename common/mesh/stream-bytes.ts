// Small helpers for libp2p streams read through their events (backpressure by pause/resume).
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { FrameDecoder, RawFrame } from '../../protocol/session.js'

/** A message's bytes as one array. */
export const bytes = (d: Uint8Array | Uint8ArrayList): Uint8Array => (d instanceof Uint8Array ? d : d.subarray())

/** Resumes reading a stream unless its readable end is closing (resume() throws then). */
export function resume(stream: Stream): void {
  if (stream.readStatus === 'paused') stream.resume()
}

/**
 * The first frame (protocol/session.ts format) a stream carries, and the
 * bytes after it. Rejects with a SessionFrameError on a bad frame, or an
 * Error when none came within `ms` or the stream closed first.
 */
export async function firstFrame(
  stream: Stream,
  decoder: FrameDecoder,
  ms: number
): Promise<{ frame: RawFrame; rest: Uint8Array }> {
  return await new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('close', onClose)
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error(`no frame within ${ms} ms`))
    }, ms)
    const onClose = () => {
      done()
      reject(new Error('the stream closed before its first frame'))
    }
    const onMessage = (e: { data: Parameters<typeof bytes>[0] }) => {
      let frame: RawFrame | undefined
      try {
        frame = decoder.push(bytes(e.data), 1)[0]
      } catch (err) {
        done()
        reject(err)
        return
      }
      if (frame === undefined) return
      done()
      resolve({ frame, rest: decoder.takeRest() })
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('close', onClose)
  })
}
