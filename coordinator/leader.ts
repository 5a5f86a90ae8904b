// Leader election with a PostgreSQL session advisory lock on a dedicated
// connection. Whoever holds it schedules and relays events; the lock goes
// with the connection, so when a leader dies another coordinator takes over
// at its next attempt (every `retryMs`). Double booking stays impossible
// even with two leaders for a moment: the database refuses it.
import { EventEmitter } from 'node:events'
import pg from 'pg'
import { Loop } from '../common/daemon/loop.js'
import type { Startable } from '../common/daemon/startable.js'
import type { Logger } from '../common/log.js'

/** "gpumesh:leader" folded to an int. */
export const LEADER_LOCK = 0x67706d33

export class Leadership extends EventEmitter implements Startable {
  private client: pg.Client | null = null
  private readonly loop: Loop
  leader = false
  /** When the election loop last ran (the systemd watchdog's evidence). */
  lastTick = Date.now()

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    retryMs = 1000
  ) {
    super()
    this.loop = new Loop(
      async (signal) => {
        await this.tick(signal)
      },
      { name: 'leader election', everyMs: retryMs, log }
    )
  }

  start(): void {
    this.loop.start()
  }

  async stop(): Promise<void> {
    const ended = this.loop.stop()
    this.setLeader(false)
    // Ending the connection also ends an attempt in flight (a connect or a query), which stop() then awaits.
    const client = this.client
    this.client = null
    await client?.end().catch(() => {})
    await ended
  }

  private async tick(signal: AbortSignal): Promise<void> {
    this.lastTick = Date.now()
    let client = this.client
    try {
      if (client === null) {
        const fresh = new pg.Client({ connectionString: this.url, application_name: 'gpumesh-leader', keepAlive: true })
        client = fresh
        fresh.on('error', () => {
          this.drop(fresh)
        })
        await fresh.connect()
        if (signal.aborted) {
          await fresh.end().catch(() => {})
          return
        }
        this.client = fresh
      }
      if (this.leader) {
        await client.query('select 1') // still connected, so still holding the lock
      } else {
        const { rows } = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [LEADER_LOCK])
        if (rows[0]?.ok === true && !signal.aborted) this.setLeader(true)
      }
    } catch (err) {
      if (signal.aborted) return
      this.log.warn({ err: (err as Error).message }, 'leader election: database unreachable')
      if (client !== null) this.drop(client)
    }
  }

  private drop(client: pg.Client): void {
    if (this.client === client) this.client = null
    client.end().catch(() => {})
    this.setLeader(false)
  }

  private setLeader(leader: boolean): void {
    if (this.leader === leader) return
    this.leader = leader
    this.log.info({ leader }, leader ? 'became leader: scheduling' : 'no longer leader')
    this.emit(leader ? 'elected' : 'deposed')
  }
}
