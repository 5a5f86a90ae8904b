// The one shape of a daemon's parts: start, then stop (always awaited). A
// daemon starts its parts in order and stops them in the reverse order, and
// a part that fails to start stops the ones started before it.
import type { Logger } from '../log.js'

export interface Startable {
  start: () => Promise<void> | void
  stop: () => Promise<void>
}

/** What has been started so far, to be stopped in reverse. */
export class Started {
  private readonly parts: Array<{ name: string; stop: () => Promise<void> }> = []
  private stopping: Promise<void> | null = null

  constructor(private readonly log?: Logger) {}

  /** Starts `part` and remembers it; returns it for convenience. */
  async start<T extends Startable>(name: string, part: T): Promise<T> {
    await part.start()
    this.parts.push({
      name,
      stop: async () => {
        await part.stop()
      }
    })
    return part
  }

  /** Remembers something already started (a resource a factory handed back running). */
  add(name: string, stop: () => Promise<void> | void): void {
    this.parts.push({
      name,
      stop: async () => {
        await stop()
      }
    })
  }

  /** Stops everything in reverse order, each awaited; one that fails is logged and the rest still stop. Once. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const part of this.parts.reverse()) {
        try {
          await part.stop()
        } catch (err) {
          this.log?.warn({ err: (err as Error).message, part: part.name }, 'shutdown step failed')
        }
      }
      this.parts.length = 0
    })()
    await this.stopping
  }
}

/**
 * Starts `parts` in order; if one fails, the ones already started are stopped
 * (in reverse) and the error is thrown. Resolves to what stops them all.
 */
export async function startAll(parts: Array<[name: string, part: Startable]>, log?: Logger): Promise<Started> {
  const started = new Started(log)
  try {
    for (const [name, part] of parts) await started.start(name, part)
  } catch (err) {
    await started.stop()
    throw err
  }
  return started
}

/** Parts that start together in order and stop together in reverse (e.g. the leader's services). */
export function group(
  parts: Array<[name: string, part: Startable]>,
  log?: Logger
): { start: () => Promise<void>; stop: () => Promise<void> } {
  let started: Started | null = null
  // Starts and stops take turns: a stop called while a start is in flight stops what that start started.
  let queue: Promise<void> = Promise.resolve()
  const turn = async (step: () => Promise<void>) => {
    const next = queue.then(step)
    queue = next.catch(() => {})
    await next
  }
  return {
    start: async () => {
      await turn(async () => {
        started ??= await startAll(parts, log)
      })
    },
    stop: async () => {
      await turn(async () => {
        const s = started
        started = null
        await s?.stop()
      })
    }
  }
}
