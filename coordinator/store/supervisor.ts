// Keeps a server process (the embedded PostgreSQL) running. One that dies
// (kill -9, the OOM killer, a crash) is started again after a backoff;
// PostgreSQL runs its crash recovery itself on start. A start that fails and a
// server that does not stay up `stableMs` both count; after `maxRestarts` in a
// row the supervisor gives up and says so, so that the coordinator exits
// non-zero and systemd starts it (and with it the database) afresh.
import type { ChildProcess } from 'node:child_process'
import { type BackoffOptions, backoff } from '../../common/daemon/backoff.js'
import { sleep } from '../../common/daemon/sleep.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'

export interface SupervisorOptions {
  /** Named in its log lines. */
  name: string
  /** Starts the server; resolves with its process once it serves. */
  start: () => Promise<ChildProcess>
  /** Stops the server, whose process is alive. */
  stop: () => Promise<void>
  /** Told once, when restarting is given up. */
  onGiveUp: (err: Error) => void
  log: Logger
  /** Restarts in a row before giving up (default 6). */
  maxRestarts?: number
  /** How long a server must stay up for its restart not to count against the next (default 60 s). */
  stableMs?: number
  /** Delays between restarts (default 250 ms doubling to 5 s, with jitter). */
  backoff?: BackoffOptions
}

export class Supervisor implements Startable {
  private child: ChildProcess | null = null
  private startedAt = 0
  private restarts = 0
  private readonly stopping = new AbortController()
  private restarting: Promise<void> = Promise.resolve()

  constructor(private readonly o: SupervisorOptions) {}

  /** The first start: a failure is thrown to the caller, never retried. */
  async start(): Promise<void> {
    await this.launch()
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    await this.restarting
    const child = this.child
    this.child = null
    if (child !== null && running(child)) await this.o.stop()
  }

  private async launch(): Promise<void> {
    const child = await this.o.start()
    this.child = child
    this.startedAt = Date.now()
    const onExit = () => {
      this.exited(child)
    }
    child.once('exit', onExit)
    // It may have died while start() resolved, before the listener was there.
    if (!running(child)) {
      child.off('exit', onExit)
      this.exited(child)
    }
  }

  private exited(child: ChildProcess): void {
    if (this.stopping.signal.aborted || this.child !== child) return
    this.child = null
    const upMs = Date.now() - this.startedAt
    if (upMs >= (this.o.stableMs ?? 60_000)) this.restarts = 0
    this.o.log.error(
      { code: child.exitCode, signal: child.signalCode, upMs },
      `${this.o.name} exited; restarting it (crash recovery runs on start)`
    )
    this.restarting = this.restart()
  }

  private async restart(): Promise<void> {
    const signal = this.stopping.signal
    const max = this.o.maxRestarts ?? 6
    let last: Error = new Error(`${this.o.name} died ${max} times in a row`)
    while (this.restarts < max) {
      const attempt = ++this.restarts
      await sleep(backoff(attempt - 1, this.o.backoff ?? { baseMs: 250, capMs: 5000 }), signal)
      if (signal.aborted) return
      try {
        await this.launch()
        this.o.log.info({ attempt }, `${this.o.name} restarted`)
        return
      } catch (err) {
        if (signal.aborted) return
        last = err as Error
        this.o.log.warn({ err: last.message, attempt, of: max }, `${this.o.name} did not start`)
      }
    }
    this.o.log.fatal({ err: last.message, restarts: max }, `${this.o.name} cannot be restarted`)
    this.o.onGiveUp(last)
  }
}

function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null
}
