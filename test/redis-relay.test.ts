// Events and usage statistics through a real redis-server: the relay
// publishes the outbox in order to gpumesh:events; Redis stopped and started
// mid-stream delays events but loses and repeats none.
import { Redis } from 'ioredis'
import t from 'tap'
import { EVENT_STREAM } from '../coordinator/events/relay.js'
import { HOST_KEY, USAGE_KEY } from '../coordinator/events/usage-keys.js'
import { addHost, eventually, startTestCoordinator } from './helpers/coordinator.js'
import { startRedis } from './helpers/redis.js'

const session = (name: string) => ({
  name,
  kind: 'session',
  pool: 'h100-80gb-8x-nvlink',
  gpus: 1,
  run: { driver: 'process', command: ['x'] }
})

async function streamIds(redis: Redis): Promise<number[]> {
  const entries = await redis.xrange(EVENT_STREAM, '-', '+')
  return entries.map(([id, fields]) => {
    const outbox = Number(fields[fields.indexOf('id') + 1])
    if (`${outbox}-0` !== id) throw new Error(`entry ${id} carries outbox id ${outbox}`)
    return outbox
  })
}

async function outboxIds(c: { pool: { query: <R>(q: string) => Promise<{ rows: R[] }> } }): Promise<number[]> {
  const { rows } = await c.pool.query<{ id: number }>('select id from events order by id')
  return rows.map((r) => r.id)
}

t.test('relay: in order, exactly once, across a Redis restart', async (t) => {
  const redisServer = await startRedis(t, { persistent: true })
  const c = await startTestCoordinator(t, { redisUrl: redisServer.url })
  const redis = new Redis(redisServer.url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 })
  redis.on('error', () => {})
  await redis.connect()
  t.teardown(() => {
    redis.disconnect()
  })

  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  for (let i = 0; i < 5; i++) await c.call('POST', '/v1/workloads', session(`before-${i}`))
  await eventually(
    async () => {
      const [ids, outbox] = [await streamIds(redis), await outboxIds(c)]
      return outbox.length > 0 && ids.length === outbox.length
    },
    10_000,
    'the first events in Redis'
  )

  await redisServer.stop()
  const during: number[] = []
  for (let i = 0; i < 5; i++) during.push((await c.call('POST', '/v1/workloads', session(`during-${i}`))).status)
  t.same(during, Array(5).fill(201), 'the API works while Redis is down')
  const readyDown = await c.call('GET', '/readyz', undefined, null)
  t.equal(readyDown.status, 503, '/readyz reports Redis down')
  t.match(readyDown.body.detail, /redis/)
  await new Promise((resolve) => setTimeout(resolve, 500))
  await redisServer.start()
  for (let i = 0; i < 5; i++) await c.call('POST', '/v1/workloads', session(`after-${i}`))

  const outbox = await eventually(
    async () => {
      const outbox = await outboxIds(c)
      const ids = await streamIds(redis).catch(() => [])
      return ids.length === outbox.length && outbox.length >= 30 ? outbox : undefined
    },
    20_000,
    'every event in Redis after recovery'
  )
  t.same(await streamIds(redis), outbox, 'every outbox event once, in order')
  t.equal((await c.call('GET', '/readyz', undefined, null)).status, 200, 'ready again')
})

t.test('relay resumes from its cursor after a restart without duplicates', async (t) => {
  const redisServer = await startRedis(t, { persistent: true })
  const c = await startTestCoordinator(t, { redisUrl: redisServer.url })
  const redis = new Redis(redisServer.url)
  t.teardown(() => {
    redis.disconnect()
  })
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  await eventually(async () => (await streamIds(redis)).length === 2)
  // Forget the saved cursor, as if the coordinator died before writing it:
  // the stream's own top id keeps the relay from publishing twice.
  await c.pool.query('delete from relay_cursors')
  await c.leadership.stop()
  await c.scheduler.stop()
  const c2 = await startTestCoordinator(t, { redisUrl: redisServer.url, databaseUrl: c.databaseUrl })
  await c2.call('POST', '/v1/workloads', session('later'))
  const ids = await eventually(async () => {
    const ids = await streamIds(redis)
    return ids.length >= 5 ? ids : undefined
  })
  t.same(ids, await outboxIds(c2))
})

t.test('usage statistics and live host metadata', async (t) => {
  const redisServer = await startRedis(t)
  const c = await startTestCoordinator(t, { redisUrl: redisServer.url })
  const redis = new Redis(redisServer.url)
  t.teardown(() => {
    redis.disconnect()
  })
  const host = await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const w = await c.call('POST', '/v1/workloads', { ...session('busy'), gpus: 4 })
  await eventually(async () => (await c.call('GET', `/v1/workloads/${w.body.id as string}`)).body.state === 'placed')
  const usage = await eventually(
    async () => {
      const h = await redis.hgetall(USAGE_KEY('h100-80gb-8x-nvlink'))
      const total = Object.values(h).reduce((s, v) => s + Number(v), 0)
      return total >= 4 ? h : undefined
    },
    10_000,
    'GPU-seconds to accumulate'
  )
  t.ok(
    Object.keys(usage).every((k) => /^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(k)),
    'one field per UTC minute'
  )
  t.ok((await redis.ttl(USAGE_KEY('h100-80gb-8x-nvlink'))) > 0, 'usage expires')
  const meta = JSON.parse((await redis.get(HOST_KEY(host))) ?? 'null') as { pool: string; gpus: number } | null
  t.match(meta, { pool: 'h100-80gb-8x-nvlink', gpus: 8 })
  const ttl = await redis.ttl(HOST_KEY(host))
  t.ok(ttl > 0 && ttl <= 30, 'host metadata expires')
})
