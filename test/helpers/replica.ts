// An endpoint replica for serving tests and benches: a real HTTP server on
// 127.0.0.1:$PORT, started by the agent like any placement's process.
//
//   GET  /health          503 until REPLICA_READY_DELAY_MS after start (default 0), then 200;
//                         always 503 when REPLICA_NEVER_READY=1
//   POST /control/fail-health?n=N   the next N /health answers are 503 (no n: all of them; n=0: none)
//   ANY  /echo...         200 JSON: method, url, headers, bytes and sha256 of the body, placement, pid
//   GET  /sse?n=5&ms=200  text/event-stream: n events `data: {"i":k}` one every ms, then `data: [DONE]`
//   GET  /hang            sends headers, then nothing until the client goes; counts aborts at /stats
//   GET  /silent          sends nothing at all (no headers) until the client goes; counts aborts at /stats
//   GET  /bytes?n=N       200 with N bytes of "x" (content-length N), written in 64 KiB pieces
//   GET  /stats           JSON: requests seen, aborted requests, /health requests seen and failures still to come
//   POST /v1/chat/completions, /v1/completions, /v1/embeddings, GET /v1/models
//                         OpenAI-format answers (chat streams chunks when the body says stream: true)
//
// It prints `listening <port>` on stdout once it listens, and each request as
// `request <method> <url>` (tests read both through `gpumesh logs`).
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'

const port = Number(process.env.PORT)
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('replica: PORT is not set\n')
  process.exit(2)
}
const started = Date.now()
const readyDelayMs = Number(process.env.REPLICA_READY_DELAY_MS ?? 0)
const neverReady = process.env.REPLICA_NEVER_READY === '1'
const placement = process.env.GPUMESH_PLACEMENT_ID ?? null
const stats = { requests: 0, aborted: 0, health: 0, healthFailuresLeft: 0 }

const json = (res: ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function readBody(req: IncomingMessage): Promise<{ bytes: number; sha256: string; text: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  const head: Buffer[] = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    hash.update(chunk)
    bytes += chunk.length
    if (bytes <= 1024 * 1024) head.push(chunk)
  }
  return { bytes, sha256: hash.digest('hex'), text: Buffer.concat(head).toString('utf8') }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function sse(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const n = Number(url.searchParams.get('n') ?? 5)
  const ms = Number(url.searchParams.get('ms') ?? 200)
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  let gone = false
  req.on('close', () => {
    gone = !res.writableFinished
  })
  for (let i = 0; i < n && !gone; i++) {
    res.write(`data: ${JSON.stringify({ i, at: Date.now(), placement })}\n\n`)
    await sleep(ms)
  }
  res.end('data: [DONE]\n\n')
}

async function bytes(res: ServerResponse, n: number): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n })
  const piece = Buffer.alloc(64 * 1024, 'x')
  for (let left = n; left > 0 && !res.destroyed; left -= piece.length) {
    if (!res.write(left >= piece.length ? piece : piece.subarray(0, left)))
      await new Promise((resolve) => {
        res.once('drain', resolve)
        res.once('close', resolve)
      })
  }
  res.end()
}

async function openai(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  if (path === '/v1/models') return json(res, 200, { object: 'list', data: [] })
  const body = JSON.parse((await readBody(req)).text || '{}') as { model?: string; stream?: boolean; input?: unknown }
  const model = body.model ?? 'unknown'
  const created = Math.floor(Date.now() / 1000)
  if (path === '/v1/embeddings')
    return json(res, 200, {
      object: 'list',
      model,
      data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2, 0.3] }],
      usage: { prompt_tokens: 1, total_tokens: 1 }
    })
  if (path === '/v1/completions')
    return json(res, 200, {
      id: 'cmpl-1',
      object: 'text_completion',
      created,
      model,
      choices: [{ index: 0, text: `hello from ${placement}`, finish_reason: 'stop', logprobs: null }]
    })
  const words = ['hello', ' from', ' a', ' gpumesh', ' replica']
  if (body.stream !== true)
    return json(res, 200, {
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: words.join('') }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 1, completion_tokens: words.length, total_tokens: words.length + 1 }
    })
  const ms = Number(process.env.REPLICA_TOKEN_MS ?? 100)
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  for (const [i, word] of words.entries()) {
    const chunk = {
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [
        { index: 0, delta: i === 0 ? { role: 'assistant', content: word } : { content: word }, finish_reason: null }
      ]
    }
    res.write(`data: ${JSON.stringify(chunk)}\n\n`)
    await sleep(ms)
  }
  res.write(
    `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`
  )
  res.end('data: [DONE]\n\n')
}

const server = createServer((req, res) => {
  stats.requests++
  const url = new URL(req.url ?? '/', 'http://replica')
  process.stdout.write(`request ${req.method} ${req.url}\n`)
  const done = (p: Promise<void>) =>
    p.catch((err: Error) => {
      if (!res.headersSent) json(res, 500, { error: err.message })
      else res.destroy()
    })
  if (url.pathname === '/health') {
    stats.health++
    const failing = stats.healthFailuresLeft > 0
    if (failing) stats.healthFailuresLeft--
    const ready = !neverReady && !failing && Date.now() - started >= readyDelayMs
    return json(res, ready ? 200 : 503, { ready })
  }
  if (url.pathname === '/control/fail-health' && req.method === 'POST') {
    const n = url.searchParams.get('n')
    stats.healthFailuresLeft = n === null ? Number.POSITIVE_INFINITY : Number(n)
    return json(res, 200, stats)
  }
  if (url.pathname === '/stats') return json(res, 200, stats)
  if (url.pathname.startsWith('/echo'))
    return done(
      readBody(req).then(({ bytes, sha256 }) =>
        json(res, 200, {
          method: req.method,
          url: req.url,
          headers: req.headers,
          bytes,
          sha256,
          placement,
          pid: process.pid
        })
      )
    )
  if (url.pathname === '/sse') return done(sse(req, res, url))
  if (url.pathname === '/hang') {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('waiting\n')
    req.on('close', () => {
      stats.aborted++
      process.stdout.write('hang aborted\n')
    })
    return
  }
  if (url.pathname === '/silent') {
    req.on('close', () => {
      stats.aborted++
    })
    return
  }
  if (url.pathname === '/bytes') return done(bytes(res, Number(url.searchParams.get('n') ?? 0)))
  if (url.pathname.startsWith('/v1/')) return done(openai(req, res, url.pathname))
  json(res, 404, { error: `no route ${url.pathname}` })
})
server.keepAliveTimeout = 60_000
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${port}\n`)
})
const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
