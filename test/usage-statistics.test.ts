// Usage in a real redis-server: each coordinator writes the live GPU tables
// of the agents reporting to it (expiring), and the leader counts
// GPU-seconds and mean utilization per workload and per pool per minute,
// with the utilization of hosts whose agents report to another coordinator
// read from what that coordinator wrote; what is counted while Redis is away
// is added once it is back.
import { Redis } from 'ioredis'
import t from 'tap'
import { createLogger } from '../common/log.js'
import type { LiveHostGpus } from '../coordinator/events/live-gpus-publisher.js'
import { createRedis } from '../coordinator/events/redis.js'
import { UsageRecorder } from '../coordinator/events/usage.js'
import { HOST_GPUS_KEY, readUsage, type UsageMinute } from '../coordinator/events/usage-keys.js'
import { addHost, eventually, factsFor, startTestCoordinator, workloadWhen } from './helpers/coordinator.js'
import { gpuTelemetry, rawTelemetryHost } from './helpers/gpu-metrics.js'
import { startRedis } from './helpers/redis.js'

const total = (minutes: UsageMinute[]) => minutes.reduce((s, m) => s + m.gpuSeconds, 0)

t.test(
  "a GPU's utilization counts for the workload holding it and its pool, through another coordinator's session",
  async (t) => {
    const redisServer = await startRedis(t)
    const leader = await startTestCoordinator(t, { redisUrl: redisServer.url })
    await eventually(() => leader.leadership.leader, 30_000, 'the first coordinator to lead')
    const other = await startTestCoordinator(t, { redisUrl: redisServer.url, databaseUrl: leader.databaseUrl })
    const redis = new Redis(redisServer.url)
    t.teardown(() => {
      redis.disconnect()
    })
    const pool = (await factsFor('l40s-1x')).pool.key
    // The agent reports to the coordinator that does not lead: only it has the GPU table.
    const host = await rawTelemetryHost(t, other, 'busy-l40s', {
      full: true,
      gpus: [
        gpuTelemetry(0, {
          usage: {
            utilizationPct: 60,
            memoryUsedMiB: 4096,
            temperatureC: 50,
            powerW: 200,
            at: new Date().toISOString()
          }
        })
      ]
    })

    const live = await eventually(
      async () => {
        const raw = await redis.get(HOST_GPUS_KEY(host.hostId))
        return raw === null ? undefined : (JSON.parse(raw) as LiveHostGpus)
      },
      30_000,
      'the live GPU table in Redis'
    )
    const ttl = await redis.ttl(HOST_GPUS_KEY(host.hostId))
    t.same(
      {
        host: live.hostId,
        gpus: live.gpus.map((g) => [g.index, g.usage?.utilizationPct]),
        expires: ttl > 0 && ttl <= 30
      },
      { host: host.hostId, gpus: [[0, 60]], expires: true },
      'live per-GPU usage, expiring'
    )

    const w = await leader.call('POST', '/v1/workloads', {
      name: 'busy',
      kind: 'session',
      pool,
      gpus: 1,
      run: { driver: 'process', command: ['sleep', '600'] }
    })
    t.equal(w.status, 201, 'workload created')
    await workloadWhen(leader, w.body.id as string, (x) => x.state === 'placed', 30_000)
    const stats = await eventually(
      async () => {
        const byWorkload = await readUsage(redis, { workload: w.body.id as string })
        const byPool = await readUsage(redis, { pool })
        return total(byWorkload) >= 2 && total(byPool) >= 2 ? { byWorkload, byPool } : undefined
      },
      30_000,
      'GPU-seconds of the workload and the pool'
    )
    // Sums of floats: equal to the thousandth.
    const means = (ms: UsageMinute[]) => [
      ...new Set(ms.map((m) => (m.meanUtilizationPct === null ? null : Math.round(m.meanUtilizationPct * 1000) / 1000)))
    ]
    t.same(
      {
        workload: means(stats.byWorkload),
        pool: means(stats.byPool),
        minutes: [...stats.byWorkload, ...stats.byPool].every((m) => /^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(m.minute))
      },
      { workload: [60], pool: [60], minutes: true },
      'mean utilization 60 % for the workload and the pool, minute by minute'
    )

    // The GPU goes idle: the mean of the minutes to come falls.
    host.report({
      full: false,
      gpus: [
        {
          index: 0,
          usage: { utilizationPct: 0, memoryUsedMiB: 0, temperatureC: 40, powerW: 70, at: new Date().toISOString() }
        }
      ]
    })
    const before = total(stats.byWorkload)
    await eventually(
      async () => {
        const byWorkload = await readUsage(redis, { workload: w.body.id as string })
        // At 0 % from some point on, whatever the minute boundaries: busy/total falls below 60 %.
        const busy = byWorkload.reduce((s, m) => s + ((m.meanUtilizationPct ?? 0) / 100) * m.gpuSeconds, 0)
        return total(byWorkload) > before * 2 + 2 && busy / total(byWorkload) < 0.55
      },
      60_000,
      'idle time to lower the mean'
    )
  }
)

t.test('GPU-seconds counted while Redis is away reach it once it is back', async (t) => {
  const redisServer = await startRedis(t, { persistent: true })
  // No Redis for the coordinator: the recorder under test is the only writer, ticked by hand.
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'l40s-1x', 'held')
  const w = await c.call('POST', '/v1/workloads', {
    name: 'held',
    kind: 'session',
    pool: (await factsFor('l40s-1x')).pool.key,
    gpus: 1,
    run: { driver: 'process', command: ['sleep', '600'] }
  })
  await workloadWhen(c, w.body.id as string, (x) => x.state === 'placed', 30_000)
  const redis = createRedis(redisServer.url)
  redis.on('error', () => {})
  await redis.connect()
  t.teardown(() => {
    redis.disconnect()
  })
  const recorder = new UsageRecorder(c.pool, redis, createLogger('usage', { level: 'silent' }), 3_600_000)
  const beforeStart = Date.now()
  recorder.start()
  const afterStart = Date.now()
  t.teardown(async () => {
    await recorder.stop()
  })
  await redisServer.stop()
  await recorder.tick()
  await redisServer.start()
  await eventually(() => redis.status === 'ready', 30_000, 'the client to reconnect')
  const lastCalled = Date.now()
  await recorder.tick()
  const lastDone = Date.now()
  const seconds = total(await readUsage(redis, { workload: w.body.id as string }))
  // Without the backlog, the time up to the tick that failed would be missing (1e-6: sums of floats).
  t.ok(
    seconds >= (lastCalled - afterStart) / 1000 - 1e-6 && seconds <= (lastDone - beforeStart) / 1000,
    `${seconds} GPU-seconds: the whole time from start to the last tick (${(lastCalled - afterStart) / 1000} to ${(lastDone - beforeStart) / 1000})`
  )
})
