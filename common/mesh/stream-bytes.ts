// Reading a libp2p stream as bytes, for the relays that speak the session
// framing (protocol/session.ts) first and raw bytes after: the agent's
// session and gateway relays, and the coordinator's gateway upstreams.
import type { Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import { FrameDecoder, type RawFrame } from '../../protocol/session.js'

export const bytes = (d: Uint8Array | Uint8ArrayList): Uint8Array => (d instanceof Uint8Array ? d : d.subarray())

/** Resumes reading a stream unless its readable end is closing (resume() throws then). */
export function resume(stream: Stream): void {
  if (stream.readStatus === 'paused') stream.resume()
}

/**
 * The first frame (session framing) on a relay stream,
 * and the bytes that came after it; rejects with a sentence when it does not
 * come within `timeoutMs` or is not a frame. The stream is left paused
 * (pipeSocket resumes it): what follows waits in it meanwhile.
 */
export function firstFrame(
  stream: Stream,
  timeoutMs: number,
  max?: number
): Promise<{ frame: RawFrame; rest: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder(max)
    const finish = (f: () => void) => {
      // Paused before the caller's callback runs: a message dispatched meanwhile would find no listener.
      stream.pause()
      clearTimeout(timeout)
      stream.removeEventListener('message', onMessage)
      f()
    }
    const timeout = setTimeout(() => finish(() => reject(new Error(`no open frame within ${timeoutMs} ms`))), timeoutMs)
    const onMessage = (e: { data: Uint8Array | Uint8ArrayList }) => {
      let frame: RawFrame | undefined
      try {
        frame = decoder.push(bytes(e.data), 1)[0]
      } catch (err) {
        finish(() => reject(err as Error))
        return
      }
      if (frame !== undefined) {
        const f = frame
        finish(() => resolve({ frame: f, rest: decoder.takeRest() }))
      }
    }
    stream.addEventListener('message', onMessage)
  })
}
