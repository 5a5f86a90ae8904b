// Yamux window updates once half a stream's receive window is used, as Go's
// yamux sends them, instead of after every data frame (@libp2p/yamux 8 has
// no option for it). A request and its response are one data frame each way:
// each used to be answered by a window-update frame of its own, and a frame
// costs its encryption twice (Noise, pnet) and its share of a TCP write on
// both ends. The sender is never held up by it: it still has half a window
// to send when the update goes out.
import { StreamState, YamuxStream } from '@libp2p/yamux/stream'

interface WindowState {
  state: StreamState
  recvWindow: number
  recvWindowCapacity: number
}

let applied = false

/** Applies to every yamux stream of this process from now on (idempotent). */
export function lazyWindowUpdates(): void {
  if (applied) return
  applied = true
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(this: WindowState): void }
  const eager = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowState) {
    // Opening a stream (SYN, ACK) and a paused stream go the library's way.
    if (this.state === StreamState.Established && this.recvWindowCapacity > this.recvWindow / 2) return
    eager.call(this)
  }
}
