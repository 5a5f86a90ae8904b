// Tells connected agents what the database decided: it follows the outbox
// (from now on; what came before is in each session's welcome) and turns
// placement and host events into assign, stop and drain frames for the
// agents whose sessions are on this coordinator.
import { Periodic } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import type { CoordinatorFrame } from '../../protocol/control.js'
import type { Notifier } from '../events/notifier.js'
import { assignmentsByIds } from '../store/assignments.js'
import type { Pool } from '../store/db.js'
import { lastEventId, readEvents } from '../store/events.js'

export interface Deliverable {
  hostId: string
  epoch: number
  send: (frame: CoordinatorFrame) => Promise<void>
}

export class Dispatcher extends Periodic {
  private cursor = 0

  constructor(
    private readonly pool: Pool,
    notifier: Notifier,
    private readonly sessionOf: (hostId: string) => Deliverable | undefined,
    /** Tells the host's agent (when its session is here) and shuts the peer out. */
    private readonly onRevoked: (peerId: string, hostId: string) => void,
    private readonly log: Logger
  ) {
    super({ name: 'dispatcher', everyMs: 1000, wait: notifier.wait.bind(notifier), log })
  }

  override async start(): Promise<void> {
    this.cursor = await lastEventId(this.pool)
    await super.start()
  }

  /** One batch of events; 0 when another may be waiting already. */
  protected async tick(): Promise<number | undefined> {
    try {
      const events = await readEvents(this.pool, this.cursor, 500)
      const assign: Array<{ host: string; placement: string }> = []
      for (const e of events) {
        this.cursor = e.id
        const host = typeof e.data.host === 'string' ? e.data.host : e.subject.id
        const session = this.sessionOf(host)
        if (e.type === 'host.revoked') {
          if (typeof e.data.peerId === 'string') this.onRevoked(e.data.peerId, e.subject.id)
        } else if (session === undefined) {
        } else if (e.type === 'placement.created') {
          assign.push({ host, placement: e.subject.id })
        } else if (e.type === 'placement.stopped' || e.type === 'placement.lost') {
          const reason = typeof e.data.reason === 'string' ? e.data.reason : 'stopped by the coordinator'
          void session
            .send({ v: 1, type: 'stop', epoch: session.epoch, placementId: e.subject.id, reason })
            .catch(() => {})
        } else if (e.type === 'host.state-changed' && e.data.to === 'draining') {
          void session
            .send({
              v: 1,
              type: 'drain',
              epoch: session.epoch,
              reason: typeof e.data.reason === 'string' ? e.data.reason : 'drained by an operator'
            })
            .catch(() => {})
        }
      }
      if (assign.length > 0) {
        for (const a of await assignmentsByIds(
          this.pool,
          assign.map((x) => x.placement)
        )) {
          const session = this.sessionOf(assign.find((x) => x.placement === a.placementId)?.host ?? '')
          if (session !== undefined)
            void session.send({ v: 1, type: 'assign', epoch: session.epoch, placement: a }).catch(() => {})
        }
      }
      return events.length < 500 ? undefined : 0
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'dispatcher: database unavailable; retrying')
      return undefined
    }
  }
}
