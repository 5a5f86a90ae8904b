// Readiness of endpoint replicas (docs/serving.md "Readiness and ports"): for
// each running placement with `serve.readiness` the agent asks
// GET http://127.0.0.1:$PORT<path> every period. One 2xx makes it ready;
// failureThreshold failures in a row make it unready again. A replica that is
// not ready within serve.startupSeconds of its start, or stays unready that
// long after it was ready, is stopped and ends `failed`: the coordinator
// places it again with its crash backoff, as it does for a process that exits.
//
// The prober follows the runtime: it starts probing on 'running' (and, at
// start, every placement already running: re-adopted after an agent restart),
// and stops at the placement's end. Each change is emitted as 'ready'; the
// control session sends it with the placement's status.
import { EventEmitter } from 'node:events'
import { request } from 'node:http'
import { Loop } from '../../common/daemon/loop.js'
import { sleep } from '../../common/daemon/sleep.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { RunningPlacement } from '../../protocol/control.js'
import { DEFAULT_STARTUP_SECONDS, READINESS_DEFAULTS, type Readiness } from '../../protocol/workload.js'
import { deferred, isFinal, type Deferred } from '../runtime/entry.js'
import type { Runtime } from '../runtime/types.js'

/** What the control session reads: the current readiness of a placement, and 'ready' (placementId) on changes. */
export interface ReadinessSource extends EventEmitter {
  /** Whether the placement's probe passes; undefined when it is not probed. */
  ready: (placementId: string) => boolean | undefined
}

/** The outcome of one probe: passed, or why not, in words for a placement's reason. */
export type ProbeOutcome = { ok: true } | { ok: false; why: string }

const ERRNO_WORDS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  ETIMEDOUT: 'timed out'
}

/**
 * One GET on 127.0.0.1: its own connection, closed after the status line (keep-alive off, the body
 * never read: a replica cannot make the agent buffer or hold anything).
 */
export async function probeOnce(port: number, path: string, timeoutMs: number): Promise<ProbeOutcome> {
  return await new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'GET',
        agent: false,
        timeout: timeoutMs,
        headers: { 'user-agent': 'gpumesh-agent readiness', connection: 'close' }
      },
      (res) => {
        const code = res.statusCode ?? 0
        res.destroy()
        resolve(code >= 200 && code < 300 ? { ok: true } : { ok: false, why: `GET ${path} answered ${code}` })
      }
    )
    req.on('timeout', () => {
      req.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'GPUMESH_TIMEOUT' }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => {
      const words = err.code === undefined ? undefined : ERRNO_WORDS[err.code]
      resolve({ ok: false, why: `GET ${path}: ${words ?? err.message}` })
    })
    req.end()
  })
}

/** How long the agent's start waits for the first probes of the placements it re-adopted. */
const FIRST_PROBES_MS = 2000

interface Probed {
  loop: Loop
  /** Settles after the first probe (or at once while the initial delay runs). */
  first: Deferred
  ready: boolean
  failures: number
  /** Since when it has been unready: its start, or the failure that made it unready. */
  unreadySince: number
  everReady: boolean
  /** The last failure, for the reason of a replica given up on. */
  last: string | null
}

export class ReadinessProber extends EventEmitter implements ReadinessSource, Startable {
  readonly #probed = new Map<string, Probed>()
  #running = false

  constructor(private readonly o: { runtime: Runtime; log: Logger }) {
    super()
  }

  /**
   * Probes what already runs (re-adopted after an agent restart) once before the control session's
   * hello, so that the hello carries their readiness: a replica that serves is not reported unready
   * because its agent restarted.
   */
  async start(): Promise<void> {
    this.#running = true
    this.o.runtime.on('status', this.#onStatus)
    for (const p of this.o.runtime.list()) this.#onStatus(p)
    const given = new AbortController()
    await Promise.race([
      Promise.all([...this.#probed.values()].map(async (p) => await p.first.promise)),
      sleep(FIRST_PROBES_MS, given.signal)
    ])
    given.abort()
  }

  async stop(): Promise<void> {
    this.#running = false
    this.o.runtime.off('status', this.#onStatus)
    const loops = [...this.#probed.values()].map((p) => p.loop)
    this.#probed.clear()
    await Promise.all(loops.map(async (l) => await l.stop()))
  }

  ready = (placementId: string): boolean | undefined => this.#probed.get(placementId)?.ready

  readonly #onStatus = (s: RunningPlacement): void => {
    if (s.state === 'running') this.#watch(s.placementId)
    else if (isFinal(s.state)) this.#forget(s.placementId)
  }

  #watch(id: string): void {
    if (!this.#running || this.#probed.has(id)) return
    const a = this.o.runtime.assignment(id)
    const readiness = a?.serve?.readiness
    if (a?.port === undefined || readiness === undefined) return
    const settings = { ...READINESS_DEFAULTS, ...readiness }
    const startupMs = (a.serve?.startupSeconds ?? DEFAULT_STARTUP_SECONDS) * 1000
    const startedAt = this.o.runtime.startedAt(id) ?? Date.now()
    const port = a.port
    const p: Probed = {
      first: deferred(),
      ready: false,
      failures: 0,
      unreadySince: startedAt,
      everReady: false,
      last: null,
      loop: new Loop(async () => await this.#tick(id, p, port, settings, startedAt, startupMs), {
        name: `readiness of ${id}`,
        everyMs: settings.periodSeconds * 1000,
        log: this.o.log
      })
    }
    this.#probed.set(id, p)
    p.loop.start()
  }

  #forget(id: string): void {
    const p = this.#probed.get(id)
    if (p === undefined) return
    this.#probed.delete(id)
    p.first.resolve()
    void p.loop.stop()
  }

  /** One probe; returns how long to wait for the next. */
  async #tick(
    id: string,
    p: Probed,
    port: number,
    r: Required<Readiness>,
    startedAt: number,
    startupMs: number
  ): Promise<number | undefined> {
    const delay = startedAt + r.initialDelaySeconds * 1000 - Date.now()
    if (delay > 0) {
      p.first.resolve()
      return delay
    }
    const began = Date.now()
    const outcome = await probeOnce(port, r.path, r.timeoutSeconds * 1000)
    p.first.resolve()
    if (this.#probed.get(id) !== p) return // ended meanwhile
    if (outcome.ok) {
      p.failures = 0
      p.last = null
      if (!p.ready) this.#set(id, p, true, null)
    } else {
      p.failures++
      p.last = outcome.why
      if (p.ready && p.failures >= r.failureThreshold) {
        p.unreadySince = Date.now()
        this.#set(id, p, false, outcome.why)
      }
    }
    if (!p.ready && Date.now() - p.unreadySince >= startupMs) {
      this.#giveUp(id, p, startupMs)
      return
    }
    // A fixed period from probe to probe, however long the probe took.
    return Math.max(0, began + r.periodSeconds * 1000 - Date.now())
  }

  #set(id: string, p: Probed, ready: boolean, why: string | null): void {
    p.ready = ready
    if (ready) {
      p.everReady = true
      this.o.log.info({ placement: id }, 'replica ready')
    } else this.o.log.warn({ placement: id, why }, 'replica unready')
    this.emit('ready', id)
  }

  /** Not ready within the startup limit (or unready that long): stopped, and reported failed. */
  #giveUp(id: string, p: Probed, startupMs: number): void {
    const seconds = Math.round(startupMs / 1000)
    const last = p.last ?? 'no probe answered'
    const reason = p.everReady ? `unready for ${seconds} s: ${last}` : `not ready after ${seconds} s: ${last}`
    this.o.log.warn({ placement: id, reason }, 'replica stopped: not ready in time')
    this.#forget(id)
    void this.o.runtime
      .stop(id, reason, 'failed')
      .catch((err: Error) => this.o.log.warn({ placement: id, err: err.message }, 'stop failed'))
  }
}
