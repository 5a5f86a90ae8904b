// Leader election with a PostgreSQL session advisory lock on a dedicated
// connection. Whoever holds it schedules and relays events; the lock goes
// with the connection, so when a leader dies another coordinator takes over
// at its next attempt (every `retryMs`). Double booking stays impossible
// even with two leaders for a moment: the database refuses it.
import { EventEmitter } from 'node:events'
import pg from 'pg'
import type { Logger } from '../common/log.js'

/** "gpumesh:leader" folded to an int. */
export const LEADER_LOCK = 0x67706d33

export class Leadership extends EventEmitter {
  private client: pg.Client | null = null
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  leader = false
  /** When the election loop last ran (the systemd watchdog's evidence). */
  lastTick = Date.now()

  constructor (private readonly url: string, private readonly log: Logger, private readonly retryMs = 1000) {
    super()
  }

  start (): void {
    void this.tick()
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    this.setLeader(false)
    await this.client?.end().catch(() => {})
    this.client = null
  }

  private async tick (): Promise<void> {
    if (this.stopped) return
    this.lastTick = Date.now()
    try {
      if (this.client === null) {
        const client = new pg.Client({ connectionString: this.url, application_name: 'gpumesh-leader', keepAlive: true })
        client.on('error', () => { this.drop(client) })
        await client.connect()
        this.client = client
      }
      if (this.leader) {
        await this.client.query('select 1') // still connected, so still holding the lock
      } else {
        const { rows } = await this.client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [LEADER_LOCK])
        if (rows[0]?.ok === true) this.setLeader(true)
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'leader election: database unreachable')
      if (this.client !== null) this.drop(this.client)
    }
    if (!this.stopped) this.timer = setTimeout(() => { void this.tick() }, this.retryMs)
  }

  private drop (client: pg.Client): void {
    if (this.client === client) this.client = null
    client.end().catch(() => {})
    this.setLeader(false)
  }

  private setLeader (leader: boolean): void {
    if (this.leader === leader) return
    this.leader = leader
    this.log.info({ leader }, leader ? 'became leader: scheduling' : 'no longer leader')
    this.emit(leader ? 'elected' : 'deposed')
  }
}
