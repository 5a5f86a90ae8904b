// The agent's control session: dial the coordinator, hello (facts, what runs,
// the highest epoch obeyed), then welcome -> reconcile with the authoritative
// list (fencing: anything else running is stopped), heartbeats every
// heartbeatMs, statuses as they happen, and assign/stop/drain/probe frames.
// Reconnects with backoff, forever: workloads keep running meanwhile. A
// planned stop says goodbye first (the coordinator then waits for the agent);
// a revoked host stops its placements and ends the agent (`fatal`).
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { backoff } from '../../common/daemon/backoff.js'
import { sleep } from '../../common/daemon/sleep.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import { FrameChannel } from '../../common/mesh/frames.js'
import type { MeshNode } from '../../common/mesh/node.js'
import { ConfigError } from '../../common/config-error.js'
import { CodedError } from '../../common/coded-error.js'
import {
  agentSilenceMs,
  AgentFrame,
  CONTROL_PROTOCOL,
  CoordinatorFrame,
  type Assignment,
  type ClearHealth,
  type GpuUsage,
  type HostConditionType,
  type Probe,
  type RunningPlacement
} from '../../protocol/control.js'
import type { HostFacts } from '../../protocol/host-facts.js'
import type { Runtime } from '../runtime/types.js'
import type { GpuHealth, TelemetryDelta } from '../../protocol/telemetry.js'
import type { ReadinessSource } from '../serve/readiness.js'
import type { AgentState } from './state.js'

/** Enrollment refusals: retrying soon cannot help; an operator must act. */
const FATAL = new Set(['ERR_REVOKED', 'ERR_UNKNOWN_PEER', 'ERR_JOIN_TOKEN', 'ERR_POOL_MISMATCH'])
/** How long a stopping agent gives its goodbye to leave. */
const GOODBYE_MS = 1000
/** heartbeatNow() sends at most one extra heartbeat per this long (a flapping GPU must not flood the session). */
const EXTRA_HEARTBEAT_MS = 200

/** How a session ended: dial again soon, later (refused), or never (the host was revoked). */
type Ending = 'again' | 'refused' | { revoked: string }

export interface ControlOptions {
  node: MeshNode
  runtime: Runtime
  /** Endpoint replicas' readiness: it rides on their status frames (and the hello). */
  readiness?: ReadinessSource
  state: AgentState
  log: Logger
  /** Coordinator multiaddrs ending in /p2p/<peer id>. */
  coordinators: string[]
  name: string
  agentVersion: string
  joinToken?: string
  facts: () => HostFacts
  usage: () => GpuUsage[]
  /** GPU health and usage as deltas: the first heartbeat of a session carries the whole table. */
  telemetry?: { delta: () => TelemetryDelta | null; resetReport: () => void }
  /** An admin's clear of a GPU's health (GpuMonitor.clearHealth); absent: the agent answers that it cannot. */
  clearHealth?: (gpu: number) => Promise<GpuHealth>
}

type Channel = FrameChannel<typeof CoordinatorFrame, typeof AgentFrame>

export class ControlClient implements Startable {
  private running = false
  private channel: Channel | null = null
  private heartbeat: NodeJS.Timeout | undefined
  /** Sends one heartbeat now, in the current session; null while there is none. */
  private beat: (() => void) | null = null
  private lastBeat = 0
  private extraBeat: NodeJS.Timeout | undefined
  private loop: Promise<void> | null = null
  /** Aborted by stop(): ends the wait between dial attempts. */
  private abort = new AbortController()
  /** When the coordinator last sent anything (it answers heartbeats at least every ACK_AFTER_MS). */
  private lastHeard = 0
  /** When the current session was welcomed; 0 while disconnected. */
  connectedAt = 0
  /** Last time the loop did something: a dial attempt or a heartbeat (the systemd watchdog's evidence). */
  lastProgress = Date.now()
  hostId: string | null = null
  /** The coordinator's last refusal of a session (until a welcome): what an operator (or a test) looks at. */
  refusal: { code: string; message: string } | null = null
  /** Whether a coordinator has welcomed this process yet: its first hello on an enrolled host is a restart. */
  private welcomed = false
  private endFatal!: (err: ConfigError) => void
  /** Resolves when the agent must end for good (its host was revoked), its placements already stopped. */
  readonly fatal = new Promise<ConfigError>((resolve) => {
    this.endFatal = resolve
  })
  /** An enrollment not saved yet (the state disk is full), retried at every heartbeat. */
  private unsaved: { hostId: string; epoch: number } | null = null
  private saving = false
  /** The host condition reported while `unsaved`. */
  condition: HostConditionType | null = null

  constructor(private readonly o: ControlOptions) {}

  start(): void {
    this.running = true
    this.abort = new AbortController()
    this.o.runtime.on('status', this.onStatus)
    this.o.readiness?.on('ready', this.onReady)
    this.loop = this.run()
  }

  async stop(): Promise<void> {
    this.running = false
    this.o.runtime.off('status', this.onStatus)
    this.o.readiness?.off('ready', this.onReady)
    clearInterval(this.heartbeat)
    clearTimeout(this.extraBeat)
    this.abort.abort()
    const channel = this.channel
    if (channel !== null && this.connectedAt > 0) {
      // A planned stop (an upgrade, a restart): the coordinator waits for us instead of moving our work.
      const given = new AbortController()
      await Promise.race([
        channel.send({ v: 1, type: 'goodbye', reason: 'agent stopping; its placements keep running' }).catch(() => {}),
        sleep(GOODBYE_MS, given.signal)
      ])
      given.abort()
    }
    await channel?.close().catch(() => {})
    channel?.abort('agent stopping')
    await this.loop
  }

  /**
   * A heartbeat now rather than at the next tick (a GPU's health changed: the scheduler should hear
   * of it within a second, not a period later). At most one per EXTRA_HEARTBEAT_MS; one asked for
   * sooner goes out when that has passed.
   */
  heartbeatNow(): void {
    if (this.beat === null || this.extraBeat !== undefined) return
    const wait = this.lastBeat + EXTRA_HEARTBEAT_MS - Date.now()
    if (wait <= 0) {
      this.beat()
      return
    }
    this.extraBeat = setTimeout(() => {
      this.extraBeat = undefined
      this.beat?.()
    }, wait)
    this.extraBeat.unref()
  }

  /** Re-detected facts, sent when connected (the coordinator quarantines a host whose GPUs changed). */
  async sendFacts(facts: HostFacts): Promise<void> {
    await this.channel?.send({ v: 1, type: 'facts', facts }).catch(() => {})
  }

  private async run(): Promise<void> {
    let attempt = 0
    let next = 0
    while (this.running) {
      const target = this.o.coordinators[next++ % this.o.coordinators.length] as string
      this.lastProgress = Date.now()
      let ending: Ending = 'again'
      try {
        const connection = await this.o.node.dial(multiaddr(target))
        const channel: Channel = new FrameChannel(
          await connection.newStream(CONTROL_PROTOCOL),
          CoordinatorFrame,
          AgentFrame
        )
        this.channel = channel
        ending = await this.session(channel, (why) => {
          channel.abort(why)
          connection.abort(new Error(why))
        })
        if (Date.now() - this.connectedAt > 10_000) attempt = 0
      } catch (err) {
        if (attempt === 0)
          this.o.log.warn({ coordinator: target, err: (err as Error).message }, 'coordinator unreachable; retrying')
      } finally {
        this.channel = null
        this.connectedAt = 0
        this.beat = null
        clearInterval(this.heartbeat)
      }
      if (!this.running) break
      if (typeof ending === 'object') {
        await this.revoked(ending.revoked)
        break
      }
      await sleep(ending === 'refused' ? 20_000 : backoff(attempt++, { baseMs: 200, capMs: 5000 }), this.abort.signal)
    }
  }

  /**
   * The coordinator revoked this host: its work runs elsewhere now, so it stops here, and the
   * agent ends (exit 78; systemd does not restart it) instead of dialling forever. The state file
   * remembers it, so that a restart ends at once too.
   */
  private async revoked(message: string): Promise<void> {
    const { runtime, state, log } = this.o
    log.error({ code: 'ERR_REVOKED' }, `${message}; stopping this host's placements`)
    await Promise.all(
      runtime
        .list()
        .filter((p) => p.state === 'running' || p.state === 'starting')
        .map(async (p) => {
          await runtime
            .stop(p.placementId, 'host revoked')
            .catch((err: Error) => log.warn({ placement: p.placementId, err: err.message }, 'stop failed'))
        })
    )
    await state.revoke(message).catch((err: Error) => log.warn({ err: err.message }, 'cannot record the revocation'))
    this.endFatal(new ConfigError(message, { code: 'ERR_REVOKED' }))
  }

  /** One session, and how it ended. */
  private async session(channel: Channel, drop: (why: string) => void): Promise<Ending> {
    const { state, runtime, log } = this.o
    this.lastHeard = Date.now()
    await channel.send({
      v: 1,
      type: 'hello',
      name: this.o.name,
      agentVersion: this.o.agentVersion,
      facts: this.o.facts(),
      running: runtime.list().map(this.withReady),
      epoch: state.epoch,
      ...(state.hostId !== null && !this.welcomed ? { restarted: true } : {}),
      ...(state.hostId === null && this.o.joinToken !== undefined ? { joinToken: this.o.joinToken } : {})
    })
    for (;;) {
      const frame = await channel.receive()
      if (frame === null) return 'again'
      this.lastHeard = Date.now()
      if (frame.type === 'heartbeat-ack') continue
      if (frame.type === 'error') {
        const fatal = FATAL.has(frame.code)
        this.refusal = { code: frame.code, message: frame.message }
        log[fatal ? 'error' : 'warn']({ code: frame.code }, `coordinator refused the session: ${frame.message}`)
        if (frame.code === 'ERR_REVOKED') return { revoked: frame.message }
        return fatal ? 'refused' : 'again'
      }
      if (frame.type === 'welcome') {
        if (frame.epoch <= state.epoch && state.hostId === frame.hostId) {
          log.warn(
            { epoch: frame.epoch, known: state.epoch },
            'welcome from a coordinator behind this agent (stale epoch); ignoring it'
          )
          return 'again'
        }
        this.welcomed = true
        this.hostId = frame.hostId
        this.refusal = null
        this.connectedAt = Date.now()
        // Fence and stop first, then save: a state file that cannot be written must not keep stale work running.
        await this.reconcile(frame.placements)
        await this.saveState(channel, { hostId: frame.hostId, epoch: frame.epoch })
        let seq = 0
        this.o.telemetry?.resetReport()
        const silenceMs = agentSilenceMs(frame.heartbeatMs)
        this.beat = () => {
          this.lastBeat = Date.now()
          const telemetry = this.o.telemetry?.delta() ?? null
          // A heartbeat lost with its delta means a broken session: the next one starts from the whole table.
          void channel
            .send({
              v: 1,
              type: 'heartbeat',
              seq: seq++,
              gpus: this.o.usage(),
              ...(telemetry === null ? {} : { telemetry })
            })
            .catch(() => {})
        }
        this.heartbeat = setInterval(() => {
          // A partition leaves the TCP connection open, in retransmission backoff, for minutes:
          // a new one reaches the coordinator as soon as the network does.
          const silent = Date.now() - this.lastHeard
          if (silent > silenceMs) {
            log.warn({ silentMs: silent }, 'coordinator silent; reconnecting')
            clearInterval(this.heartbeat)
            drop(`no answer from the coordinator for ${silent} ms`)
            return
          }
          this.lastProgress = Date.now()
          this.beat?.()
          if (this.unsaved !== null) void this.saveState(channel, this.unsaved)
        }, frame.heartbeatMs)
        log.info(
          { hostId: frame.hostId, epoch: frame.epoch, placements: frame.placements.length },
          'joined the coordinator'
        )
        continue
      }
      if (frame.type === 'probe') {
        void this.probe(channel, frame)
        continue
      }
      if (frame.epoch < state.epoch) {
        log.warn({ type: frame.type, epoch: frame.epoch }, 'frame from a stale epoch ignored')
        continue
      }
      if (frame.type === 'assign') void this.startWhenFree(frame.placement)
      else if (frame.type === 'stop')
        void runtime
          .stop(frame.placementId, frame.reason)
          .catch((err: Error) => log.warn({ err: err.message }, 'stop failed'))
      else if (frame.type === 'drain')
        log.info({ reason: frame.reason }, 'host drained: its placements are being stopped')
      else if (frame.type === 'clear-health') void this.clearHealth(channel, frame)
    }
  }

  /**
   * Saves the enrollment; a failure (ENOSPC: the state disk is full) is a host condition reported to the
   * coordinator, not a reason to drop the session: the epoch holds in memory and the save is retried at
   * every heartbeat until it succeeds, which ends the condition.
   */
  private async saveState(channel: Channel, next: { hostId: string; epoch: number }): Promise<void> {
    if (this.saving) return // the heartbeat's retry while the welcome's save (or the last retry) still writes
    this.saving = true
    try {
      await this.o.state.save(next)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const condition = code === 'ENOSPC' || code === 'EDQUOT' ? 'disk-full' : 'state-unwritable'
      const detail = `cannot save the agent state: ${(err as Error).message}`.slice(0, 1024)
      if (this.unsaved === null || this.condition !== condition) {
        this.o.log.error({ condition, err: (err as Error).message }, 'cannot save the agent state; retrying')
        if (this.condition !== null && this.condition !== condition)
          await this.sendCondition(channel, this.condition, false, 'another condition replaced it')
        await this.sendCondition(channel, condition, true, detail)
      }
      this.unsaved = next
      this.condition = condition
      return
    } finally {
      this.saving = false
    }
    this.unsaved = null
    if (this.condition !== null) {
      this.o.log.info({ condition: this.condition }, 'agent state saved again')
      await this.sendCondition(channel, this.condition, false, 'the agent state was saved')
      this.condition = null
    }
  }

  private async sendCondition(
    channel: Channel,
    condition: HostConditionType,
    active: boolean,
    detail: string
  ): Promise<void> {
    await channel.send({ v: 1, type: 'condition', condition, active, detail }).catch(() => {})
  }

  /** The coordinator's list is authoritative: stop what is not on it, start what is missing. */
  private async reconcile(list: Assignment[]): Promise<void> {
    const wanted = new Set(list.map((a) => a.placementId))
    for (const p of this.o.runtime.list()) {
      if (!wanted.has(p.placementId) && (p.state === 'running' || p.state === 'starting')) {
        this.o.log.warn({ placement: p.placementId }, "not on the coordinator's list: stopping it (fenced)")
        void this.o.runtime
          .stop(p.placementId, "fenced: not on the coordinator's list after reconnecting")
          .catch(() => {})
      }
    }
    const known = new Set(this.o.runtime.list().map((p) => p.placementId))
    for (const a of list) {
      if (known.has(a.placementId)) void this.report(this.current(a.placementId))
      else void this.startWhenFree(a)
    }
  }

  /** GPUs still held by a placement being stopped are waited for: two workloads never share a GPU. */
  private async startWhenFree(a: Assignment): Promise<void> {
    const deadline = Date.now() + 60_000
    for (;;) {
      const busy = this.o.runtime
        .list()
        .filter((p) => (p.state === 'running' || p.state === 'starting') && p.placementId !== a.placementId)
      const holders = busy.filter(
        (p) => this.o.runtime.assignment(p.placementId)?.gpus.some((g) => a.gpus.includes(g)) === true
      )
      if (holders.length === 0 || Date.now() > deadline) break
      await sleep(100, this.abort.signal)
      if (this.abort.signal.aborted) return // the agent is stopping; the next one gets the list again
    }
    await this.o.runtime
      .start(a)
      .catch((err: Error) => this.o.log.error({ placement: a.placementId, err: err.message }, 'cannot start placement'))
  }

  private async clearHealth(channel: Channel, f: ClearHealth): Promise<void> {
    let answer: { health: GpuHealth | null; error: { code: string; message: string } | null }
    try {
      if (this.o.clearHealth === undefined) throw new Error('this agent does not watch GPU health')
      answer = { health: await this.o.clearHealth(f.gpu), error: null }
    } catch (err) {
      const code = err instanceof CodedError ? String(err.code) : 'ERR_CLEAR_HEALTH'
      answer = { health: null, error: { code, message: (err as Error).message.slice(0, 1024) } }
    }
    await channel.send({ v: 1, type: 'clear-health-result', requestId: f.requestId, ...answer }).catch(() => {})
  }

  private async probe(channel: Channel, p: Probe): Promise<void> {
    const started = performance.now()
    let reachable = false
    try {
      const peer = peerIdFromString(p.target)
      const signal = AbortSignal.timeout(p.timeoutMs)
      const attempts: Array<Promise<unknown>> = []
      if (this.o.node.getConnections(peer).length > 0)
        attempts.push(this.o.node.services.ping.ping(peer as never, { signal }))
      // Also over a new connection: after a partition heals, an old one can stay stalled in TCP
      // retransmission backoff for seconds while the host is perfectly reachable.
      const addr = p.multiaddrs[0]
      if (addr !== undefined)
        attempts.push(
          this.o.node.services.ping.ping(
            multiaddr(addr.includes('/p2p/') ? addr : `${addr}/p2p/${p.target}`) as never,
            { signal, force: true } as never
          )
        )
      if (attempts.length > 0) {
        await Promise.any(attempts)
        reachable = true
      }
    } catch {}
    await channel
      .send({
        v: 1,
        type: 'probe-result',
        requestId: p.requestId,
        target: p.target,
        reachable,
        rttMs: reachable ? performance.now() - started : null
      })
      .catch(() => {})
  }

  private readonly onStatus = (status: RunningPlacement): void => {
    void this.report(this.withReady(status))
  }

  private readonly onReady = (placementId: string): void => {
    void this.report(this.current(placementId))
  }

  /** A placement's status as it is now, with its readiness. */
  private current(placementId: string): RunningPlacement | undefined {
    const status = this.o.runtime.list().find((p) => p.placementId === placementId)
    return status === undefined ? undefined : this.withReady(status)
  }

  private readonly withReady = (status: RunningPlacement): RunningPlacement => {
    const ready = status.state === 'running' ? this.o.readiness?.ready(status.placementId) : undefined
    return ready === undefined ? status : { ...status, ready }
  }

  private async report(status: RunningPlacement | undefined): Promise<void> {
    if (status === undefined || this.channel === null || this.connectedAt === 0) return
    await this.channel.send({ v: 1, type: 'status', placement: status }).catch(() => {})
  }
}
