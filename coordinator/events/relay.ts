// Publishes the outbox, in order, to the Redis stream gpumesh:events. Each
// entry's stream id is "<outbox id>-0", so Redis itself refuses a second copy
// (XADD with an id not above the last): after a crash or a Redis restart the
// relay resends from its cursor and every event arrives exactly once.
// Redis down = events delayed; they wait in PostgreSQL.
import type { Redis } from 'ioredis'
import type { Logger } from '../../common/log.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { readEvents } from '../store/events.js'
import type { Notifier } from './notifier.js'
import { backoff } from './redis.js'

export const EVENT_STREAM = 'gpumesh:events'
const CURSOR = 'redis'
const BATCH = 500
const MAX_LEN = 1_000_000
const ALREADY_THERE = /equal or smaller than the target stream top item/

export class RedisRelay {
  private running = false
  private abort = new AbortController()
  private loop: Promise<void> | null = null

  constructor (private readonly pool: Pool, private readonly redis: Redis, private readonly notifier: Notifier, private readonly log: Logger, private readonly metrics: Metrics) {}

  start (): void {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    this.loop = this.run()
  }

  async stop (): Promise<void> {
    this.running = false
    this.abort.abort()
    await this.loop
  }

  private async run (): Promise<void> {
    let cursor: number | null = null
    let attempt = 0
    while (this.running) {
      try {
        cursor ??= await this.startingPoint()
        const events = await readEvents(this.pool, cursor, BATCH)
        if (events.length > 0) {
          const pipeline = this.redis.pipeline()
          for (const e of events) {
            pipeline.xadd(EVENT_STREAM, 'MAXLEN', '~', MAX_LEN, `${e.id}-0`,
              'id', String(e.id), 'type', e.type, 'subject_kind', e.subject.kind, 'subject_id', e.subject.id, 'data', JSON.stringify(e.data), 'at', e.at)
          }
          const results = await pipeline.exec()
          const failed = (results ?? []).find(([err]) => err !== null && !ALREADY_THERE.test(err.message))
          if (failed?.[0] != null) throw failed[0]
          cursor = (events[events.length - 1] as { id: number }).id
          await this.pool.query(
            'insert into relay_cursors (name, last_id) values ($1, $2) on conflict (name) do update set last_id = excluded.last_id', [CURSOR, cursor])
          this.metrics.eventsRelayed.inc(events.length)
        }
        this.metrics.redisUp.set(1)
        if (attempt > 0) this.log.info('Redis relay recovered')
        attempt = 0
        if (events.length < BATCH) await this.notifier.wait(1000, this.abort.signal)
      } catch (err) {
        this.metrics.redisUp.set(0)
        if (attempt === 0) this.log.warn({ err: (err as Error).message }, 'Redis relay failing; events wait in PostgreSQL')
        // Redis may have restarted empty or ahead of our cursor: re-derive it.
        cursor = null
        await sleep(backoff(attempt++), this.abort.signal)
      }
    }
  }

  /** After the relay's saved cursor, or after the stream's last entry when Redis is ahead (the cursor write was lost). */
  private async startingPoint (): Promise<number> {
    const { rows } = await this.pool.query<{ last_id: number }>('select last_id from relay_cursors where name = $1', [CURSOR])
    const saved = rows[0]?.last_id ?? 0
    const last = await this.redis.xrevrange(EVENT_STREAM, '+', '-', 'COUNT', 1)
    const top = Number((last[0]?.[0] ?? '0-0').split('-')[0])
    return Math.max(saved, top)
  }
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
  })
}
