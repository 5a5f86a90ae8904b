// What the agent's relays (session attach, gateway calls) share: who may open
// their streams, and the byte pipe between a libp2p stream and a local
// socket.
//
// Only coordinator peers (the /p2p/ ids of GPUMESH_COORDINATOR) may open a
// relay stream: each reaches into a placement on this host (a terminal, a
// replica's port), and the coordinator is where callers are authorized.
//
// Backpressure is passed along, not absorbed: a socket that cannot take more
// pauses the libp2p stream (yamux then stops the coordinator), and a stream
// that cannot send pauses reading from the socket.
import type { Socket } from 'node:net'
import type { Stream } from '@libp2p/interface'
import { bytes, resume } from '../../common/mesh/stream-bytes.js'

/** The peer id at the end of a multiaddr (`.../p2p/<id>`), or null. */
export function peerIdOf(addr: string): string | null {
  return /\/p2p\/([^/]+)\/?$/.exec(addr)?.[1] ?? null
}

/** The peer ids of the coordinators' multiaddrs: the only peers a relay serves. */
export function coordinatorPeers(coordinators: string[]): Set<string> {
  return new Set(coordinators.map(peerIdOf).filter((p): p is string => p !== null))
}

/**
 * Joins `stream` and a connected `socket` until either ends: bytes pass
 * unchanged both ways. The remote closing its write side ends the socket's
 * write side (a half close); the socket closing closes the stream. `onClose`
 * runs once, when both are done with.
 */
export function pipeSocket(stream: Stream, socket: Socket, onClose: () => void): void {
  let closed = false
  const done = () => {
    if (closed) return
    closed = true
    onClose()
  }
  socket.on('error', () => {})
  // stream -> socket
  stream.addEventListener('message', (e) => {
    if (!socket.write(bytes(e.data))) stream.pause()
  })
  socket.on('drain', () => {
    resume(stream)
  })
  stream.addEventListener('remoteCloseWrite', () => {
    socket.end()
  })
  // socket -> stream
  socket.on('data', (chunk) => {
    try {
      if (!stream.send(chunk)) {
        socket.pause()
        stream.onDrain().then(
          () => socket.resume(),
          () => socket.destroy()
        )
      }
    } catch {
      socket.destroy()
    }
  })
  socket.on('close', () => {
    done()
    void stream.close({ signal: AbortSignal.timeout(5000) }).catch(() => stream.abort(new Error('socket closed')))
  })
  stream.addEventListener('close', () => {
    done()
    socket.destroy()
  })
  resume(stream) // now that its listeners are there: what arrived meanwhile goes to the socket
}
