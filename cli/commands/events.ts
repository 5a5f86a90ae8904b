// gpumesh events: the event log (GET /v1/events, server-sent events).
// The API's stream never ends by itself, so "what is there up to now" is the
// stream read until it goes quiet or reaches events newer than the request;
// --follow keeps reading and resumes with Last-Event-ID after a disconnect,
// so no event is lost or repeated across reconnects.
import { InvalidArgumentError, type Command } from 'commander'
import type { Event } from '../../protocol/api.js'
import { UnreachableError, isTransient, networkReason, type ApiClient } from '../client.js'
import { contextOf, write } from '../config.js'
import { eventHeader, eventLine } from '../render.js'
import { SseParser, type SseMessage } from '../../protocol/sse.js'
import { sleep } from '../../common/daemon/sleep.js'

/** Without --follow: this long without a byte means the backlog is all read. */
const QUIET_MS = 1000
/** With --follow: the server sends a keep-alive every 15 s; three missed means the connection is dead. */
const STALL_MS = 45_000
/** How long to wait for the response headers. */
const CONNECT_MS = 30_000
const RETRY_MIN_MS = 1000
const RETRY_MAX_MS = 15_000

function eventId(value: string): number {
  if (!/^\d{1,15}$/.test(value))
    throw new InvalidArgumentError('must be an event id (a whole number, 0 for the beginning)')
  return Number(value)
}

type Outcome = 'ended' | 'quiet' | 'stopped'

interface StreamOptions {
  follow: boolean
  after: number
  /** Called per event; true stops reading. */
  onEvent: (e: Event) => Promise<boolean>
  /** Reconnect notices (follow mode). */
  notice: (text: string) => void
}

/** What one connection reports back to the reconnect loop. */
interface Progress {
  /** The response headers arrived with 200. */
  connected: () => void
  /** An event was printed; its SSE id is the resume point. */
  printed: (id: string | null) => void
  /** The server asked for this reconnection delay. */
  retry: (ms: number) => void
}

/** One connection: resolves how it ended; throws on network or HTTP errors. */
async function readOnce(
  client: ApiClient,
  lastId: string | null,
  o: StreamOptions,
  progress: Progress
): Promise<Outcome> {
  const controller = new AbortController()
  let connectTimedOut = false
  const connectTimer = setTimeout(() => {
    connectTimedOut = true
    controller.abort()
  }, CONNECT_MS)
  let res: Response
  try {
    res = await client.fetch(lastId === null ? `/v1/events?after=${o.after}` : '/v1/events', {
      headers: { accept: 'text/event-stream', ...(lastId === null ? {} : { 'last-event-id': lastId }) },
      signal: controller.signal
    })
  } catch (err) {
    if (connectTimedOut) throw new UnreachableError(client.api, `no answer in ${CONNECT_MS / 1000} s`)
    throw err
  } finally {
    clearTimeout(connectTimer)
  }
  if (!res.ok) throw await client.errorFrom(res)
  progress.connected()
  if (res.body === null) return 'ended'

  // The server's clock says what "now" is; Date has whole seconds, so the rest of that second counts as now.
  const serverNow = Date.parse(res.headers.get('date') ?? '')
  const cutoff = (Number.isNaN(serverNow) ? Date.now() : serverNow) + 1000
  const parser = new SseParser()
  const decoder = new TextDecoder()
  let quiet = false
  let handling = false
  const idleMs = o.follow ? STALL_MS : QUIET_MS
  let timer = setTimeout(() => {
    quiet = true
    controller.abort()
  }, idleMs)
  try {
    for await (const chunk of res.body) {
      clearTimeout(timer)
      timer = setTimeout(() => {
        quiet = true
        controller.abort()
      }, idleMs)
      for (const m of parser.push(decoder.decode(chunk as Uint8Array, { stream: true }))) {
        if (parser.retryMs !== null) progress.retry(parser.retryMs)
        const e = toEvent(m, o.notice)
        if (e === null) continue
        if (!o.follow && Date.parse(e.at) > cutoff) return 'stopped'
        handling = true
        if (await o.onEvent(e)) return 'stopped'
        handling = false
        progress.printed(m.id)
      }
    }
    return 'ended'
  } catch (err) {
    if (quiet) return 'quiet'
    if (handling) throw err
    throw new UnreachableError(client.api, `the event stream broke off: ${networkReason(err)}`)
  } finally {
    clearTimeout(timer)
    controller.abort()
  }
}

function toEvent(m: SseMessage, notice: (text: string) => void): Event | null {
  try {
    const e = JSON.parse(m.data) as Event
    if (typeof e === 'object' && e !== null && typeof e.id === 'number' && typeof e.type === 'string') return e
  } catch {}
  notice(`skipped an event that is not an API event: ${m.data.slice(0, 100)}`)
  return null
}

export async function streamEvents(client: ApiClient, o: StreamOptions): Promise<void> {
  let lastId: string | null = null
  let retryMs = RETRY_MIN_MS
  let failures = 0
  let connected = false
  for (;;) {
    let progressed = false
    let outcome: Outcome
    try {
      outcome = await readOnce(client, lastId, o, {
        connected: () => {
          connected = true
        },
        printed: (id) => {
          progressed = true
          if (id !== null) lastId = id
        },
        retry: (ms) => {
          retryMs = Math.max(ms, 100)
        }
      })
    } catch (err) {
      // Without --follow, or before the first answer, a failure is the command's result.
      if (!o.follow || !connected) throw err
      // Refused tokens, bad requests: retrying will not help.
      if (!isTransient(err)) throw err
      failures = progressed ? 1 : failures + 1
      const delay = Math.min(RETRY_MAX_MS, retryMs * 2 ** (failures - 1))
      o.notice(
        `event stream interrupted (${err instanceof UnreachableError ? err.reason : (err as Error).message}); reconnecting in ${Math.round(delay / 100) / 10} s`
      )
      await sleep(delay)
      continue
    }
    if (!o.follow || outcome === 'stopped') return
    // The server closed a healthy stream (restart, proxy timeout) or it stalled: resume where it stopped.
    failures = progressed ? 0 : failures + 1
    const delay = outcome === 'quiet' ? 0 : Math.min(RETRY_MAX_MS, retryMs * 2 ** Math.max(0, failures - 1))
    o.notice(
      `event stream ${outcome === 'quiet' ? 'stalled' : 'closed by the server'}; reconnecting${delay === 0 ? '' : ` in ${Math.round(delay / 100) / 10} s`}`
    )
    if (delay > 0) await sleep(delay)
  }
}

export function eventCommands(program: Command): void {
  program
    .command('events')
    .description('print the event log up to now (or keep following it): id, time, type, subject, data')
    .option('--follow', 'keep printing new events; reconnects and resumes after a disconnect')
    .option('--after <id>', 'start after this event id (default 0: from the first event)', eventId)
    .action(async (o: { follow?: boolean; after?: number }, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      const asJson = flags.json === true
      if (!asJson) await write(eventHeader())
      await streamEvents(client, {
        follow: o.follow === true,
        after: o.after ?? 0,
        onEvent: async (e) => {
          await write(asJson ? `${JSON.stringify(e)}\n` : eventLine(e))
          return false
        },
        notice: (text) => {
          process.stderr.write(`gpumesh: ${text}\n`)
        }
      })
    })
}
