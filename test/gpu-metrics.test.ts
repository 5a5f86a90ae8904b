// The coordinator's /metrics has one series per GPU under dcgm-exporter's
// names and labels, built from what the agents report: a real agent process
// sampling the nvidia-smi double shows a value the test writes in its values
// file; health, XIDs and GPUs without usage come out as DESIGN says; a host
// whose session ends, or that is revoked, has no series.
import t from 'tap'
import { GPU_METRIC_NAMES } from '../coordinator/telemetry/gpu-metrics.js'
import { eventually, factsFor, startTestCoordinator } from './helpers/coordinator.js'
import { gpuTelemetry, rawTelemetryHost, scrape, series, seriesValue } from './helpers/gpu-metrics.js'
import { idleGpu } from './helpers/gpu-values.js'
import { processJoinTarget } from './helpers/mesh.js'
import { telemetryAgent } from './helpers/telemetry-agent.js'

t.test('a value written to the nvidia-smi double reaches /metrics as DCGM_FI_DEV_GPU_UTIL', async (t) => {
  const c = await startTestCoordinator(t)
  const gpus = [idleGpu(0), idleGpu(1)]
  const agent = telemetryAgent(t, await processJoinTarget(c), gpus, { GPUMESH_NODE_NAME: 'metrics-node' })
  const gpu1 = { gpu: '1', Hostname: 'metrics-node' }
  await eventually(
    async () => seriesValue(await scrape(c), 'DCGM_FI_DEV_GPU_UTIL', gpu1) === 0,
    60_000,
    'GPU 1 of the agent on /metrics'
  )
  gpus[1] = { ...gpus[1], 'utilization.gpu': 73, 'memory.used': 20000 }
  agent.write(gpus)
  const text = await eventually(
    async () => {
      const text = await scrape(c)
      return seriesValue(text, 'DCGM_FI_DEV_GPU_UTIL', gpu1) === 73 ? text : undefined
    },
    30_000,
    'the new utilization on /metrics'
  )
  const host = (await c.call('GET', '/v1/hosts')).body.items[0] as { id: string; pool: string }
  t.same(
    series(text, 'DCGM_FI_DEV_GPU_UTIL').find((s) => s.labels.gpu === '1'),
    {
      labels: {
        gpu: '1',
        UUID: 'GPU-00000000-0000-0000-0000-000000000001',
        pci_bus_id: '00000000:05:00.0',
        device: 'nvidia1',
        modelName: 'NVIDIA H100 80GB HBM3',
        Hostname: 'metrics-node',
        pool: host.pool
      },
      value: 73
    },
    "dcgm-exporter's labels, and the pool"
  )
  t.same(
    ['DCGM_FI_DEV_FB_USED', 'DCGM_FI_DEV_FB_FREE', 'DCGM_FI_DEV_GPU_TEMP', 'DCGM_FI_DEV_POWER_USAGE'].map((n) =>
      seriesValue(text, n, gpu1)
    ),
    [20000, 81559 - 20000, 41, 69.85],
    'memory used and free (memory.total of the facts less the used), temperature, power'
  )

  const revoked = await c.call('DELETE', `/v1/hosts/${host.id}`)
  t.equal(revoked.status, 204, 'host revoked')
  const after = await eventually(
    async () => {
      const text = await scrape(c)
      return GPU_METRIC_NAMES.every((n) => series(text, n).length === 0) ? text : undefined
    },
    30_000,
    "the revoked host's series to go"
  )
  t.ok(after.includes('# TYPE DCGM_FI_DEV_GPU_UTIL gauge'), 'the families stay, empty')
  t.equal((await agent.child).exitCode, 78, 'the revoked agent exits 78')
})

t.test('health, XIDs and a GPU without usage; the series go with the session', async (t) => {
  const c = await startTestCoordinator(t)
  const facts = await factsFor('l40s-1x')
  const fact = facts.gpus[0] as { name: string; memoryMiB: number; uuid: string }
  const host = await rawTelemetryHost(t, c, 'raw-gpus', {
    full: true,
    gpus: [
      gpuTelemetry(0, {
        uuid: fact.uuid,
        health: { state: 'failed', reasons: ['xid-79'], since: '2026-01-01T00:00:00.000Z' },
        usage: {
          utilizationPct: 37,
          memoryUsedMiB: 2048,
          temperatureC: 61,
          powerW: 250.5,
          at: '2026-01-01T00:00:00.000Z'
        },
        xids: { last: 79, counts: { '13': 1, '79': 2 } }
      }),
      // Missing from nvidia-smi: no usage, and no facts for it either.
      gpuTelemetry(1, {
        health: { state: 'degraded', reasons: ['gpu-missing'], since: '2026-01-01T00:00:00.000Z' },
        usage: null
      })
    ]
  })
  const text = await eventually(
    async () => {
      const text = await scrape(c)
      return series(text, 'gpumesh_gpu_health').length === 6 ? text : undefined
    },
    30_000,
    'health series of both GPUs'
  )
  const pick = (name: string, keys: string[]) =>
    series(text, name)
      .map((s) => ({ ...Object.fromEntries(keys.map((k) => [k, s.labels[k]])), value: s.value }))
      .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))
  t.same(
    {
      util: pick('DCGM_FI_DEV_GPU_UTIL', ['gpu', 'UUID', 'modelName', 'Hostname', 'pool']),
      free: pick('DCGM_FI_DEV_FB_FREE', ['gpu']),
      lastXid: pick('DCGM_FI_DEV_XID_ERRORS', ['gpu']),
      health: pick('gpumesh_gpu_health', ['gpu', 'state']),
      xids: pick('gpumesh_gpu_xid_total', ['gpu', 'xid'])
    },
    {
      util: [
        { gpu: '0', UUID: fact.uuid, modelName: fact.name, Hostname: 'raw-gpus', pool: facts.pool.key, value: 37 }
      ],
      free: [{ gpu: '0', value: fact.memoryMiB - 2048 }],
      lastXid: [
        { gpu: '0', value: 79 },
        { gpu: '1', value: 0 }
      ],
      health: [
        { gpu: '0', state: 'degraded', value: 0 },
        { gpu: '0', state: 'failed', value: 1 },
        { gpu: '0', state: 'healthy', value: 0 },
        { gpu: '1', state: 'degraded', value: 1 },
        { gpu: '1', state: 'failed', value: 0 },
        { gpu: '1', state: 'healthy', value: 0 }
      ],
      xids: [
        { gpu: '0', xid: '13', value: 1 },
        { gpu: '0', xid: '79', value: 2 }
      ]
    },
    'a GPU without usage has health and XID series only; the last XID is a value, the counts a counter per XID'
  )
  t.notOk(
    series(text, 'gpumesh_gpu_health').some((s) => 'modelName' in s.labels),
    "gpumesh's own series keep snake_case labels"
  )

  const usage = {
    utilizationPct: 88,
    memoryUsedMiB: 2048,
    temperatureC: 61,
    powerW: 250.5,
    at: new Date().toISOString()
  }
  host.report({ full: false, gpus: [{ index: 0, usage }] })
  await eventually(
    async () => seriesValue(await scrape(c), 'DCGM_FI_DEV_GPU_UTIL', { gpu: '0' }) === 88,
    30_000,
    'a delta to change the value'
  )
  await host.close()
  await eventually(
    async () => {
      const text = await scrape(c)
      return GPU_METRIC_NAMES.every((n) => series(text, n).length === 0)
    },
    30_000,
    'no series once the session has ended'
  )
})
