// The coordinator end to end on a real PostgreSQL: hosts registered from
// fixture machines, workloads created through the API, placed by the leader.
import t from 'tap'
import { addHost, startTestCoordinator, workloadWhen } from './helpers/coordinator.js'

const run = { driver: 'process', command: ['python3', 'serve.py'] }

const isPlaced = (w: { state: string }) => w.state === 'placed'
/** The scheduler has looked at it: placed, or pending with its reason. */
const decided = (w: { reason: string | null }) => w.reason !== 'waiting for the scheduler'

t.test('hosts form pools; workloads are placed topology-aware and best-fit', async (t) => {
  const c = await startTestCoordinator(t)
  const h1 = await addHost(c.pool, 'h100-8x-nv18-nics', 'h100-a')
  const h2 = await addHost(c.pool, 'h100-8x-nv18-nics', 'h100-b')
  await addHost(c.pool, 'b200-8x', 'b200-a')

  const pools = await c.call('GET', '/v1/pools')
  t.equal(pools.status, 200)
  t.same(
    pools.body.items.map((p: { key: string }) => p.key),
    ['b200-180gb-8x-nvlink', 'h100-80gb-8x-nvlink']
  )
  t.match(pools.body.items[1], {
    kind: 'static',
    hostCount: 2,
    readyHosts: 2,
    gpus: { total: 16, free: 16 },
    largestFreeBlock: 8
  })

  const created = await c.call('POST', '/v1/workloads', {
    name: 'sft',
    kind: 'recipe',
    pool: 'h100-80gb-8x-nvlink',
    hosts: 1,
    gpus: 4,
    run
  })
  t.equal(created.status, 201)
  t.equal(created.body.state, 'pending')
  const placed = await workloadWhen(c, created.body.id, isPlaced, 10_000, 'the recipe to be placed')
  t.equal(placed.placements.length, 1)
  const p = placed.placements[0]
  t.ok([h1, h2].includes(p.hostId))
  t.same(p.gpus, [0, 1, 2, 3], '4 GPUs on one NUMA node of one NVLink domain')
  t.equal(placed.reason, null)

  // Best fit: the next 4-GPU session goes to the host already half used.
  const second = await c.call('POST', '/v1/workloads', {
    name: 'dev',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 4,
    run: { driver: 'process', command: ['bash'] }
  })
  const s = await workloadWhen(c, second.body.id, isPlaced, 10_000, 'the session to be placed')
  t.equal(s.placements[0].hostId, p.hostId, 'best fit packs the fuller host')
  t.same(s.placements[0].gpus, [4, 5, 6, 7])

  // Too big for what is free: pending, with a reason a person understands.
  const big = await c.call('POST', '/v1/workloads', {
    name: 'big',
    kind: 'recipe',
    pool: 'h100-80gb-8x-nvlink',
    hosts: 2,
    gpus: 8,
    run
  })
  t.equal(big.status, 201)
  const pending = await workloadWhen(c, big.body.id, decided, 10_000, 'the scheduler to decide on the gang')
  t.equal(pending.state, 'pending')
  t.match(pending.reason, /pool h100-80gb-8x-nvlink/)

  // Deleting frees GPUs; the pending gang then fits.
  t.equal((await c.call('DELETE', `/v1/workloads/${created.body.id as string}`)).status, 200)
  t.equal((await c.call('DELETE', `/v1/workloads/${second.body.id as string}`)).status, 200)
  const gang = await workloadWhen(c, big.body.id, isPlaced, 10_000, 'the gang to be placed')
  t.same(gang.placements.map((x: { replica: number }) => x.replica).sort(), [0, 1], 'ranks 0 and 1')
  t.same(new Set(gang.placements.map((x: { hostId: string }) => x.hostId)), new Set([h1, h2]), 'one rank per host')
})

t.test('cordoned hosts get nothing new', async (t) => {
  const c = await startTestCoordinator(t)
  const h = await addHost(c.pool, 'h100-8x-nv18-nics', 'only')
  const cordon = await c.call('POST', `/v1/hosts/${h}/cordon`, { reason: 'maintenance' })
  t.equal(cordon.status, 200)
  t.equal(cordon.body.state, 'cordoned')
  t.equal(cordon.body.stateReason, 'maintenance')
  const w = await c.call('POST', '/v1/workloads', {
    name: 'x',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 1,
    run
  })
  const pending = await workloadWhen(c, w.body.id, decided, 10_000, 'the scheduler to decide')
  t.equal(pending.state, 'pending')
  t.match(pending.reason, /cordoned/)
  await c.call('POST', `/v1/hosts/${h}/uncordon`)
  await workloadWhen(c, w.body.id, isPlaced, 10_000, 'placement after uncordon')
})
