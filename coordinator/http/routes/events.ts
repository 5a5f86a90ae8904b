// GET /v1/events: the outbox as server-sent events, from PostgreSQL (works
// without Redis). Resumes after Last-Event-ID (or ?after=); a new client
// without either gets events from now on. A slow client is not buffered
// without bound: the stream waits for the socket to drain.
import { once } from 'node:events'
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Notifier } from '../../events/notifier.js'
import type { Pool } from '../../store/db.js'
import { lastEventId, readEvents, readTeamEvents } from '../../store/events.js'
import { responses } from '../schemas.js'
import { scopeOf } from '../auth.js'

const BATCH = 500
const POLL_MS = 1000
const KEEPALIVE_MS = 15_000

export const eventRoutes =
  (pool: Pool, notifier: Notifier): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/v1/events',
      {
        schema: {
          operationId: 'streamEvents',
          tags: ['events'],
          summary: 'Server-sent events; resumable with Last-Event-ID',
          querystring: Type.Object(
            // Past 2^53 a number is no longer exact: the stream would resume from another event.
            { after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })) },
            { additionalProperties: false }
          ),
          headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })) }),
          response: responses({ 200: Type.String({ description: 'text/event-stream' }) })
        }
      },
      async (req, reply) => {
        const header = req.headers['last-event-id']
        let cursor = typeof header === 'string' ? Number(header) : (req.query.after ?? (await lastEventId(pool)))
        const scope = scopeOf(req)
        const allEvents = async (after: number) => {
          const events = await readEvents(pool, after, BATCH)
          return { events, scanned: events.length, scannedTo: events.at(-1)?.id ?? after }
        }
        const abort = new AbortController()
        req.raw.on('close', () => abort.abort())
        reply.hijack()
        const out = reply.raw
        out.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-store',
          connection: 'keep-alive',
          'x-accel-buffering': 'no'
        })
        out.write(': gpumesh events\n\n')
        let lastWrite = Date.now()
        try {
          while (!abort.signal.aborted) {
            const read =
              scope.teamId === null ? await allEvents(cursor) : await readTeamEvents(pool, cursor, BATCH, scope.teamId)
            const events = read.events
            for (const e of events) {
              const ok = out.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`)
              cursor = e.id
              if (!ok) await once(out, 'drain', { signal: abort.signal })
            }
            cursor = Math.max(cursor, read.scannedTo)
            if (events.length > 0) lastWrite = Date.now()
            else if (Date.now() - lastWrite > KEEPALIVE_MS) {
              out.write(': keep-alive\n\n')
              lastWrite = Date.now()
            }
            if (read.scanned < BATCH) await notifier.wait(POLL_MS, abort.signal)
          }
        } catch (err) {
          if (!abort.signal.aborted) req.log.warn({ err: (err as Error).message }, 'event stream ended')
        } finally {
          out.end()
        }
      }
    )
  }
