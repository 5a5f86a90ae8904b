// Events: every state change has its outbox row; GET /v1/events streams
// them as server-sent events from PostgreSQL (no Redis configured here) and
// resumes after Last-Event-ID without loss or repetition.
import t from 'tap'
import { SseParser } from '../protocol/sse.js'
import { ADMIN_TOKEN, addHost, eventually, startTestCoordinator } from './helpers/coordinator.js'

interface Sse {
  id: number
  event: string
  data: { id: number; type: string; subject: { kind: string; id: string } }
}

/**
 * Reads SSE messages until `count` arrived (or `done` says so, or `ms` passed), then disconnects.
 * `opened` is called when the response starts: the server has fixed where the stream begins by then.
 */
async function readSse(
  url: string,
  headers: Record<string, string>,
  count: number | ((seen: Sse[]) => boolean),
  ms = 10_000,
  opened = () => {}
): Promise<Sse[]> {
  const done = typeof count === 'number' ? (seen: Sse[]) => seen.length >= count : count
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), ms)
  const out: Sse[] = []
  try {
    const r = await fetch(url, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...headers },
      signal: abort.signal
    })
    if (r.headers.get('content-type')?.startsWith('text/event-stream') !== true)
      throw new Error(`not an event stream: ${r.status}`)
    opened()
    const decoder = new TextDecoder()
    const parser = new SseParser()
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      for (const m of parser.push(decoder.decode(chunk, { stream: true }))) {
        out.push({ id: Number(m.id), event: m.event, data: JSON.parse(m.data) })
        if (done(out)) {
          abort.abort()
          return out
        }
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err
  } finally {
    clearTimeout(timer)
  }
  return out
}

t.test('state changes are events, streamed and resumable', async (t) => {
  const c = await startTestCoordinator(t)
  const host = await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const w = await c.call('POST', '/v1/workloads', {
    name: 'chat',
    kind: 'endpoint',
    replicas: 2,
    gpus: 4,
    pools: ['h100-80gb-8x-nvlink'],
    run: { driver: 'process', command: ['serve'] }
  })
  await eventually(async () => (await c.call('GET', `/v1/workloads/${w.body.id as string}`)).body.state === 'placed')
  await c.call('POST', `/v1/hosts/${host}/cordon`)

  const all = await readSse(`${c.api}/v1/events?after=0`, {}, 7)
  t.same(
    all.map((e) => e.event),
    [
      'pool.created',
      'host.registered',
      'workload.created',
      'placement.created',
      'placement.created',
      'workload.placed',
      'host.state-changed'
    ]
  )
  t.same(
    all.map((e) => e.id),
    [...all.map((e) => e.id)].sort((a, b) => a - b),
    'in id order'
  )
  t.ok(
    all.every((e) => e.data.id === e.id && e.data.type === e.event),
    'data carries the event'
  )
  t.equal(all.find((e) => e.event === 'host.registered')?.data.subject.id, host)

  // Resume after the third event: the rest, nothing before, nothing twice.
  const third = all[2] as Sse
  const resumed = await readSse(`${c.api}/v1/events`, { 'last-event-id': String(third.id) }, all.length - 3)
  t.same(
    resumed.map((e) => e.id),
    all.slice(3).map((e) => e.id)
  )

  // A live subscriber without Last-Event-ID gets what happens from now on.
  let subscribed!: () => void
  const open = new Promise<void>((resolve) => {
    subscribed = resolve
  })
  const live = readSse(`${c.api}/v1/events`, {}, 1, 10_000, () => {
    subscribed()
  })
  await Promise.race([open, live])
  await c.call('POST', `/v1/hosts/${host}/uncordon`)
  const [next] = await live
  t.equal(next?.event, 'host.state-changed')
  t.ok((next?.id ?? 0) > (all[all.length - 1]?.id ?? 0), 'newer than everything before')
})

t.test('event ids follow commit order under concurrent writers', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const listener = readSse(
    `${c.api}/v1/events?after=0`,
    {},
    (seen) => seen.filter((e) => e.event === 'workload.created').length >= 40,
    20_000
  )
  await Promise.all(
    Array.from(
      { length: 40 },
      async (_, i) =>
        await c.call('POST', '/v1/workloads', {
          name: `w${i}`,
          kind: 'session',
          pool: 'h100-80gb-8x-nvlink',
          gpus: 1,
          run: { driver: 'process', command: ['x'] }
        })
    )
  )
  const seen = await listener
  const created = seen.filter((e) => e.event === 'workload.created')
  t.equal(created.length, 40, 'a live reader sees every event exactly once')
  t.equal(new Set(seen.map((e) => e.id)).size, seen.length, 'no repeats')
  t.ok(
    seen.every((e, i) => i === 0 || e.id > (seen[i - 1] as Sse).id),
    'ids strictly increasing'
  )
  const { rows } = await c.pool.query<{ n: number }>(
    "select count(*)::int as n from events where type = 'workload.created'"
  )
  t.equal(rows[0]?.n, 40)
})
