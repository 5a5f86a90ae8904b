// An endpoint replica's port must be free before its process starts: taken
// by another process, the replica could not listen, and the readiness probe
// and the gateway would talk to that other process instead. The launch then
// fails with the reason; the coordinator places the replica again, on
// another port (coordinator/store/ports.ts chooses at random).
import { createServer } from 'node:net'

/** Null when 127.0.0.1:`port` can be listened on (and so on no wildcard address either), else why not. */
export async function portProblem(port: number): Promise<string | null> {
  return await new Promise((resolve) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) => {
      resolve(
        err.code === 'EADDRINUSE'
          ? `port ${port} is in use on this host by another process`
          : `cannot listen on port ${port}: ${err.message}`
      )
    })
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
      server.close(() => resolve(null))
    })
  })
}
