// Failure detection for the agents connected to this coordinator. Missed
// heartbeats make a host suspect; up to three of its pool peers then try to
// reach it over the mesh. If none can, it is down and its placements are
// handled by their workloads' policies; if one can, it stays suspect (alive,
// but not talking to us) and is probed again. A heartbeat or a new session
// makes it ready.
//
// A connection that closes while heartbeats were flowing is not a lost host:
// a dead host or a cut link goes silent, it does not close anything. A close
// (or a goodbye) means the host's kernel answered and only the agent process
// is gone, e.g. restarting: the host is suspect for a grace period and its
// work stays put; only if no agent is back by then are the peers asked.
import { randomUUID } from 'node:crypto'
import { Loop } from '../../common/daemon/loop.js'
import { sleep } from '../../common/daemon/sleep.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Probe } from '../../protocol/control.js'
import type { Pool } from '../store/db.js'
import { hostEpoch } from '../store/hosts.js'
import { setLiveness } from '../store/lifecycle.js'

export interface Probeable {
  hostId: string
  peerId: string
  pool: string
  name: string
  lastHeartbeat: number
  /** The registration this session holds: a higher one in the database means the host came back elsewhere. */
  epoch: number
  /** Where the host's agent listens, as the mesh last learnt it (identify). */
  addresses: () => Promise<string[]>
  send: (frame: Probe) => Promise<void>
  /** Closes the session and its connection. */
  drop: (why: string) => void
}

export interface LivenessOptions {
  heartbeatMs: number
  /** Silence after which a host is suspect (default 1.5 heartbeats). */
  suspectAfterMs?: number
  /** How long probing peers get. */
  probeTimeoutMs?: number
  /** Peers asked to probe a suspect host. */
  probers?: number
  /** How long a host whose agent closed its connection (or said goodbye) is waited for before probing (default 30 s). */
  agentGraceMs?: number
}

interface Tracked {
  state: 'ok' | 'suspect' | 'down'
  session: Probeable | null
  since: number
  /** Ends the grace period early: the host was heard from again, or forgotten, or we stop. */
  wake?: AbortController
}

export class Liveness implements Startable {
  private readonly hosts = new Map<string, Tracked>()
  private readonly waiting = new Map<string, (reachable: boolean) => void>()
  /** Each host's last state write: the next one waits for it (see mark). */
  private readonly writes = new Map<string, Promise<void>>()
  private readonly loop: Loop
  /** Aborted by stop(): ends the waits of suspect hosts' probing. */
  private readonly abort = new AbortController()
  private stopped = false
  readonly suspectAfterMs: number
  readonly probeTimeoutMs: number
  readonly agentGraceMs: number

  constructor(
    private readonly pool: Pool,
    private readonly sessions: () => Probeable[],
    private readonly log: Logger,
    private readonly o: LivenessOptions
  ) {
    this.suspectAfterMs = o.suspectAfterMs ?? Math.round(o.heartbeatMs * 1.5)
    this.probeTimeoutMs = o.probeTimeoutMs ?? 800
    this.agentGraceMs = o.agentGraceMs ?? 30_000
    this.loop = new Loop(
      () => {
        this.sweep()
      },
      { name: 'liveness sweep', everyMs: Math.max(50, Math.round(o.heartbeatMs / 4)), immediate: false, log }
    )
  }

  start(): void {
    this.loop.start()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.abort.abort()
    for (const t of this.hosts.values()) t.wake?.abort()
    for (const resolve of this.waiting.values()) resolve(false)
    await this.loop.stop()
  }

  /** A session was established or a heartbeat arrived. */
  heard(s: Probeable): void {
    s.lastHeartbeat = Date.now()
    const t = this.hosts.get(s.hostId)
    if (t !== undefined && t.state === 'ok' && t.session === s) return
    t?.wake?.abort()
    this.hosts.set(s.hostId, { state: 'ok', session: s, since: Date.now() })
    if (t !== undefined && t.state !== 'ok') void this.mark(s.hostId, 'ready', 'heard from again')
  }

  /**
   * The session ended. Heard from until now, the host is up and its agent gone (see above): it
   * gets the grace period. One already suspect (silent first) is probed on as before.
   */
  lost(s: Probeable, why: string): void {
    const t = this.hosts.get(s.hostId)
    if (t === undefined || t.session !== s) return
    t.session = null
    void this.suspect(s, why, this.agentGraceMs)
  }

  /** A revoked host: nothing to wait for or probe. */
  forget(hostId: string): void {
    this.hosts.get(hostId)?.wake?.abort()
    this.hosts.delete(hostId)
  }

  probeResult(requestId: string, reachable: boolean): void {
    this.waiting.get(requestId)?.(reachable)
  }

  state(hostId: string): Tracked['state'] | undefined {
    return this.hosts.get(hostId)?.state
  }

  private sweep(): void {
    const now = Date.now()
    for (const [, t] of this.hosts) {
      const s = t.session
      if (s !== null && t.state === 'ok' && now - s.lastHeartbeat > this.suspectAfterMs)
        void this.suspect(s, `no heartbeat for ${now - s.lastHeartbeat} ms`)
    }
  }

  private async suspect(s: Probeable, why: string, graceMs = 0): Promise<void> {
    const t = this.hosts.get(s.hostId)
    if (this.stopped || t === undefined || t.state !== 'ok') return
    t.state = 'suspect'
    t.since = Date.now()
    const current = () => !this.stopped && this.hosts.get(s.hostId) === t && t.state === 'suspect'
    let reason = why
    if (graceMs > 0) {
      const seconds = Math.round(graceMs / 1000)
      this.log.warn({ host: s.hostId, name: s.name, why }, `agent gone, host up: waiting ${seconds} s for the agent`)
      await this.mark(s.hostId, 'suspect', `${why}; waiting ${seconds} s for the agent to return`)
      t.wake = new AbortController()
      if (current()) await sleep(graceMs, t.wake.signal)
      if (!current()) return
      reason = `${why}; the agent did not return within ${seconds} s`
    } else {
      this.log.warn({ host: s.hostId, name: s.name, why }, 'host suspect; asking its pool peers')
      await this.mark(s.hostId, 'suspect', why)
    }
    while (current()) {
      const reachable = await this.probe(s)
      if (!current()) return
      if (reachable === 0) {
        // An agent that came back through another coordinator is not this one's to judge.
        if (await this.registeredAgain(s)) {
          if (current()) this.hosts.delete(s.hostId)
          return
        }
        if (!current()) return
        t.state = 'down'
        this.log.warn({ host: s.hostId, name: s.name }, 'host down: unreachable from its pool peers')
        // Its work is placed elsewhere now: if the host comes back, it must do so through a new
        // session, whose welcome fences what it still runs. A connection kept through the outage would not.
        s.drop('host marked down')
        await this.mark(s.hostId, 'down', `${reason}; unreachable from its pool peers`)
        return
      }
      // Alive but not talking to us: do not move its work; look again shortly.
      await sleep(this.o.heartbeatMs * 2, this.abort.signal)
    }
  }

  private async registeredAgain(s: Probeable): Promise<boolean> {
    try {
      return (await hostEpoch(this.pool, s.hostId)) > s.epoch
    } catch {
      return false
    }
  }

  /** Asks pool peers to reach the host; the number that did. No peers to ask counts as unreachable. */
  private async probe(target: Probeable): Promise<number> {
    const now = Date.now()
    const multiaddrs = (await target.addresses().catch(() => [])).slice(0, 16)
    const peers = this.sessions()
      .filter(
        (p) => p.pool === target.pool && p.hostId !== target.hostId && now - p.lastHeartbeat <= this.suspectAfterMs
      )
      .slice(0, this.o.probers ?? 3)
    const answers = await Promise.all(
      peers.map(async (p) => {
        const requestId = randomUUID()
        const answered = new Promise<boolean>((resolve) => {
          this.waiting.set(requestId, resolve)
          setTimeout(() => resolve(false), this.probeTimeoutMs + 400)
        })
        try {
          await p.send({
            v: 1,
            type: 'probe',
            requestId,
            target: target.peerId,
            multiaddrs,
            timeoutMs: this.probeTimeoutMs
          })
          return await answered
        } catch {
          return false
        } finally {
          this.waiting.delete(requestId)
        }
      })
    )
    if (peers.length === 0) await sleep(this.probeTimeoutMs, this.abort.signal)
    return answers.filter((a) => a).length
  }

  /**
   * Writes are chained per host: two in flight at once (suspect, and ready from the session that
   * follows a reset) would otherwise race for the row and could leave a live host suspect.
   */
  private async mark(hostId: string, to: 'ready' | 'suspect' | 'down', reason: string): Promise<void> {
    const write = (this.writes.get(hostId) ?? Promise.resolve())
      .then(async () => {
        await setLiveness(this.pool, hostId, to, reason)
      })
      .catch((err: Error) => {
        this.log.error({ host: hostId, to, err: err.message }, 'cannot record host state')
      })
    this.writes.set(hostId, write)
    await write
    if (this.writes.get(hostId) === write) this.writes.delete(hostId)
  }
}
