// Failure detection for the agents connected to this coordinator. Missed
// heartbeats (or a dropped connection, at once) make a host suspect; up to
// three of its pool peers then try to reach it over the mesh. If none can,
// it is down and its placements are handled by their workloads' policies;
// if one can, it stays suspect (alive, but not talking to us) and is probed
// again. A heartbeat or a new session makes it ready.
import { randomUUID } from 'node:crypto'
import { Loop } from '../../common/daemon/loop.js'
import { sleep } from '../../common/daemon/sleep.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { Probe } from '../../protocol/control.js'
import type { Pool } from '../store/db.js'
import { setLiveness } from '../store/lifecycle.js'

export interface Probeable {
  hostId: string
  peerId: string
  pool: string
  name: string
  lastHeartbeat: number
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
}

interface Tracked {
  state: 'ok' | 'suspect' | 'down'
  session: Probeable | null
  since: number
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

  constructor(
    private readonly pool: Pool,
    private readonly sessions: () => Probeable[],
    private readonly log: Logger,
    private readonly o: LivenessOptions
  ) {
    this.suspectAfterMs = o.suspectAfterMs ?? Math.round(o.heartbeatMs * 1.5)
    this.probeTimeoutMs = o.probeTimeoutMs ?? 800
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
    for (const resolve of this.waiting.values()) resolve(false)
    await this.loop.stop()
  }

  /** A session was established or a heartbeat arrived. */
  heard(s: Probeable): void {
    s.lastHeartbeat = Date.now()
    const t = this.hosts.get(s.hostId)
    if (t !== undefined && t.state === 'ok' && t.session === s) return
    this.hosts.set(s.hostId, { state: 'ok', session: s, since: Date.now() })
    if (t !== undefined && t.state !== 'ok') void this.mark(s.hostId, 'ready', 'heard from again')
  }

  /** The session ended: a dropped connection counts as missed heartbeats at once. */
  lost(s: Probeable, why: string): void {
    const t = this.hosts.get(s.hostId)
    if (t === undefined || t.session !== s) return
    t.session = null
    void this.suspect(s, why)
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

  private async suspect(s: Probeable, why: string): Promise<void> {
    const t = this.hosts.get(s.hostId)
    if (this.stopped || t === undefined || t.state !== 'ok') return
    t.state = 'suspect'
    t.since = Date.now()
    this.log.warn({ host: s.hostId, name: s.name, why }, 'host suspect; asking its pool peers')
    await this.mark(s.hostId, 'suspect', why)
    while (!this.stopped && this.hosts.get(s.hostId) === t && t.state === 'suspect') {
      const reachable = await this.probe(s)
      if (this.stopped || this.hosts.get(s.hostId) !== t || t.state !== 'suspect') return
      if (reachable === 0) {
        t.state = 'down'
        this.log.warn({ host: s.hostId, name: s.name }, 'host down: unreachable from its pool peers')
        // Its work is placed elsewhere now: if the host comes back, it must do so through a new
        // session, whose welcome fences what it still runs. A connection kept through the outage would not.
        s.drop('host marked down')
        await this.mark(s.hostId, 'down', `${why}; unreachable from its pool peers`)
        return
      }
      // Alive but not talking to us: do not move its work; look again shortly.
      await sleep(this.o.heartbeatMs * 2, this.abort.signal)
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
