// The leader's scaling and rolling-update loop: wake on new events (or every
// second), read the endpoints with something to do, take one action for
// each (rollout/plan.ts). All its state is in PostgreSQL (store/rollouts.ts),
// so a new leader goes on where the last one stopped; a replica that was
// being drained when the leader went is drained again by the next one.
import { Periodic } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import type { Notifier } from '../events/notifier.js'
import type { Pool } from '../store/db.js'
import {
  completeRollout,
  DEFAULT_STARTUP_SECONDS,
  endpointsToReconcile,
  type EndpointRow,
  noteReady,
  removeReplica,
  requestSurge,
  stopRollout
} from '../store/rollouts.js'
import { type Action, nextAction } from './plan.js'

/** Stops new gateway calls to a placement; resolves once its calls in flight have ended, or after timeoutMs. */
export type Drain = (placementId: string, timeoutMs: number) => Promise<void>

export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000
/**
 * How long a roll's new replica must have been ready before an old one is drained: every coordinator's
 * gateway learns of ready replicas from the outbox (and sets aside for 2 s one it could not reach), so
 * the new one takes calls before the old one stops taking them. Kubernetes calls it minReadySeconds.
 */
export const DEFAULT_SETTLE_MS = 3000

export interface RolloutOptions {
  /** The gateway's drain (coordinator/gateway); default: nothing to wait for. */
  drain?: Drain
  drainTimeoutMs?: number
  settleMs?: number
}

export class RolloutLoop extends Periodic {
  private readonly drain: Drain
  private readonly drainTimeoutMs: number
  private readonly settleMs: number

  constructor(
    private readonly pool: Pool,
    notifier: Notifier,
    private readonly log: Logger,
    options: RolloutOptions = {}
  ) {
    super({ name: 'rollout', everyMs: 1000, wait: notifier.wait.bind(notifier), log })
    this.drain = options.drain ?? (async () => {})
    this.drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS
    this.settleMs = options.settleMs ?? DEFAULT_SETTLE_MS
  }

  /** One action per endpoint, endpoints side by side (a long drain holds up only its own); 0 when one acted. */
  protected async tick(): Promise<number | undefined> {
    const endpoints = await endpointsToReconcile(this.pool)
    const acted = await Promise.all(
      endpoints.map(async (e) => {
        try {
          return await this.act(e, nextAction(view(e, this.settleMs)))
        } catch (err) {
          this.log.error({ workload: e.id, err: (err as Error).message }, 'rollout action failed; retrying')
          return false
        }
      })
    )
    return acted.some(Boolean) ? 0 : undefined
  }

  private async act(e: EndpointRow, action: Action): Promise<boolean> {
    switch (action.kind) {
      case 'none':
        return false
      case 'remove':
        if (action.replica.ready) await this.drain(action.replica.id, this.drainTimeoutMs)
        return await removeReplica(this.pool, e.id, action.replica.id, action.why)
      case 'surge':
        await requestSurge(this.pool, e.id)
        return true
      case 'settle':
        await noteReady(this.pool, e.id)
        return false
      case 'complete':
        await completeRollout(this.pool, e.id)
        this.log.info({ workload: e.id, generation: e.roll?.generation }, 'rollout completed')
        return true
      case 'stop':
        await stopRollout(
          this.pool,
          e.id,
          action.remove.map((p) => p.id),
          action.reason
        )
        this.log.warn({ workload: e.id, reason: action.reason }, 'rollout stopped')
        return true
    }
  }
}

function view(e: EndpointRow, settleMs: number) {
  const failed = e.failed
  const why =
    failed === null
      ? ''
      : failed.state === 'exited'
        ? `it exited with code ${failed.exitCode ?? '?'}`
        : `it failed${failed.reason === null ? '' : `: ${failed.reason}`}`
  return {
    now: e.now,
    replicas: e.spec.replicas,
    surge: e.surge,
    pending: e.state === 'pending',
    active: e.active,
    roll:
      e.roll === null
        ? null
        : {
            ...e.roll,
            startupMs: (e.spec.serve?.startupSeconds ?? DEFAULT_STARTUP_SECONDS) * 1000,
            settleMs,
            failed: failed === null ? null : { replica: failed.replica, why }
          }
  }
}
