// The one periodic loop of the daemons: a tick, then a wait, then the next
// tick, so ticks never overlap however long one takes. stop() aborts the
// wait (and hands the tick an aborted signal) and resolves only once the
// tick in flight has ended; a start() after a stop() waits for that end too.
// A tick that throws is logged and the loop goes on.
import type { Logger } from '../log.js'
import { sleep } from './sleep.js'
import type { Startable } from './startable.js'

/**
 * What a tick returns: nothing for the usual wait, or the milliseconds to
 * sleep before the next tick instead (0: at once, more work is waiting;
 * more: a backoff that notifications must not cut short).
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a tick may be any async function, whose Promise<void> must fit
export type Tick = (signal: AbortSignal) => Promise<number | undefined | void> | number | undefined | void

export interface LoopOptions {
  /** Named in the log line of a failed tick. */
  name: string
  /** The usual wait between ticks. */
  everyMs: number
  /** Run the first tick at start (default) or only after the first wait. */
  immediate?: boolean
  /** The usual wait (default: sleep); e.g. the notifier's, which also ends on a new event. */
  wait?: (ms: number, signal: AbortSignal) => Promise<void>
  log?: Logger
}

export class Loop implements Startable {
  private abort: AbortController | null = null
  private done: Promise<void> = Promise.resolve()

  constructor(
    private readonly tick: Tick,
    private readonly o: LoopOptions
  ) {}

  get running(): boolean {
    return this.abort !== null
  }

  start(): void {
    if (this.abort !== null) return
    const abort = new AbortController()
    this.abort = abort
    const previous = this.done
    this.done = previous.then(async () => {
      await this.run(abort.signal)
    })
  }

  async stop(): Promise<void> {
    this.abort?.abort()
    this.abort = null
    await this.done
  }

  private async run(signal: AbortSignal): Promise<void> {
    const wait = this.o.wait ?? sleep
    if (this.o.immediate === false) await wait(this.o.everyMs, signal)
    while (!signal.aborted) {
      // biome-ignore lint/suspicious/noConfusingVoidType: what a Tick returns
      let next: number | undefined | void
      try {
        next = await this.tick(signal)
      } catch (err) {
        this.o.log?.error({ err: (err as Error).message }, `${this.o.name} failed`)
      }
      if (signal.aborted) break
      if (typeof next === 'number') {
        if (next > 0) await sleep(next, signal)
      } else {
        await wait(this.o.everyMs, signal)
      }
    }
  }
}

/** A part whose whole life is one Loop over its tick(): start() starts the loop, stop() awaits its end. */
export abstract class Periodic implements Startable {
  private readonly loop: Loop

  constructor(options: LoopOptions) {
    this.loop = new Loop(async (signal) => await this.tick(signal), options)
  }

  /** One round; see Tick for what it returns. */
  protected abstract tick(signal: AbortSignal): Promise<number | undefined>

  start(): void | Promise<void> {
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }
}
