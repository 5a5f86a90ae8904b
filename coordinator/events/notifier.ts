// LISTEN gpumesh_events on a dedicated connection: a wake-up hint for event
// readers (SSE streams, the Redis relay, the scheduler). A hint only: readers
// also poll, so a lost connection delays them and loses nothing. Reconnects
// with exponential backoff and jitter, capped.
import { EventEmitter } from 'node:events'
import pg from 'pg'
import { backoff } from '../../common/daemon/backoff.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'

export class Notifier extends EventEmitter implements Startable {
  private client: pg.Client | null = null
  private stopped = false
  private attempt = 0
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly url: string,
    private readonly log: Logger
  ) {
    super()
    this.setMaxListeners(0)
  }

  start(): void {
    void this.connect()
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.client?.end().catch(() => {})
    this.emit('wake')
  }

  /** Resolves on the next notification, after `ms`, or when aborted. */
  async wait(ms: number, signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.off('wake', done)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.once('wake', done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  private async connect(): Promise<void> {
    if (this.stopped) return
    const client = new pg.Client({ connectionString: this.url, application_name: 'gpumesh-notifier', keepAlive: true })
    client.on('notification', () => this.emit('wake'))
    client.on('error', () => this.retry(client))
    client.on('end', () => this.retry(client))
    try {
      await client.connect()
      await client.query('listen gpumesh_events')
      // Stopped while connecting: a connection kept now would keep the process alive.
      if (this.stopped) {
        await client.end().catch(() => {})
        return
      }
      this.client = client
      this.attempt = 0
      this.emit('wake') // anything committed while we were away
    } catch (err) {
      if (this.stopped) return
      this.log.warn({ err: (err as Error).message }, 'event notifications unavailable; readers poll')
      this.retry(client)
    }
  }

  private retry(client: pg.Client): void {
    if (this.stopped || (this.client !== null && this.client !== client)) return
    this.client = null
    client.end().catch(() => {})
    const delay = backoff(this.attempt++)
    clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      void this.connect()
    }, delay)
  }
}
