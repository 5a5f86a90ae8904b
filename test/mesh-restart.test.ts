// A coordinator restart loses nothing: agents reconnect on their own, the
// placements that ran keep running (not started twice), and what changed
// while the coordinator was away is reconciled.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { eventually, startTestCoordinator } from './helpers/coordinator.js'
import { joinedAgents } from './helpers/mesh.js'
import { freePort } from './helpers/redis.js'

t.test('coordinator restart: agents reconnect, work keeps running, nothing runs twice', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-coord-restart-'))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const listen = [`/ip4/127.0.0.1/tcp/${await freePort()}`]
  const first = await startTestCoordinator(t, { stateDir, listen })
  const agents = await joinedAgents(t, first, 'h100-8x-nv18-nics', ['node-a', 'node-b'])
  const w = await first.call('POST', '/v1/workloads', {
    name: 'chat',
    kind: 'endpoint',
    replicas: 2,
    gpus: 8,
    pools: ['h100-80gb-8x-nvlink'],
    run: { driver: 'process', command: ['sh', '-c', 'exec sleep 120'] }
  })
  const placed = await eventually(
    async () => {
      const r = (await first.call('GET', `/v1/workloads/${w.body.id as string}`)).body
      return r.placements.length === 2 && r.placements.every((p: { state: string }) => p.state === 'running')
        ? r
        : undefined
    },
    15_000,
    'both replicas running'
  )
  const ids = placed.placements.map((p: { id: string }) => p.id).sort()

  await first.stop()
  await eventually(async () => agents.every((a) => a.control.connectedAt === 0), 10_000, 'the agents to notice')
  t.ok(
    agents.every((a) => a.runtime.list().filter((p) => p.state === 'running').length === 1),
    'work keeps running while the coordinator is away'
  )

  const second = await startTestCoordinator(t, { stateDir, listen, databaseUrl: first.databaseUrl })
  t.equal(second.mesh.peerId, first.mesh.peerId, 'same identity after a restart')
  await eventually(
    async () => agents.every((a) => a.control.connectedAt > 0),
    15_000,
    'the agents to reconnect by themselves'
  )
  const after = (await second.call('GET', `/v1/workloads/${w.body.id as string}`)).body
  t.same(after.placements.map((p: { id: string }) => p.id).sort(), ids, 'the same placements, no new ones')
  t.ok(after.placements.every((p: { state: string }) => p.state === 'running'))
  t.equal(after.state, 'placed')
  t.same(
    agents.map((a) => a.runtime.list().map((p) => p.state)),
    agents.map(() => ['running']),
    'each agent ran its replica once, and it runs'
  )
  const hosts = (await second.call('GET', '/v1/hosts')).body.items as Array<{ state: string }>
  t.ok(
    hosts.every((h) => h.state === 'ready'),
    'hosts ready again'
  )
})
