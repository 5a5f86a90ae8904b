// The daemon skeleton in common/daemon: the periodic loop, the start/stop
// order of a daemon's parts, the retry backoff, the abortable sleep.
import t from 'tap'
import { backoff } from '../common/daemon/backoff.js'
import { Loop } from '../common/daemon/loop.js'
import { sleep } from '../common/daemon/sleep.js'
import { group, startAll, Started, type Startable } from '../common/daemon/startable.js'
import { Mismatches } from './helpers/mismatches.js'

/** A promise and what settles it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

t.test('Loop: stop() resolves only after the tick in flight has ended', async (t) => {
  const inTick = gate()
  const release = gate()
  const trace: string[] = []
  const loop = new Loop(
    async () => {
      trace.push('tick start')
      inTick.open()
      await release.promise
      trace.push('tick end')
    },
    { name: 'test', everyMs: 10 }
  )
  loop.start()
  await inTick.promise
  const stopped = loop.stop().then(() => {
    trace.push('stopped')
  })
  // The tick is still blocked: stop must not have resolved. Releasing it lets both finish, in order.
  setImmediate(() => {
    trace.push('release')
    release.open()
  })
  await stopped
  t.same(trace, ['tick start', 'release', 'tick end', 'stopped'])
})

t.test(
  'Loop: ticks never overlap; a failing tick is logged and the loop goes on; a restart waits for the old run',
  async (t) => {
    let active = 0
    let maxActive = 0
    let ticks = 0
    const errors: string[] = []
    const log = {
      error: (o: { err: string }, msg: string) => {
        errors.push(`${msg}: ${o.err}`)
      }
    }
    const enough = gate()
    const loop = new Loop(
      async () => {
        active++
        maxActive = Math.max(maxActive, active)
        ticks++
        await sleep(2)
        active--
        if (ticks === 2) throw new Error('boom')
        if (ticks === 6) enough.open()
      },
      { name: 'test loop', everyMs: 0, log: log as never }
    )
    loop.start()
    await enough.promise
    // Restart while a tick may be in flight: the new run must wait for the old one.
    const stopping = loop.stop()
    loop.start()
    await stopping
    await loop.stop()
    t.same({ maxActive, errors }, { maxActive: 1, errors: ['test loop failed: boom'] })
  }
)

t.test(
  'Loop: a tick returning a delay sleeps that long instead of the usual wait; stop cuts the wait short',
  async (t) => {
    const waits: number[] = []
    let ticks = 0
    const second = gate()
    const loop = new Loop(
      () => {
        ticks++
        if (ticks === 2) second.open()
        return ticks === 1 ? 0 : 3_600_000
      },
      {
        name: 'test',
        everyMs: 1,
        wait: async (ms) => {
          waits.push(ms)
        }
      }
    )
    loop.start()
    await second.promise
    await loop.stop() // the hour-long sleep after the second tick ends at once
    t.same({ ticks, waits }, { ticks: 2, waits: [] })
  }
)

t.test('Started: stops in reverse order, each awaited; a failed stop is logged and the rest still stop', async (t) => {
  const trace: string[] = []
  const warnings: string[] = []
  const part = (name: string, failStop = false): Startable => ({
    start: async () => {
      await sleep(1)
      trace.push(`start ${name}`)
    },
    stop: async () => {
      await sleep(1)
      trace.push(`stop ${name}`)
      if (failStop) throw new Error(`${name} would not stop`)
    }
  })
  const started = new Started({
    warn: (o: { part: string }) => {
      warnings.push(o.part)
    }
  } as never)
  await started.start('a', part('a'))
  started.add('b', async () => {
    trace.push('stop b')
  })
  await started.start('c', part('c', true))
  await started.start('d', part('d'))
  await Promise.all([started.stop(), started.stop()]) // twice at once: one stop
  t.same(
    { trace, warnings },
    {
      trace: ['start a', 'start c', 'start d', 'stop d', 'stop c', 'stop b', 'stop a'],
      warnings: ['c']
    }
  )
})

t.test(
  'startAll: a part that fails to start stops the ones started before it, in reverse, and the error is thrown',
  async (t) => {
    const trace: string[] = []
    const part = (name: string, fail = false): [string, Startable] => [
      name,
      {
        start: () => {
          if (fail) throw new Error(`${name} cannot start`)
          trace.push(`start ${name}`)
        },
        stop: async () => {
          trace.push(`stop ${name}`)
        }
      }
    ]
    await t.rejects(startAll([part('a'), part('b'), part('c', true), part('d')]), { message: 'c cannot start' })
    t.same(trace, ['start a', 'start b', 'stop b', 'stop a'])
  }
)

t.test('group: a stop called while its start is in flight stops what that start started', async (t) => {
  const trace: string[] = []
  const slow = gate()
  const g = group([
    [
      'a',
      {
        start: async () => {
          await slow.promise
          trace.push('start a')
        },
        stop: async () => {
          trace.push('stop a')
        }
      }
    ],
    [
      'b',
      {
        start: () => {
          trace.push('start b')
        },
        stop: async () => {
          trace.push('stop b')
        }
      }
    ]
  ])
  const starting = g.start()
  const stopping = g.stop()
  slow.open()
  await Promise.all([starting, stopping])
  t.same(trace, ['start a', 'start b', 'stop b', 'stop a'])
})

t.test('backoff: doubles from the base, capped, jitter within [half, whole)', async (t) => {
  const cases: Array<{ attempt: number; options?: { baseMs?: number; capMs?: number }; low: number; high: number }> = [
    { attempt: 0, low: 50, high: 100 },
    { attempt: 1, low: 100, high: 200 },
    { attempt: 5, low: 1600, high: 3200 },
    { attempt: 40, low: 15_000, high: 30_000 },
    { attempt: 3, options: { baseMs: 200, capMs: 5000 }, low: 800, high: 1600 },
    { attempt: 10, options: { baseMs: 200, capMs: 5000 }, low: 2500, high: 5000 }
  ]
  const m = new Mismatches()
  for (const c of cases) {
    const what = `attempt ${c.attempt} ${JSON.stringify(c.options ?? {})}`
    m.check(
      what,
      'lowest',
      backoff(c.attempt, c.options, () => 0),
      c.low
    )
    const highest = backoff(c.attempt, c.options, () => 0.999999)
    m.check(what, `highest ${highest} just under ${c.high}`, highest < c.high && highest > c.high * 0.999, true)
  }
  t.same(m.list, [], 'each attempt: its range')
})

t.test('sleep: an abort ends it at once; an already aborted signal does not wait', async (t) => {
  const abort = new AbortController()
  const slept = sleep(3_600_000, abort.signal)
  abort.abort()
  await slept
  await sleep(3_600_000, AbortSignal.abort())
  t.pass('both returned without waiting an hour')
})
