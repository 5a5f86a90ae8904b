// Endpoint readiness and ports, end to end: a real coordinator (embedded
// PostgreSQL), a real agent joined over libp2p, and the replica script
// (test/helpers/replica.ts) as the placements' processes, probed by the agent
// on 127.0.0.1:$PORT. The outbox's events are the record of what happened.
import t, { type Test } from 'tap'
import { SERVE_PORTS } from '../protocol/control.js'
import { eventually, startTestCoordinator, type TestCoordinator, workloadWhen } from './helpers/coordinator.js'
import { createEndpoint } from './helpers/gateway.js'
import { joinedAgents, placementLog, startTestAgent, type TestAgent } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'

const MACHINE = 'h100-8x-nv18-nics'

interface EventRow {
  type: string
  placement: string
  reason: string | null
}

/** The placement events of a workload, in order. */
async function events(c: TestCoordinator, workloadId: string): Promise<EventRow[]> {
  const { rows } = await c.pool.query<EventRow>(
    `select type, subject_id as placement, data->>'reason' as reason
     from events where subject_kind = 'placement' and data->>'workload' = $1 order by id`,
    [workloadId]
  )
  return rows
}

/** The ready/unready events of one placement, as their types' last word ('ready', 'unready'). */
const readiness = (all: EventRow[], placement: string) =>
  all.filter((e) => e.placement === placement && /^placement\.(un)?ready$/.test(e.type)).map((e) => e.type.slice(10))

async function oneAgent(t: Test): Promise<{ c: TestCoordinator; agent: TestAgent }> {
  const c = await startTestCoordinator(t)
  const [agent] = (await joinedAgents(t, c, MACHINE, ['node-a'])) as [TestAgent]
  return { c, agent }
}

/** The replica's own answer about its /health requests (straight to its port, as the agent's probe goes). */
async function replica(port: number, path: string, method = 'GET'): Promise<any> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method })
  return await r.json()
}

const probe = { path: '/health', periodSeconds: 1 }

/** A workload's placements that have not ended (a replica whose port another process held ends failed at launch). */
const live = (w: { placements: any[] }) =>
  w.placements.filter((p) => ['assigned', 'starting', 'running'].includes(p.state))

t.test(
  'ready only once /health answers; a port per replica, in its PORT; without a probe: ready when running',
  async (t) => {
    const { c, agent } = await oneAgent(t)
    const chat = await createEndpoint(c, 'chat', 2, {
      env: { REPLICA_READY_DELAY_MS: '3000' },
      serve: { readiness: probe }
    })
    const plain = await createEndpoint(c, 'plain', 1)

    // Each replica is seen running and not ready while its /health answers 503.
    const unready = new Set<string>()
    await eventually(
      async () => {
        for (const p of (await c.call('GET', `/v1/workloads/${chat}`)).body.placements)
          if (p.state === 'running' && p.ready === false) unready.add(p.id)
        return unready.size === 2
      },
      30_000,
      'both chat replicas running, not ready yet'
    )
    const ready = await workloadWhen(
      c,
      chat,
      (w) => live(w).length === 2 && live(w).every((p: any) => p.ready === true),
      30_000,
      'both chat replicas ready'
    )
    const all = await events(c, chat)
    const why = new Mismatches()
    for (const p of live(ready)) {
      const kase = `replica ${p.replica}`
      const types = all.filter((e) => e.placement === p.id).map((e) => e.type)
      why.check(kase, 'events', types, [
        'placement.created',
        'placement.starting',
        'placement.running',
        'placement.ready'
      ])
      why.check(kase, 'port in SERVE_PORTS', p.port >= SERVE_PORTS.first && p.port <= SERVE_PORTS.last, true)
      const log = () => /^listening (\d+)$/m.exec(placementLog(agent.stateDir, p.id))?.[1]
      why.check(
        kase,
        'its PORT is its port',
        await eventually(log, 10_000, 'its log').catch(() => placementLog(agent.stateDir, p.id)),
        String(p.port)
      )
    }
    const [a, b] = live(ready)
    why.check('two replicas', 'one host, two ports', [a.hostId === b.hostId, a.port !== b.port], [true, true])
    t.same(why.list, [], 'each replica: ready after running, its own port, given to it as PORT')

    const w = await workloadWhen(c, plain, (w) => live(w)[0]?.ready === true, 30_000, 'the endpoint without a probe')
    t.match(live(w)[0], { state: 'running', ready: true, port: Number }, 'no serve.readiness: running is ready')

    // A replica whose process dies is placed again, and serves again once its probe passes.
    const [gone] = live(ready)
    process.kill((await replica(gone.port, '/echo')).pid as number, 'SIGKILL')
    const back = await workloadWhen(
      c,
      chat,
      (w) => w.placements.some((p: any) => p.replica === gone.replica && p.id !== gone.id && p.ready === true),
      30_000,
      'the killed replica placed again and ready'
    )
    t.match(
      back.placements.find((p: any) => p.id === gone.id),
      { state: 'exited', exitCode: 137, ready: false },
      'the killed one ended, unready'
    )
  }
)

t.test(
  'unready after failureThreshold failures in a row, ready again; after an agent restart it is probed again',
  async (t) => {
    const { c, agent } = await oneAgent(t)
    const id = await createEndpoint(c, 'chat', 1, { serve: { readiness: { ...probe, failureThreshold: 3 } } })
    const w = await workloadWhen(c, id, (w) => live(w)[0]?.ready === true, 30_000, 'the replica ready')
    const { id: placement, port } = live(w)[0]
    const mine = (w: any) => w.placements.find((p: any) => p.id === placement)

    // Two failures, then an answer: below the threshold, it stays ready.
    const before = (await replica(port, '/stats')).health as number
    await replica(port, '/control/fail-health?n=2', 'POST')
    await eventually(
      async () => ((await replica(port, '/stats')).health >= before + 3 ? true : undefined),
      15_000,
      'two failed probes and a passed one'
    )
    t.same(readiness(await events(c, id), placement), ['ready'], 'two failures in a row: still ready')

    await replica(port, '/control/fail-health', 'POST')
    await workloadWhen(c, id, (w) => mine(w).ready === false, 15_000, 'the replica unready')
    await replica(port, '/control/fail-health?n=0', 'POST')
    await workloadWhen(c, id, (w) => mine(w).ready === true, 15_000, 'the replica ready again')

    // The agent restarts: its hello carries the replica's readiness (no flap), and the probe goes on.
    await agent.stop()
    const again = await startTestAgent(t, c, MACHINE, 'node-a', { stateDir: agent.stateDir })
    await eventually(() => again.control.connectedAt > 0, 15_000, 'the agent back')
    await replica(port, '/control/fail-health', 'POST')
    const unready = mine(await workloadWhen(c, id, (w) => mine(w).ready === false, 15_000, 'unready again'))
    t.same(
      {
        state: unready.state,
        readiness: readiness(await events(c, id), placement)
      },
      { state: 'running', readiness: ['ready', 'unready', 'ready', 'unready'] },
      'the same process, probed by the new agent; no unready/ready pair from the restart itself'
    )
  }
)

t.test('never ready within startupSeconds: stopped, failed with the reason, placed again', async (t) => {
  const { c, agent } = await oneAgent(t)
  const serve = { readiness: probe, startupSeconds: 2 }
  const cases = [
    {
      name: 'refuses',
      id: await createEndpoint(c, 'refuses', 1, { env: { REPLICA_NEVER_READY: '1' }, serve }),
      reason: /^not ready after 2 s: GET \/health answered 503$/
    },
    {
      name: 'deaf',
      id: await createEndpoint(c, 'deaf', 1, { serve, command: ['sleep', '600'] }),
      reason: /^not ready after 2 s: GET \/health: connection refused$/
    }
  ]
  const why = new Mismatches()
  for (const k of cases) {
    const seen = await eventually(
      async () => {
        const all = await events(c, k.id)
        return all.filter((e) => e.type === 'placement.created').length >= 2 ? all : undefined
      },
      60_000,
      `${k.name}: failed and placed again`
    )
    const failed = seen.find((e) => e.type === 'placement.failed')
    why.check(k.name, 'failed with the reason', k.reason.test(failed?.reason ?? ''), true)
    why.check(k.name, 'no ready event', seen.filter((e) => e.type === 'placement.ready').length, 0)
    why.check(
      k.name,
      'the failed one was placed again',
      seen.findIndex((e) => e.type === 'placement.failed') < seen.findLastIndex((e) => e.type === 'placement.created'),
      true
    )
    const { rows } = await c.pool.query<{ reason: string | null }>(
      `select data->>'reason' as reason from events where subject_id = $1 and type = 'workload.pending'`,
      [k.id]
    )
    why.check(
      k.name,
      'the workload said why it waits',
      rows.some((r) => /not ready after 2 s/.test(r.reason ?? '')),
      true
    )
  }
  t.same(why.list, [], `each: failed with why (${JSON.stringify(cases.map((k) => k.name))}), then a new placement`)

  // Probers stop with their placements.
  const ids = (await events(c, cases[0]?.id as string)).map((e) => e.placement)
  t.equal((await c.call('DELETE', `/v1/workloads/${cases[0]?.id}`)).status, 200)
  await eventually(
    () =>
      agent.runtime.list().every((p) => !ids.includes(p.placementId) || p.state !== 'running') &&
      ids.every((p) => agent.readiness.ready(p) === undefined),
    15_000,
    'no probe left for the deleted workload'
  )
  t.pass('no probe left for the deleted workload')
})
