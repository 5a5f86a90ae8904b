// The coordinator's side of GPU health on a real PostgreSQL: telemetry deltas
// as the mesh folds them (MeshServer.liveGpus) are stored, raise
// gpu.health-changed, keep the scheduler off failed GPUs and move the work
// that was on them; a restarted coordinator reconciles with the next whole
// table. The agent's side and the whole path through processes are in
// test/gpu-health-mesh.test.ts.
import t from 'tap'
import type { GpuHealthState, GpuTelemetry } from '../protocol/telemetry.js'
import { addHost, startTestCoordinator, type TestCoordinator, workloadWhen } from './helpers/coordinator.js'
import { eventually } from './helpers/eventually.js'
import { Mismatches } from './helpers/mismatches.js'

const POOL = 'h100-80gb-8x-nvlink'
const run = { driver: 'process', command: ['python3', 'serve.py'] }

function gpu(index: number, state: GpuHealthState = 'healthy', reasons: string[] = []): GpuTelemetry {
  return {
    index,
    uuid: `GPU-${index}`,
    pciBusId: `00000000:${(0x10 + index).toString(16)}:00.0`,
    health: { state, reasons, since: new Date().toISOString() },
    usage: {
      utilizationPct: 10 * index,
      memoryUsedMiB: 100,
      temperatureC: 40,
      powerW: 70.5,
      at: new Date().toISOString()
    },
    xids: { last: null, counts: {} }
  }
}
const table = (failed: Record<number, string[]> = {}, degraded: Record<number, string[]> = {}) =>
  Array.from({ length: 8 }, (_, i) =>
    failed[i] !== undefined
      ? gpu(i, 'failed', failed[i])
      : degraded[i] !== undefined
        ? gpu(i, 'degraded', degraded[i])
        : gpu(i)
  )

async function healthEvents(c: TestCoordinator): Promise<Array<Record<string, unknown>>> {
  const { rows } = await c.pool.query<{ data: Record<string, unknown> }>(
    "select data from events where type = 'gpu.health-changed' order by id"
  )
  return rows.map((r) => r.data)
}

async function stored(c: TestCoordinator, host: string): Promise<Array<[number, string, string[]]>> {
  const r = await c.call('GET', `/v1/hosts/${host}`)
  return r.body.gpus.map((g: any) => [g.index, g.health?.state ?? null, g.health?.reasons ?? null])
}

async function create(c: TestCoordinator, body: Record<string, unknown>): Promise<string> {
  const r = await c.call('POST', '/v1/workloads', body)
  if (r.status !== 201) throw new Error(`create: ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

t.test('failed GPUs: stored, an event, never placed on, their work moved', async (t) => {
  const c = await startTestCoordinator(t)
  const a = await addHost(c.pool, 'h100-8x-nv18-nics', 'a')
  const live = c.mesh.liveGpus
  live.apply(a, { full: true, gpus: table() })
  await eventually(async () => (await stored(c, a)).every(([, s]) => s === 'healthy'), 15_000, 'the table stored')
  t.match(
    (await c.call('GET', `/v1/hosts/${a}`)).body.gpus[3],
    {
      index: 3,
      model: 'NVIDIA H100 80GB HBM3',
      health: { state: 'healthy', reasons: [] },
      usage: { utilizationPct: 30, memoryUsedMiB: 100, temperatureC: 40, powerW: 70.5 }
    },
    'GET /v1/hosts/:id: each GPU with its health and live usage'
  )
  t.same(await healthEvents(c), [], 'GPUs first seen healthy raise no event')

  // Work on host a: a replica, a session, a recipe that does not restart.
  const ids = [
    await create(c, { name: 'e', kind: 'endpoint', replicas: 1, gpus: 2, pools: [POOL], run }),
    await create(c, { name: 's', kind: 'session', pool: POOL, gpus: 2, run }),
    await create(c, { name: 'r', kind: 'recipe', pool: POOL, hosts: 1, gpus: 2, restart: 'never', run })
  ]
  const active = (w: any) => w.placements.filter((p: any) => p.state === 'assigned')
  const first: Array<{ id: string; gpus: number[] }> = []
  for (const id of ids) first.push(active(await workloadWhen(c, id, (w) => w.state === 'placed', 15_000, 'placed'))[0])
  const failedGpus = first.flatMap((p) => p.gpus).sort()
  // Room elsewhere, then host a's GPUs under that work fail (a partial delta, as a heartbeat carries it).
  const b = await addHost(c.pool, 'h100-8x-nv18-nics', 'b')
  live.apply(a, {
    full: false,
    gpus: failedGpus.map((g) => ({ index: g, health: gpu(g, 'failed', ['xid-79']).health }))
  })
  await eventually(async () => (await healthEvents(c)).length === failedGpus.length, 15_000, 'the events')
  t.same(
    await healthEvents(c),
    failedGpus.map((g) => ({
      host: a,
      hostName: 'a',
      gpu: g,
      uuid: `GPU-${g}`,
      from: 'healthy',
      to: 'failed',
      reasons: ['xid-79']
    })),
    'gpu.health-changed: host, name, GPU, uuid, from, to, reasons'
  )
  const { rows } = await c.pool.query<{ id: string; state: string; reason: string }>(
    'select id, state, reason from placements where id = any($1::uuid[]) order by id',
    [first.map((p) => p.id)]
  )
  const m = new Mismatches()
  for (const r of rows) {
    m.check(r.id, 'state', r.state, 'lost')
    m.check(r.id, 'reason names the GPU', /^GPU \d failed \(xid-79\)/.test(r.reason), true)
  }
  t.same(m.list, [], 'the placements on failed GPUs are lost, the GPU and its reasons as their reason')

  const onFailed = (w: any) =>
    active(w).some((p: any) => p.hostId === a && p.gpus.some((g: number) => failedGpus.includes(g)))
  for (const [name, id] of [
    ['the replica', ids[0]],
    ['the session', ids[1]]
  ] as const) {
    const w = await workloadWhen(
      c,
      id as string,
      (w) => w.state === 'placed' && active(w).length === 1,
      15_000,
      `${name} placed again`
    )
    t.notOk(onFailed(w), `${name} is placed again, not on a failed GPU`)
  }
  t.match(
    await workloadWhen(c, ids[2] as string, (w) => w.state === 'failed', 15_000, 'the recipe failed'),
    { state: 'failed', reason: /lost \(GPU \d failed \(xid-79\)/ },
    'a recipe with restart never fails, with the reason'
  )
  t.notOk(
    (await c.call('GET', `/v1/hosts/${a}`)).body.freeGpus.some((g: number) => failedGpus.includes(g)),
    'freeGpus never lists a failed GPU'
  )
  // Capacity: host a has 2 usable GPUs, b 4 free: 8 fit nowhere, and the reason says GPUs failed.
  const big = await create(c, { name: 'big', kind: 'session', pool: POOL, gpus: 8, run })
  t.match(
    (await workloadWhen(c, big, (w) => w.reason !== 'waiting for the scheduler', 15_000, 'big decided')).reason,
    /^pool h100-80gb-8x-nvlink: 2 hosts, largest free block \d GPUs, need 8 \(6 failed GPUs excluded\)$/,
    'the pending reason says GPUs are excluded as failed'
  )
  t.ok(b.length > 0)

  // Recovery: the GPUs clear, they are healthy again, and the big session fits on host a.
  await c.call('DELETE', `/v1/workloads/${ids[0]}`)
  await c.call('DELETE', `/v1/workloads/${ids[1]}`)
  live.apply(a, { full: false, gpus: failedGpus.map((g) => ({ index: g, health: gpu(g).health })) })
  await eventually(async () => (await stored(c, a)).every(([, s]) => s === 'healthy'), 15_000, 'healthy again')
  t.same(
    (await healthEvents(c)).slice(failedGpus.length).map((e) => [e.gpu, e.from, e.to]),
    failedGpus.map((g) => [g, 'failed', 'healthy']),
    'recovery: an event per GPU'
  )
  await workloadWhen(c, big, (w) => w.state === 'placed', 15_000, 'the big session placed once the GPUs are back')
})

t.test('a restarted coordinator reconciles the stored health with the next whole table', async (t) => {
  const first = await startTestCoordinator(t)
  const a = await addHost(first.pool, 'h100-8x-nv18-nics', 'a')
  first.mesh.liveGpus.apply(a, { full: true, gpus: table({ 2: ['xid-79'] }, { 5: ['thermal-slowdown'] }) })
  await eventually(async () => (await stored(first, a))[2]?.[1] === 'failed', 15_000, 'GPU 2 failed')
  t.same(
    (await stored(first, a)).filter(([, s]) => s !== 'healthy'),
    [
      [2, 'failed', ['xid-79']],
      [5, 'degraded', ['thermal-slowdown']]
    ],
    'first seen unhealthy: stored'
  )
  t.same(
    (await healthEvents(first)).map((e) => [e.gpu, e.from, e.to]),
    [
      [2, 'healthy', 'failed'],
      [5, 'healthy', 'degraded']
    ],
    'and an event each'
  )
  await first.stop()
  const second = await startTestCoordinator(t, { databaseUrl: first.databaseUrl })
  t.same((await stored(second, a))[2], [2, 'failed', ['xid-79']], 'kept across the restart')
  // The agent's first table in its new session: GPU 2 was repaired meanwhile.
  second.mesh.liveGpus.apply(a, { full: true, gpus: table({}, { 5: ['thermal-slowdown'] }) })
  await eventually(async () => (await stored(second, a))[2]?.[1] === 'healthy', 15_000, 'GPU 2 healthy')
  t.same(
    (await healthEvents(second)).map((e) => [e.gpu, e.from, e.to]),
    [
      [2, 'healthy', 'failed'],
      [5, 'healthy', 'degraded'],
      [2, 'failed', 'healthy']
    ],
    'the unchanged GPU raises nothing; the repaired one an event'
  )
})

t.test('clear-health refuses what it cannot do', async (t) => {
  const c = await startTestCoordinator(t)
  const a = await addHost(c.pool, 'h100-8x-nv18-nics', 'a')
  c.mesh.liveGpus.apply(a, { full: true, gpus: table({ 1: ['xid-79'] }) })
  await eventually(async () => (await stored(c, a))[1]?.[1] === 'failed', 15_000, 'GPU 1 failed')
  const m = new Mismatches()
  const cases: Array<[string, string, string | null, number, string]> = [
    ['no such host', `/v1/hosts/00000000-0000-4000-8000-000000000000/gpus/1/clear-health`, null, 404, 'NOT_FOUND'],
    ['no such GPU', `/v1/hosts/${a}/gpus/8/clear-health`, null, 404, 'NOT_FOUND'],
    ['a healthy GPU', `/v1/hosts/${a}/gpus/0/clear-health`, null, 409, 'GPU_HEALTHY'],
    ['no agent connected here', `/v1/hosts/${a}/gpus/1/clear-health`, null, 503, 'HOST_UNREACHABLE'],
    ['not an index', `/v1/hosts/${a}/gpus/x/clear-health`, null, 400, 'VALIDATION']
  ]
  for (const [label, path, , status, code] of cases) {
    const r = await c.call('POST', path)
    m.check(label, 'status', r.status, status)
    m.check(label, 'code', r.body.code, code)
    m.check(label, 'problem+json', r.headers.get('content-type')?.startsWith('application/problem+json'), true)
  }
  t.same(m.list, [], 'each refusal: its status and code')
  const tokens = await c.call('POST', '/v1/tokens', { role: 'operator', name: 'op' })
  const r = await c.call('POST', `/v1/hosts/${a}/gpus/1/clear-health`, undefined, tokens.body.token)
  t.equal(r.status, 403, 'admins only')
  t.same((await stored(c, a))[1], [1, 'failed', ['xid-79']], 'nothing changed')
})
