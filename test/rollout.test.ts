// Scaling and rolling updates of endpoints, end to end: a real coordinator
// (embedded PostgreSQL), a real agent running the serving tests' replica
// (test/helpers/replica.ts) as real processes on an 8-GPU fixture host, and
// the CLI run as a process for `workloads scale` and `workloads update`. The
// outbox is the record of what happened (ready replicas are replayed from it).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t, { type Test } from 'tap'
import { cleanEnv } from './helpers/agent.js'
import {
  ADMIN_TOKEN,
  addHost,
  eventually,
  startTestCoordinator,
  type TestCoordinator,
  workloadWhen
} from './helpers/coordinator.js'
import { REPLICA_COMMAND, ROOT } from './helpers/fixtures.js'
import { createEndpoint, gatewayCall, killPlacement, readyEndpoint } from './helpers/gateway.js'
import { joinToken, startTestAgent } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'
import { alive } from './helpers/process.js'

const POOL = 'h100-80gb-8x-nvlink'
const CLI = join(ROOT, 'dist/cli/main.js')
const run = (env: Record<string, string>) => ({ driver: 'process', command: REPLICA_COMMAND, env })

interface Echo {
  placement: string
  pid: number
}

/**
 * Replicas outlive their agents by design: at teardown (before the agent's own, teardowns run last first)
 * the test ends every placement process group the agent of `stateDir` started that still runs, each
 * checked by its wrapper's command line, which names the placement.
 */
function endReplicasAtTeardown(t: Test, agent: { stateDir: string }): void {
  t.teardown(() => {
    let ids: string[] = []
    try {
      ids = readdirSync(join(agent.stateDir, 'placements'))
    } catch {}
    for (const id of ids) {
      let pgid = ''
      try {
        pgid = readFileSync(join(agent.stateDir, 'placements', id, 'pid'), 'utf8').trim()
        if (readFileSync(`/proc/${pgid}/cmdline`, 'utf8').includes(id)) killPlacement(agent.stateDir, id)
      } catch {}
    }
  })
}

/** A coordinator whose drain records what it was asked to drain, and one agent on an 8-GPU host. */
async function cluster(t: Test): Promise<{ c: TestCoordinator; drained: string[] }> {
  const drained: string[] = []
  const c = await startTestCoordinator(t, {
    drain: async (placementId) => {
      drained.push(placementId)
    }
  })
  const agent = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'gpu-a', { joinToken: await joinToken(c) })
  endReplicasAtTeardown(t, agent)
  await eventually(() => agent.control.hostId !== null, 10_000, 'gpu-a to join')
  return { c, drained }
}

const active = (w: any): any[] =>
  w.placements.filter((p: any) => ['assigned', 'starting', 'running', 'stopping'].includes(p.state))

/** The workload once exactly `n` replicas are active, all running and ready (and `also` holds). */
async function serving(c: TestCoordinator, id: string, n: number, also: (w: any) => boolean = () => true) {
  return await workloadWhen(
    c,
    id,
    (w) => {
      const a = active(w)
      return a.length === n && a.every((p) => p.state === 'running' && p.ready) && also(w)
    },
    30_000,
    `${n} ready replicas`
  )
}

/** What placement `p`'s replica says about itself, once it answers on its port as itself (it may still be starting). */
async function echo(p: { id: string; port: number }): Promise<Echo> {
  return await eventually(
    async () => {
      const r = await fetch(`http://127.0.0.1:${p.port}/echo`).catch(() => null)
      const body = r === null ? null : ((await r.json()) as Echo)
      return body?.placement === p.id ? body : undefined
    },
    15_000,
    `placement ${p.id} to answer on port ${p.port}`
  )
}

/** `gpumesh workloads <args>` as a process against `c`. */
async function workloadsCli(
  c: TestCoordinator,
  args: string[]
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(process.execPath, [CLI, 'workloads', ...args], {
    env: cleanEnv({ GPUMESH_API: c.api, GPUMESH_TOKEN: ADMIN_TOKEN }),
    extendEnv: false,
    reject: false,
    timeout: 60_000
  })
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
}

/** Events of the workload itself and of its placements after event `after`. */
async function eventsOf(c: TestCoordinator, id: string, after: number) {
  const { rows } = await c.pool.query<{ id: number; type: string; subject: string; data: any }>(
    `select id, type, subject_id as subject, data from events
     where id > $2 and (subject_id = $1::text or (subject_kind = 'placement' and data->>'workload' = $1::text))
     order by id`,
    [id, after]
  )
  return rows
}

async function lastEventId(c: TestCoordinator): Promise<number> {
  const { rows } = await c.pool.query<{ id: number }>('select coalesce(max(id), 0)::int as id from events')
  return rows[0]?.id ?? 0
}

t.test('scale 1 -> 3 -> 1: replicas really start, and the newest ones are drained and stopped', async (t) => {
  const { c, drained } = await cluster(t)
  const id = await createEndpoint(c, 'chat', 1, { env: { ROLL: 'one' } })
  const first = active(await serving(c, id, 1))[0]
  const firstPid = (await echo(first)).pid
  const cli = (args: string[]) => workloadsCli(c, args)

  const up = await cli(['scale', 'chat', '3'])
  const three = active(await serving(c, id, 3))
  const answers = await Promise.all(three.map((p) => echo(p)))
  const down = await cli(['scale', 'chat', '1', '--json'])
  const one = active(await serving(c, id, 1))
  const removed = three.filter((p) => p.id !== first.id)
  await eventually(
    () => answers.filter((a) => a.placement !== first.id).every((a) => !alive(a.pid)),
    15_000,
    'the removed replicas to exit'
  )
  const after = await c.call('GET', `/v1/workloads/${id}`)
  const stoppedReasons = after.body.placements
    .filter((p: any) => removed.some((r) => r.id === p.id))
    .map((p: any) => `${p.state}: ${p.reason}`)
  const scaled = (await eventsOf(c, id, 0)).filter((e) => e.type === 'workload.scaled').map((e) => e.data)
  t.same(
    {
      scaleUp: { exitCode: up.exitCode, says: up.stdout.includes('replicas 1 -> 3') },
      replicaIndices: three.map((p) => p.replica).sort(),
      eachAnswersAsItself: answers.map((a) => a.placement).sort(),
      scaleDown: { exitCode: down.exitCode, replicas: JSON.parse(down.stdout || '{}').spec?.replicas },
      kept: one.map((p) => p.id),
      keptPidAlive: alive(firstPid),
      removedStopped: stoppedReasons,
      drained: [...drained].sort(),
      events: scaled
    },
    {
      scaleUp: { exitCode: 0, says: true },
      replicaIndices: [0, 1, 2],
      eachAnswersAsItself: three.map((p) => p.id).sort(),
      scaleDown: { exitCode: 0, replicas: 1 },
      kept: [first.id],
      keptPidAlive: true,
      removedStopped: ['stopped: scaled down', 'stopped: scaled down'],
      drained: removed.map((p) => p.id).sort(),
      events: [
        { from: 1, to: 3 },
        { from: 3, to: 1 }
      ]
    }
  )
})

t.test('scale down removes an unready replica before any ready one, even the oldest', async (t) => {
  const { c } = await cluster(t)
  const id = await createEndpoint(c, 'picky', 3, { serve: { readiness: { path: '/health', periodSeconds: 1 } } })
  const three = active(await serving(c, id, 3)).sort((a, b) => a.replica - b.replica)
  const oldest = three[0]
  // The oldest replica's /health fails from now on: it turns unready, and is the one scale-down picks.
  await fetch(`http://127.0.0.1:${oldest.port}/control/fail-health`, { method: 'POST' })
  await workloadWhen(
    c,
    id,
    (w) => w.placements.some((p: any) => p.id === oldest.id && p.state === 'running' && !p.ready),
    30_000,
    'the oldest replica to be unready'
  )
  const down = await c.call('PATCH', `/v1/workloads/${id}`, { replicas: 2 })
  const two = active(await serving(c, id, 2))
  const gone = (await c.call('GET', `/v1/workloads/${id}`)).body.placements.find((p: any) => p.id === oldest.id)
  t.same(
    { status: down.status, kept: two.map((p) => p.id).sort(), removed: `${gone?.state}: ${gone?.reason}` },
    {
      status: 200,
      kept: three
        .slice(1)
        .map((p) => p.id)
        .sort(),
      removed: 'stopped: scaled down'
    },
    'the unready replica went, both ready ones stayed'
  )
})

t.test('a roll to a new env completes, one replica at a time, never with fewer ready replicas', async (t) => {
  const { c, drained } = await cluster(t)
  const id = await createEndpoint(c, 'roll', 2, { env: { ROLL: 'one' } })
  const before = active(await serving(c, id, 2))
  const mark = await lastEventId(c)
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-roll-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'v2.yaml')
  writeFileSync(file, `run:\n  driver: process\n  command: ${JSON.stringify(REPLICA_COMMAND)}\n  env:\n    ROLL: two\n`)
  const update = await workloadsCli(c, ['update', 'roll', '-f', file])
  const done = await workloadWhen(c, id, (w) => w.rollout?.state !== 'rolling', 60_000, 'the roll to end')
  const after = active(await serving(c, id, 2))
  const envs = await Promise.all(
    after.map(async (p) => readFileSync(`/proc/${(await echo(p)).pid}/environ`, 'utf8').split('\0'))
  )
  const events = await eventsOf(c, id, mark)
  // The ready replicas, replayed from the outbox: what a client of the gateway could reach at each moment.
  const ready = new Set(before.map((p) => p.id))
  let fewest = ready.size
  for (const e of events) {
    if (e.type === 'placement.ready') ready.add(e.subject)
    else if (/^placement\.(unready|stopped|exited|failed|lost)$/.test(e.type)) ready.delete(e.subject)
    fewest = Math.min(fewest, ready.size)
  }
  const w = (await c.call('GET', `/v1/workloads/${id}`)).body
  t.same(
    {
      update: {
        exitCode: update.exitCode,
        says: update.stdout.includes('run changed: rolling from generation 1 to 2')
      },
      rollout: { state: done.rollout?.state, generation: done.rollout?.generation, reason: done.rollout?.reason },
      generations: after.map((p) => p.generation),
      newEnv: envs.map((env) => env.includes('ROLL=two')),
      oldStopped: w.placements.filter((p: any) => before.some((b) => b.id === p.id)).map((p: any) => p.reason),
      drainedOld: before.every((b) => drained.includes(b.id)),
      fewestReady: fewest,
      workloadEvents: events
        .filter((e) => e.type.startsWith('workload.rollout-started') || e.type === 'workload.rollout-completed')
        .map((e) => e.type)
    },
    {
      update: { exitCode: 0, says: true },
      rollout: { state: 'completed', generation: 2, reason: null },
      generations: [2, 2],
      newEnv: [true, true],
      oldStopped: ['replaced by generation 2', 'replaced by generation 2'],
      drainedOld: true,
      fewestReady: 2,
      workloadEvents: ['workload.rollout-started', 'workload.rollout-completed']
    },
    `update said: ${update.stdout}${update.stderr}`
  )
})

t.test('a roll to a replica that never becomes ready stops, and the old replicas keep serving', async (t) => {
  const { c } = await cluster(t)
  const id = await createEndpoint(c, 'steady', 2, { env: { ROLL: 'one' } })
  const before = active(await serving(c, id, 2))
  const patch = await c.call('PATCH', `/v1/workloads/${id}`, {
    run: run({ ROLL: 'two', REPLICA_NEVER_READY: '1' }),
    serve: { readiness: { path: '/health', periodSeconds: 1 }, startupSeconds: 2 }
  })
  const stopped = await workloadWhen(c, id, (w) => w.rollout?.state === 'stopped', 60_000, 'the roll to stop')
  const tried = stopped.placements.filter((p: any) => p.generation === 2)
  await eventually(
    async () =>
      (
        await Promise.all(
          tried.map((p: any) =>
            fetch(`http://127.0.0.1:${p.port}/echo`).then(
              () => false,
              () => true
            )
          )
        )
      ).every(Boolean),
    15_000,
    'the new replica to be gone'
  )
  const still = active(await serving(c, id, 2))
  const answers = await Promise.all(still.map((p) => echo(p)))
  const events = (await eventsOf(c, id, 0)).filter((e) => e.type === 'workload.rollout-stopped')
  const m = new Mismatches()
  m.check('PATCH', 'status', patch.status, 200)
  m.check('PATCH', 'generation asked', patch.body.generation, 2)
  m.check(
    'rollout',
    'reason',
    /^rollout stopped: replica \d+ of generation 2 not ready/.test(stopped.rollout.reason),
    true
  )
  m.check('workload', "reason is the roll's", stopped.reason, stopped.rollout.reason)
  m.check('workload', 'back to the generation its replicas run', stopped.generation, 1)
  m.check('workload', 'back to their run', stopped.spec.run.env, { ROLL: 'one' })
  m.check('workload', 'back to their serve', stopped.spec.serve, undefined)
  m.check('new replica', 'tried once at least', tried.length > 0, true)
  m.check(
    'new replica',
    'stopped',
    tried.map((p: any) => p.state),
    tried.map(() => 'stopped')
  )
  m.check('old replicas', 'same placements', still.map((p) => p.id).sort(), before.map((p) => p.id).sort())
  m.check('old replicas', 'answer', answers.map((a) => a.placement).sort(), before.map((p) => p.id).sort())
  m.check(
    'events',
    'rollout-stopped',
    events.map((e) => e.data.reason),
    [stopped.rollout.reason]
  )
  t.same(m.list, [], `reason: ${stopped.rollout.reason}`)
})

t.test('PATCH: only endpoints, only operators, only a real change', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'a')
  const viewer = (await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'v' })).body.token as string
  const make = async (body: unknown) => (await c.call('POST', '/v1/workloads', body)).body.id as string
  const endpoint = await make({ name: 'e', kind: 'endpoint', replicas: 1, gpus: 1, pools: [POOL], run: run({}) })
  const recipe = await make({ name: 'r', kind: 'recipe', pool: POOL, hosts: 1, gpus: 1, run: run({}) })
  const session = await make({ name: 's', kind: 'session', pool: POOL, gpus: 1, run: run({}) })
  const cases: Array<[string, string, unknown, string | null, number, string | null]> = [
    ['a recipe', recipe, { replicas: 2 }, ADMIN_TOKEN, 409, 'NOT_AN_ENDPOINT'],
    ['a session', session, { run: run({ X: '1' }) }, ADMIN_TOKEN, 409, 'NOT_AN_ENDPOINT'],
    ['a viewer token', endpoint, { replicas: 2 }, viewer, 403, 'FORBIDDEN'],
    ['no token', endpoint, { replicas: 2 }, null, 401, 'UNAUTHORIZED'],
    ['an empty patch', endpoint, {}, ADMIN_TOKEN, 400, 'VALIDATION'],
    ['zero replicas', endpoint, { replicas: 0 }, ADMIN_TOKEN, 400, 'VALIDATION'],
    ['another field', endpoint, { gpus: 2 }, ADMIN_TOKEN, 400, 'VALIDATION'],
    ['no such workload', '00000000-0000-4000-8000-000000000000', { replicas: 2 }, ADMIN_TOKEN, 404, 'NOT_FOUND'],
    ['the same run', endpoint, { run: run({}) }, ADMIN_TOKEN, 200, null]
  ]
  const m = new Mismatches()
  for (const [name, wid, body, token, status, code] of cases) {
    const r = await c.call('PATCH', `/v1/workloads/${wid}`, body, token)
    m.check(name, 'status', r.status, status)
    if (code !== null) m.check(name, 'code', r.body.code, code)
  }
  const unchanged = await Promise.all(
    [endpoint, recipe, session].map(async (w) => (await c.call('GET', `/v1/workloads/${w}`)).body)
  )
  for (const w of unchanged) {
    m.check(w.name, 'generation', w.generation, 1)
    m.check(w.name, 'rollout', w.rollout, null)
  }
  m.check('e', 'replicas', unchanged[0].spec.replicas, 1)
  m.check('r', 'hosts', unchanged[1].spec.hosts, 1)
  t.same(m.list, [])
})

t.test('a roll goes on under a new leader: its state is in PostgreSQL, not in the old leader', async (t) => {
  const first = await startTestCoordinator(t)
  const second = await startTestCoordinator(t, {
    databaseUrl: first.databaseUrl,
    clusterKeyFile: join(first.stateDir, 'cluster.key')
  })
  const agent = await startTestAgent(t, first, 'h100-8x-nv18-nics', 'gpu-a', {
    joinToken: await joinToken(first),
    coordinators: [...first.mesh.multiaddrs(), ...second.mesh.multiaddrs()]
  })
  endReplicasAtTeardown(t, agent)
  await eventually(() => agent.control.hostId !== null, 10_000, 'gpu-a to join')
  await eventually(() => first.leadership.leader, 10_000, 'the first coordinator to lead')
  const id = await createEndpoint(first, 'failover', 2, { env: { ROLL: 'one' } })
  const before = active(await serving(first, id, 2))
  const patch = await second.call('PATCH', `/v1/workloads/${id}`, { run: run({ ROLL: 'two' }) })
  await first.stop()
  const done = await workloadWhen(second, id, (w) => w.rollout?.state !== 'rolling', 60_000, 'the roll to end')
  const after = active(await serving(second, id, 2))
  const w = (await second.call('GET', `/v1/workloads/${id}`)).body
  t.same(
    {
      patch: patch.status,
      leader: second.leadership.leader,
      rollout: done.rollout?.state,
      generations: after.map((p) => p.generation),
      oldStopped: w.placements.filter((p: any) => before.some((b) => b.id === p.id)).map((p: any) => p.reason)
    },
    {
      patch: 200,
      leader: true,
      rollout: 'completed',
      generations: [2, 2],
      oldStopped: ['replaced by generation 2', 'replaced by generation 2']
    }
  )
})

t.test('a roll under a steady stream of calls through the gateway: zero failed calls', async (t) => {
  // The real gateway's drain: an old replica gets no new call, and its calls in flight end, before it stops.
  const c = await startTestCoordinator(t)
  const agent = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'gpu-a', { joinToken: await joinToken(c) })
  endReplicasAtTeardown(t, agent)
  await eventually(() => agent.control.hostId !== null, 10_000, 'gpu-a to join')
  const ep = await readyEndpoint(t, c, [agent], 'stream', 2, { env: { ROLL: 'one' } })
  const calls: Array<{ status: number; placement: string | undefined; error?: string }> = []
  let streaming = true
  const callers = Array.from({ length: 4 }, async () => {
    while (streaming) {
      const a = await gatewayCall(c, 'POST', '/stream/echo', { body: 'x'.repeat(256) }).catch((err: Error) => ({
        status: 0,
        json: undefined,
        text: err.message
      }))
      calls.push({
        status: a.status,
        placement: a.json?.placement,
        ...(a.status === 200 ? {} : { error: a.text.slice(0, 300) })
      })
    }
  })
  await eventually(() => calls.length >= 20, 15_000, 'calls flowing to the old replicas')
  const patch = await c.call('PATCH', `/v1/workloads/${ep.id}`, { run: run({ ROLL: 'two' }) })
  const done = await workloadWhen(c, ep.id, (w) => w.rollout?.state !== 'rolling', 90_000, 'the roll to end')
  const fresh = active(await serving(c, ep.id, 2)).map((p) => p.id)
  await eventually(
    () => fresh.every((id) => calls.some((x) => x.placement === id)),
    15_000,
    'calls reaching both new replicas'
  )
  streaming = false
  await Promise.all(callers)
  const failed = calls.filter((x) => x.status !== 200)
  t.same(
    {
      patch: patch.status,
      rollout: done.rollout?.state,
      oldServed: ep.placements.every((id) => calls.some((x) => x.placement === id)),
      failed: failed.length,
      firstFailures: failed.slice(0, 3)
    },
    { patch: 200, rollout: 'completed', oldServed: true, failed: 0, firstFailures: [] },
    `${calls.length} calls`
  )
})
