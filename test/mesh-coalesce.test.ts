// Write coalescing on the mesh (common/mesh/coalesce-writes.ts,
// yamux-window.ts) and on the gateway's upstream sockets (StreamSocket):
// fewer TCP writes and frames, the same bytes in the same order, and bulk
// transfers that still flow with window updates sent at half a window.
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import t, { type Test } from 'tap'
import { createClusterKey } from '../common/mesh/cluster-key.js'
import { bytes } from '../common/mesh/stream-bytes.js'
import type { MeshNode } from '../common/mesh/node.js'
import { StreamSocket } from '../coordinator/gateway/stream-socket.js'
import { eventually } from './helpers/eventually.js'
import { bareNode } from './helpers/mesh.js'

async function pair(t: Test): Promise<{ a: MeshNode; b: MeshNode }> {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-coalesce-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const key = await createClusterKey(join(dir, 'cluster.key'))
  return { a: await bareNode(t, key), b: await bareNode(t, key) }
}

const dial = (a: MeshNode, b: MeshNode, protocol: string): Promise<Stream> =>
  a.dialProtocol(b.getMultiaddrs()[0] as never, protocol)

/** Counts the writes of every net.Socket in this process (each is one write or writev syscall) until teardown. */
function countSocketWrites(t: Test): () => number {
  let n = 0
  const proto = Socket.prototype as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>
  const { _write, _writev } = proto
  proto._write = function (this: Socket, ...args: unknown[]) {
    n++
    return _write.apply(this, args)
  }
  proto._writev = function (this: Socket, ...args: unknown[]) {
    n++
    return _writev.apply(this, args)
  }
  t.teardown(() => {
    proto._write = _write
    proto._writev = _writev
  })
  return () => n
}

t.test('frames of many streams written in one turn leave in a few TCP writes, each stream its own bytes', async (t) => {
  const { a, b } = await pair(t)
  await b.handle('/test/echo/1', (stream) => {
    stream.addEventListener('message', (e) => {
      stream.send(e.data)
    })
  })
  // One at a time: libp2p resets some of many streams opened at once to a new peer.
  const streams: Stream[] = []
  for (let i = 0; i < 20; i++) streams.push(await dial(a, b, '/test/echo/1'))
  // Opening is done (SYN, ACK, protocol negotiation) before counting.
  const got = streams.map(() => '')
  for (const [i, s] of streams.entries())
    s.addEventListener('message', (e) => {
      got[i] += Buffer.from(bytes(e.data)).toString()
    })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const writes = countSocketWrites(t)
  for (const [i, s] of streams.entries()) s.send(Buffer.from(`call ${i};`))
  for (const [i, s] of streams.entries()) s.send(Buffer.from(`more ${i};`))
  await eventually(() => got.every((g, i) => g === `call ${i};more ${i};`), 10_000, 'every echo')
  t.same(
    got,
    streams.map((_, i) => `call ${i};more ${i};`),
    'each stream gets back what it sent, in order'
  )
  // 40 frames each way: one write per frame was 80 writes (and 40 window updates on top).
  t.ok(writes() < 20, `the 80 frames took ${writes()} TCP writes`)
})

t.test('a bulk transfer larger than many windows arrives whole, and a close after it is seen after it', async (t) => {
  const { a, b } = await pair(t)
  const received = new Promise<{ length: number; sha: string }>((resolve) => {
    void b.handle('/test/sink/1', (stream) => {
      const hash = createHash('sha256')
      let length = 0
      stream.addEventListener('message', (e) => {
        const chunk = bytes(e.data)
        length += chunk.byteLength
        hash.update(chunk)
      })
      stream.addEventListener('remoteCloseWrite', () => resolve({ length, sha: hash.digest('hex') }))
    })
  })
  const stream = await dial(a, b, '/test/sink/1')
  const sent = createHash('sha256')
  const total = 8 * 1024 * 1024
  for (let i = 0; i < total / 65536; i++) {
    const chunk = Buffer.alloc(65536, i % 251)
    sent.update(chunk)
    if (!stream.send(chunk)) await stream.onDrain()
  }
  await stream.close()
  t.same(await received, { length: total, sha: sent.digest('hex') }, '8 MB through a 256 kB window, intact')
})

t.test('StreamSocket: what the http client writes in one go is one stream message', async (t) => {
  const { a, b } = await pair(t)
  const messages: string[] = []
  const ended = new Promise<void>((resolve) => {
    void b.handle('/test/collect/1', (stream) => {
      stream.addEventListener('message', (e) => {
        messages.push(Buffer.from(bytes(e.data)).toString())
      })
      stream.addEventListener('remoteCloseWrite', () => resolve())
    })
  })
  const socket = new StreamSocket(await dial(a, b, '/test/collect/1'), new Uint8Array())
  const written: string[] = []
  socket.write('POST /echo HTTP/1.1\r\n', () => written.push('head'))
  socket.write('content-length: 2\r\n\r\n', () => written.push('fields'))
  socket.write(Buffer.from('{}'), () => written.push('body'))
  await new Promise<void>((resolve) => setImmediate(resolve))
  socket.write('GET /health HTTP/1.1\r\n\r\n', () => written.push('next'))
  socket.end()
  await ended
  t.same(
    messages,
    ['POST /echo HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}', 'GET /health HTTP/1.1\r\n\r\n'],
    'one message per turn of writes, the bytes unchanged'
  )
  t.same(written, ['head', 'fields', 'body', 'next'], 'every write is called back, in order')
})
