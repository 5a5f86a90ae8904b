// DESIGN: endpoint replicas spread across hosts. End to end: the leader
// places through the API on a real PostgreSQL, where best fit alone would
// pack replicas onto the fullest host.
import t from 'tap'
import { addHost, startTestCoordinator, type TestCoordinator, workloadWhen } from './helpers/coordinator.js'

const POOL = 'h100-80gb-8x-nvlink'
const run = { driver: 'process', command: ['python3', 'serve.py'] }

async function placed(c: TestCoordinator, body: unknown): Promise<Array<{ hostId: string; gpus: number[] }>> {
  const created = await c.call('POST', '/v1/workloads', body)
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`)
  const w = await workloadWhen(
    c,
    created.body.id,
    (x) => x.state === 'placed',
    10_000,
    `${(body as { name: string }).name} to be placed`
  )
  return w.placements
}

t.test('endpoint replicas go to distinct hosts first, and share a host only when every host has one', async (t) => {
  const c = await startTestCoordinator(t)
  const hosts = [
    await addHost(c.pool, 'h100-8x-nv18-nics', 'a'),
    await addHost(c.pool, 'h100-8x-nv18-nics', 'b'),
    await addHost(c.pool, 'h100-8x-nv18-nics', 'c')
  ]
  // Host a is half used: best fit alone would put every 2-GPU replica there.
  const [session] = await placed(c, {
    name: 'busy',
    kind: 'session',
    pool: POOL,
    gpus: 4,
    run: { driver: 'process', command: ['bash'] }
  })
  const three = await placed(c, { name: 'three', kind: 'endpoint', replicas: 3, gpus: 2, pools: [POOL], run })
  const five = await placed(c, { name: 'five', kind: 'endpoint', replicas: 5, gpus: 1, pools: [POOL], run })
  const perHost = (ps: Array<{ hostId: string }>) => hosts.map((h) => ps.filter((p) => p.hostId === h).length)
  const counts5 = perHost(five)
  t.same(
    {
      sessionHost: session?.hostId === undefined ? 'unplaced' : 'placed',
      threeReplicasPerHost: perHost(three),
      fiveReplicasOnEveryHost: counts5.every((n) => n >= 1),
      fiveAtMostTwoPerHost: counts5.every((n) => n <= 2)
    },
    {
      sessionHost: 'placed',
      threeReplicasPerHost: [1, 1, 1],
      fiveReplicasOnEveryHost: true,
      fiveAtMostTwoPerHost: true
    }
  )
})
