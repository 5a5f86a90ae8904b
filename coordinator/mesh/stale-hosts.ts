// On the leader: a host that no coordinator has heard from for a while (its
// agent never came back after a coordinator restart, or its coordinator
// died with the session) is declared down, so its work moves elsewhere.
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Pool } from '../store/db.js'
import { setLiveness } from '../store/lifecycle.js'

export class StaleHosts implements Startable {
  private readonly loop: Loop
  private since = 0

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly afterSeconds: number
  ) {
    this.loop = new Loop(
      async () => {
        await this.sweep()
      },
      { name: 'stale host sweep', everyMs: Math.min(5000, afterSeconds * 500), immediate: false, log }
    )
  }

  start(): void {
    if (this.afterSeconds <= 0 || this.loop.running) return
    // A new leader gives agents a full period to reconnect before judging.
    this.since = Date.now()
    this.loop.start()
  }

  /** Resolves once a sweep in flight has ended: a deposed leader writes nothing after this. */
  async stop(): Promise<void> {
    await this.loop.stop()
  }

  private async sweep(): Promise<void> {
    if (Date.now() - this.since < this.afterSeconds * 1000) return
    try {
      const { rows } = await this.pool.query<{ id: string; name: string }>(
        `select id, name from hosts where revoked_at is null and state in ('ready', 'suspect', 'draining', 'cordoned')
         and last_seen_at < now() - make_interval(secs => $1)`,
        [this.afterSeconds]
      )
      for (const h of rows) {
        this.log.warn({ host: h.id, name: h.name }, `host down: not heard from for ${this.afterSeconds} s`)
        await setLiveness(this.pool, h.id, 'down', `not heard from for ${this.afterSeconds} s`)
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'stale host sweep failed')
    }
  }
}
