// Publishes the outbox, in order, to the Redis stream gpumesh:events. Each
// entry's stream id is "<outbox id>-0", so Redis itself refuses a second copy
// (XADD with an id not above the last): after a crash or a Redis restart the
// relay resends from its cursor and every event arrives exactly once.
// Redis down = events delayed; they wait in PostgreSQL.
import type { Redis } from 'ioredis'
import { backoff } from '../../common/daemon/backoff.js'
import { Periodic } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../store/db.js'
import { readEvents } from '../store/events.js'
import type { Notifier } from './notifier.js'

export const EVENT_STREAM = 'gpumesh:events'
const CURSOR = 'redis'
const BATCH = 500
const MAX_LEN = 1_000_000
const ALREADY_THERE = /equal or smaller than the target stream top item/

export class RedisRelay extends Periodic {
  /** Where the stream is known to be; null: to be derived again. */
  private cursor: number | null = null
  private attempt = 0
  /** The run the cursor belongs to: each leadership term derives it again. */
  private term: AbortSignal | null = null

  constructor(
    private readonly pool: Pool,
    private readonly redis: Redis,
    notifier: Notifier,
    private readonly log: Logger,
    private readonly metrics: Metrics
  ) {
    super({ name: 'Redis relay', everyMs: 1000, wait: notifier.wait.bind(notifier), log })
  }

  /** One batch; the milliseconds to wait before the next when it should not wait for a new event. */
  protected async tick(term: AbortSignal): Promise<number | undefined> {
    if (this.term !== term) {
      this.term = term
      this.cursor = null
      this.attempt = 0
    }
    try {
      this.cursor ??= await this.startingPoint()
      const events = await readEvents(this.pool, this.cursor, BATCH)
      if (events.length > 0) {
        const pipeline = this.redis.pipeline()
        for (const e of events) {
          pipeline.xadd(
            EVENT_STREAM,
            'MAXLEN',
            '~',
            MAX_LEN,
            `${e.id}-0`,
            'id',
            String(e.id),
            'type',
            e.type,
            'subject_kind',
            e.subject.kind,
            'subject_id',
            e.subject.id,
            'data',
            JSON.stringify(e.data),
            'at',
            e.at
          )
        }
        const results = await pipeline.exec()
        const failed = (results ?? []).find(([err]) => err !== null && !ALREADY_THERE.test(err.message))
        if (failed?.[0] != null) throw failed[0]
        this.cursor = (events[events.length - 1] as { id: number }).id
        await this.pool.query(
          'insert into relay_cursors (name, last_id) values ($1, $2) on conflict (name) do update set last_id = excluded.last_id',
          [CURSOR, this.cursor]
        )
        this.metrics.eventsRelayed.inc(events.length)
      }
      this.metrics.redisUp.set(1)
      if (this.attempt > 0) this.log.info('Redis relay recovered')
      this.attempt = 0
      return events.length < BATCH ? undefined : 0
    } catch (err) {
      this.metrics.redisUp.set(0)
      if (this.attempt === 0)
        this.log.warn({ err: (err as Error).message }, 'Redis relay failing; events wait in PostgreSQL')
      // Redis may have restarted empty or ahead of our cursor: re-derive it.
      this.cursor = null
      return backoff(this.attempt++)
    }
  }

  /** After the relay's saved cursor, or after the stream's last entry when Redis is ahead (the cursor write was lost). */
  private async startingPoint(): Promise<number> {
    const { rows } = await this.pool.query<{ last_id: number }>('select last_id from relay_cursors where name = $1', [
      CURSOR
    ])
    const saved = rows[0]?.last_id ?? 0
    const last = await this.redis.xrevrange(EVENT_STREAM, '+', '-', 'COUNT', 1)
    const top = Number((last[0]?.[0] ?? '0-0').split('-')[0])
    return Math.max(saved, top)
  }
}
