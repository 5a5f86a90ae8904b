// One agent's control session on this coordinator: hello -> enrollment ->
// welcome (the authoritative placement list) -> heartbeats, statuses, facts
// and probe results in (and a goodbye before a planned stop); assign, stop,
// drain and probe out. A bad frame gets an error frame and ends this session
// only.
import { randomUUID } from 'node:crypto'
import type { Connection, Stream } from '@libp2p/interface'
import { sleep } from '../../common/daemon/sleep.js'
import type { Logger } from '../../common/log.js'
import { FrameChannel, FrameError } from '../../common/mesh/frames.js'
import {
  ACK_AFTER_MS,
  AgentFrame,
  type ClearHealthResult,
  CoordinatorFrame,
  type CoordinatorFrame as OutFrame,
  type GpuUsage
} from '../../protocol/control.js'
import type { Pool } from '../store/db.js'
import { assignmentsOfHost } from '../store/assignments.js'
import { setHostCondition } from '../store/hosts.js'
import { recordStatus } from '../store/lifecycle.js'
import type { LiveGpus } from '../telemetry/live-gpus.js'
import { enroll, EnrollError, updateFacts } from './enroll.js'
import type { Liveness, Probeable } from './liveness.js'

const HELLO_TIMEOUT_MS = 10_000
const CLOSE_MS = 2000
/** How long an agent gets to answer a clear-health (it writes one small file). */
const CLEAR_HEALTH_TIMEOUT_MS = 10_000

/** A request to the agent got no answer: the session ended, or it took too long. */
export class AgentUnanswered extends Error {
  override name = 'AgentUnanswered'
}

export interface SessionHost {
  pool: Pool
  log: Logger
  liveness: Liveness
  heartbeatMs: number
  register: (s: AgentSession) => void
  unregister: (s: AgentSession) => void
  addresses: (peerId: string) => Promise<string[]>
  liveGpus: LiveGpus
  /** A whole GPU table came (the first of a session): the stored health is reconciled with it. */
  reconcileHealth: (hostId: string) => void
}

export class AgentSession implements Probeable {
  hostId = ''
  pool = ''
  name = ''
  epoch = 0
  lastHeartbeat = Date.now()
  /** Last frame sent to the agent (see ACK_AFTER_MS). */
  private lastSent = 0
  gpus: GpuUsage[] = []
  readonly peerId: string
  private readonly channel: FrameChannel<typeof AgentFrame, typeof CoordinatorFrame>
  /** Requests to the agent waiting for their answer, by request id. */
  private readonly answers = new Map<string, (r: ClearHealthResult | null) => void>()
  private welcomed!: () => void
  /** Frames to this agent wait until it has its welcome (the list comes first). */
  private readonly ready = new Promise<void>((resolve) => {
    this.welcomed = resolve
  })

  constructor(
    stream: Stream,
    private readonly connection: Connection,
    private readonly host: SessionHost
  ) {
    this.peerId = connection.remotePeer.toString()
    this.channel = new FrameChannel(stream, AgentFrame, CoordinatorFrame)
  }

  async addresses(): Promise<string[]> {
    return await this.host.addresses(this.peerId)
  }

  async send(frame: OutFrame): Promise<void> {
    await this.ready
    await this.sendNow(frame)
  }

  private async sendNow(frame: OutFrame): Promise<void> {
    this.lastSent = Date.now()
    await this.channel.send(frame)
  }

  /** Asks the agent to clear a GPU's health (an admin's word); its answer, or AgentUnanswered. */
  async clearHealth(gpu: number): Promise<ClearHealthResult> {
    const requestId = randomUUID()
    const answered = new Promise<ClearHealthResult | null>((resolve) => {
      this.answers.set(requestId, resolve)
      setTimeout(() => resolve(null), CLEAR_HEALTH_TIMEOUT_MS).unref()
    })
    try {
      await this.send({ v: 1, type: 'clear-health', epoch: this.epoch, requestId, gpu })
      const result = await answered
      if (result === null) throw new AgentUnanswered(`host ${this.name} did not answer the clear-health`)
      return result
    } catch (err) {
      if (err instanceof AgentUnanswered) throw err
      throw new AgentUnanswered(`cannot reach host ${this.name}: ${(err as Error).message}`)
    } finally {
      this.answers.delete(requestId)
    }
  }

  /** Tells the agent why, then ends the session; resolves once the error frame is written (or could not be). */
  async close(code: string, message: string): Promise<void> {
    // Bounded: a stalled connection must not hold up whoever closes it.
    const waiting = new AbortController()
    await Promise.race([
      this.channel.send({ v: 1, type: 'error', code, message }).catch(() => {}),
      sleep(CLOSE_MS, waiting.signal)
    ])
    waiting.abort()
    this.channel.abort(message)
  }

  /** Ends the session and its connection at once: an agent that comes back must say hello again (and be fenced). */
  drop(why: string): void {
    this.channel.abort(why)
    this.connection.abort(new Error(why))
  }

  async run(): Promise<void> {
    const { log } = this.host
    // The agent's word for why it goes: a planned stop, told before its connection closes.
    let goodbye: string | null = null
    const ended = (why: string) => (goodbye === null ? why : `agent stopping (${goodbye})`)
    try {
      const hello = await this.channel.receive(AbortSignal.timeout(HELLO_TIMEOUT_MS))
      if (hello === null) return
      if (hello.type !== 'hello')
        throw new FrameError('ERR_FRAME_SHAPE', `the first frame must be hello, not ${hello.type}`)
      // The IP the coordinator reaches the agent on: rank 0's is MASTER_ADDR for gangs.
      const address = /^\/ip[46]\/([^/]+)/.exec(this.connection.remoteAddr.toString())?.[1] ?? null
      const { hostId, epoch } = await enroll(this.host.pool, this.peerId, hello, address)
      Object.assign(this, { hostId, epoch, pool: hello.facts.pool.key, name: hello.name })
      this.host.register(this)
      this.host.liveness.heard(this)
      const placements = await assignmentsOfHost(this.host.pool, hostId)
      await this.sendNow({ v: 1, type: 'welcome', hostId, epoch, heartbeatMs: this.host.heartbeatMs, placements })
      this.welcomed()
      for (const r of hello.running)
        if (placements.some((p) => p.placementId === r.placementId)) await recordStatus(this.host.pool, hostId, r)
      log.info(
        { host: hostId, name: hello.name, peer: this.peerId, epoch, placements: placements.length },
        'agent session open'
      )
      for (;;) {
        const frame = await this.channel.receive()
        if (frame === null) break
        switch (frame.type) {
          case 'heartbeat':
            this.gpus = frame.gpus
            if (frame.telemetry !== undefined) {
              this.host.liveGpus.apply(hostId, frame.telemetry)
              if (frame.telemetry.full) this.host.reconcileHealth(hostId)
            }
            this.host.liveness.heard(this)
            if (Date.now() - this.lastSent >= ACK_AFTER_MS)
              void this.sendNow({ v: 1, type: 'heartbeat-ack', seq: frame.seq }).catch(() => {})
            break
          case 'status':
            this.host.liveness.heard(this)
            await recordStatus(this.host.pool, hostId, frame.placement)
            break
          case 'facts':
            await updateFacts(this.host.pool, hostId, frame.facts)
            break
          case 'probe-result':
            this.host.liveness.probeResult(frame.requestId, frame.reachable)
            break
          case 'goodbye':
            goodbye = frame.reason
            break
          case 'condition':
            await setHostCondition(this.host.pool, hostId, frame.condition, frame.active, frame.detail)
            break
          case 'clear-health-result':
            this.answers.get(frame.requestId)?.(frame)
            break
          case 'hello':
            throw new FrameError('ERR_FRAME_SHAPE', 'hello twice in one session')
        }
      }
      await this.channel.close()
      this.end(ended('agent closed the session'))
    } catch (err) {
      if (err instanceof EnrollError || err instanceof FrameError) {
        log.warn({ peer: this.peerId, code: err.code, err: err.message }, 'control session refused')
        void this.close(err.code, err.message)
      } else if (!this.connection.status.startsWith('clos')) {
        log.debug({ peer: this.peerId, err: (err as Error).message }, 'control session ended')
      }
      this.end(ended((err as Error).message))
    }
  }

  private end(why: string): void {
    this.welcomed()
    for (const answer of this.answers.values()) answer(null)
    if (this.hostId === '') return
    this.host.unregister(this)
    this.host.liveness.lost(this, `control session ended: ${why}`)
  }
}
