// A WebSocket client for session attach tests: collects terminal output and
// control messages, waits for text in the output, reports how it closed.
import { StringDecoder } from 'node:string_decoder'
import WebSocket from 'ws'
import type { ServerMessage } from '../../protocol/session.js'
import { ADMIN_TOKEN, type TestCoordinator } from './coordinator.js'

export interface AttachClient {
  ws: WebSocket
  /** Terminal output so far, as text. */
  output: () => string
  messages: ServerMessage[]
  /** Resolves with the output once it matches `re` after `from` (an offset into output()). */
  waitFor: (re: RegExp, ms?: number, from?: number) => Promise<string>
  closed: Promise<{ code: number; reason: string }>
  type: (text: string) => void
  resize: (cols: number, rows: number) => void
}

export interface AttachOptions {
  token?: string | null
  cols?: number
  rows?: number
  protocols?: string[]
  headers?: Record<string, string>
}

export function attachUrl(c: TestCoordinator, workloadId: string, o: AttachOptions = {}): string {
  const q = new URLSearchParams()
  if (o.cols !== undefined) q.set('cols', String(o.cols))
  if (o.rows !== undefined) q.set('rows', String(o.rows))
  const query = q.toString()
  return `${c.api.replace(/^http/, 'ws')}/v1/workloads/${workloadId}/attach${query === '' ? '' : `?${query}`}`
}

function connect(c: TestCoordinator, workloadId: string, o: AttachOptions): WebSocket {
  const token = o.token === undefined ? ADMIN_TOKEN : o.token
  const headers: Record<string, string> = { ...o.headers }
  if (token !== null && o.protocols === undefined) headers.authorization = `Bearer ${token}`
  return new WebSocket(attachUrl(c, workloadId, o), o.protocols ?? [], { headers })
}

/** Attaches and waits for the server's `attached` message. */
export async function attach(c: TestCoordinator, workloadId: string, o: AttachOptions = {}): Promise<AttachClient> {
  const ws = connect(c, workloadId, o)
  const decoder = new StringDecoder('utf8')
  let text = ''
  const messages: ServerMessage[] = []
  const waiters = new Set<() => void>()
  const output = () => text
  let closedWith = ''
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      closedWith = `${code} ${reason.toString()}`
      resolve({ code, reason: reason.toString() })
      for (const w of waiters) w()
    })
  })
  let attached!: () => void
  const ready = new Promise<void>((resolve, reject) => {
    attached = resolve
    ws.on('unexpected-response', (_req, res) => {
      reject(new Error(`attach refused: HTTP ${String(res.statusCode)}`))
    })
    ws.on('error', reject)
    void closed.then((c) => reject(new Error(`closed before attached: ${c.code} ${c.reason}`)))
  })
  ws.on('message', (data, isBinary) => {
    if (isBinary) text += decoder.write(data as Buffer)
    else {
      const m = JSON.parse(String(data)) as ServerMessage
      messages.push(m)
      if (m.type === 'attached') attached()
    }
    for (const w of waiters) w()
  })
  await ready
  const waitFor = async (re: RegExp, ms = 30_000, from = 0) =>
    await new Promise<string>((resolve, reject) => {
      // Only the text not yet searched (and a little before it, for a match across chunks): megabytes of output stay linear.
      let scanned = from
      const check = () => {
        const out = output()
        const window = out.slice(Math.max(from, scanned - 1024))
        scanned = out.length
        if (re.test(window)) {
          waiters.delete(check)
          clearTimeout(timer)
          resolve(out)
        } else if (ws.readyState === ws.CLOSED) {
          waiters.delete(check)
          clearTimeout(timer)
          reject(
            new Error(
              `closed (${closedWith}) while waiting for ${String(re)}; output: ${JSON.stringify(out.slice(-100))}`
            )
          )
        }
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`timed out waiting for ${String(re)}; output: ${JSON.stringify(output().slice(-500))}`))
      }, ms)
      waiters.add(check)
      check()
    })
  return {
    ws,
    output,
    messages,
    waitFor,
    closed,
    type: (text) => {
      ws.send(Buffer.from(text), { binary: true })
    },
    resize: (cols, rows) => {
      ws.send(JSON.stringify({ type: 'resize', cols, rows }))
    }
  }
}

/** An attach that must be refused before the upgrade: its HTTP status and problem+json body. */
export async function attachRefused(
  c: TestCoordinator,
  workloadId: string,
  o: AttachOptions = {}
): Promise<{ status: number; body: any }> {
  const ws = connect(c, workloadId, o)
  return await new Promise((resolve, reject) => {
    ws.on('unexpected-response', (req, res) => {
      let text = ''
      res.on('data', (d: Buffer) => {
        text += d.toString()
      })
      res.on('end', () => {
        let body: unknown = text
        try {
          body = JSON.parse(text)
        } catch {}
        req.destroy()
        resolve({ status: res.statusCode ?? 0, body })
      })
    })
    ws.on('open', () => {
      ws.close()
      reject(new Error('the attach was accepted'))
    })
    ws.on('error', () => {})
  })
}
