// Fewer TCP writes on mesh connections. Every yamux frame (each stream's
// data, each window update) reaches the TCP socket as its own write, and on
// a busy gateway most of a process's CPU went to those write syscalls. Here
// a connection's socket is corked at its first write in an event-loop turn
// and uncorked once that turn's I/O callbacks have run (setImmediate): the
// frames of every stream written meanwhile leave in one writev. A frame
// waits at most for the rest of the turn, microseconds on a live process.
//
// Applied where libp2p hands over the raw TCP connection: the connection
// protector (pnet) is the first layer above it, so this wraps it. Bytes and
// their order are unchanged; end() (a graceful close) flushes corked bytes
// first, as net.Socket does; an abort drops them as it drops the rest.
import { Socket } from 'node:net'
import type { ConnectionProtector, MessageStream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'

type SendData = (data: Uint8ArrayList) => { sentBytes: number; canSendMore: boolean }

/**
 * Corks `conn`'s socket from its first write in a turn of the event loop
 * until the next check phase. A connection that is not over a net.Socket
 * (another transport) is left as it is. Returns whether it applied.
 */
export function coalesceWrites(conn: MessageStream): boolean {
  // @libp2p/tcp's connection keeps its socket in `socket` and writes each chunk of sendData() to it.
  const c = conn as unknown as { socket?: unknown; sendData?: SendData }
  const socket = c.socket
  const sendData = c.sendData
  if (!(socket instanceof Socket) || typeof sendData !== 'function') return false
  let corked = false
  const uncork = () => {
    corked = false
    socket.uncork()
  }
  c.sendData = (data) => {
    if (!corked && !socket.destroyed) {
      corked = true
      socket.cork()
      setImmediate(uncork)
    }
    return sendData.call(conn, data)
  }
  return true
}

/** `protector` with the writes of each connection it protects coalesced (coalesceWrites). */
export function coalescingProtector<C>(
  protector: (components: C) => ConnectionProtector
): (components: C) => ConnectionProtector {
  return (components) => {
    const inner = protector(components)
    return {
      protect: async (conn, options) => {
        coalesceWrites(conn)
        return await inner.protect(conn, options)
      }
    }
  }
}
