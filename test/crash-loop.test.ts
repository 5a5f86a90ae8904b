// A workload that cannot start (or exits at once) is restarted with backoff,
// not as fast as the machines can go: a real coordinator and agent, a command
// that does not exist, and the outbox as the record of what happened.
import { randomUUID } from 'node:crypto'
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createRuntime } from '../agent/runtime/runtime.js'
import type { RunningPlacement } from '../protocol/control.js'
import { eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { joinToken, startTestAgent } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'

interface EventRow {
  type: string
  at: Date
  reason: string | null
  replica: number | null
}

async function events(c: TestCoordinator, workloadId: string): Promise<EventRow[]> {
  const { rows } = await c.pool.query<EventRow>(
    `select type, created_at as at, data->>'reason' as reason, (data->>'replica')::int as replica
     from events where subject_kind = 'placement' and data->>'workload' = $1 order by id`,
    [workloadId]
  )
  return rows
}

const FAILURES = 5

t.test('a command that does not exist: launch errors, growing delays, crash-loop, old placements pruned', async (t) => {
  const c = await startTestCoordinator(t)
  const agent = await startTestAgent(t, c, 'l40s-1x', 'node-a', { joinToken: await joinToken(c) })
  await eventually(
    async () => ((await c.call('GET', '/v1/hosts')).body.items.length === 1 ? true : undefined),
    10_000,
    'node-a enrolled'
  )
  const w = await c.call('POST', '/v1/workloads', {
    name: 'broken',
    kind: 'endpoint',
    replicas: 1,
    gpus: 1,
    pools: ['l40s-48gb-1x'],
    run: { driver: 'process', command: ['/nonexistent/binary'] }
  })
  t.equal(w.status, 201)
  const id = w.body.id as string

  const seen = await eventually(
    async () => {
      const all = await events(c, id)
      return all.filter((e) => e.type === 'placement.failed').length >= FAILURES ? all : undefined
    },
    120_000,
    `${FAILURES} placement.failed events`
  )
  const created = seen.filter((e) => e.type === 'placement.created')
  const failed = seen.filter((e) => e.type === 'placement.failed')
  // With backoff the first attempts come at 0, >= 0.5, >= 1.5 and >= 3.5 s, the next >= 7.5 s.
  const first = (created[0] as EventRow).at.getTime()
  const early = created.filter((e) => e.at.getTime() - first < 5000).length
  t.ok(early <= 4, `${early} placements in the first 5 s (${created.length} for ${FAILURES} failures)`)
  t.same(
    seen.filter((e) => e.type === 'placement.running' || e.type === 'placement.exited').map((e) => e.type),
    [],
    'a launch failure is not a placement that ran'
  )
  const why = new Mismatches()
  failed.forEach((e, i) => {
    why.check(
      `failure ${i + 1}`,
      'reason names the launch error',
      /executable not found: \/nonexistent\/binary.*ENOENT/.test(e.reason ?? ''),
      true
    )
  })
  t.same(why.list, [], `each failure says why the launch failed: ${failed[0]?.reason}`)
  // Restart n waits base * 2^(n-1) times a jitter factor in [0.5, 1): never earlier.
  const gaps = created.slice(1).map((e, i) => e.at.getTime() - (created[i] as EventRow).at.getTime())
  const tooSoon = new Mismatches()
  gaps.forEach((ms, i) => {
    tooSoon.check(
      `restart ${i + 1} (${ms} ms)`,
      `at least ${500 * 2 ** i} ms after the previous`,
      ms >= 500 * 2 ** i,
      true
    )
  })
  t.same(tooSoon.list, [], 'the delays between attempts double')
  t.ok((gaps[gaps.length - 1] ?? 0) > (gaps[0] ?? 0), `delays grow: ${gaps.join(', ')} ms`)

  const workload = await eventually(
    async () => {
      const body = (await c.call('GET', `/v1/workloads/${id}`)).body
      return /^crash-loop/.test(body.reason ?? '') ? body : undefined
    },
    10_000,
    'the crash-loop reason'
  )
  t.match(workload.reason, /executable not found/, `the reason says why: ${workload.reason}`)

  // Old placements go (rows and folders), the last few stay for their logs.
  const rows = await eventually(
    async () => {
      const { rows } = await c.pool.query<{ n: number }>(
        "select count(*)::int as n from placements where workload_id = $1 and state in ('exited', 'failed', 'stopped', 'lost')",
        [id]
      )
      return (rows[0]?.n ?? 0) <= 3 ? rows[0]?.n : undefined
    },
    10_000,
    'old placement rows pruned'
  )
  t.ok(rows !== undefined && rows > 0, `${rows} ended placement rows kept`)
  const folders = await eventually(
    () => {
      const n = readdirSync(join(agent.stateDir, 'placements')).length
      return n <= 4 ? n : undefined
    },
    10_000,
    'old placement folders pruned'
  )
  t.ok(folders >= 3, `${folders} placement folders kept`)
  t.equal((await c.call('DELETE', `/v1/workloads/${id}`)).status, 200)
})

t.test("docker: an image that cannot be pulled is a launch failure, with docker's words", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-launch-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // What the docker client does for a missing image: its error on stderr, exit 125.
  const docker = join(dir, 'docker')
  writeFileSync(
    docker,
    `#!/bin/sh\necho "Unable to find image 'nope:latest' locally" >&2\necho "docker: Error response from daemon: pull access denied for nope, repository does not exist." >&2\nexit 125\n`
  )
  chmodSync(docker, 0o755)
  const rt = createRuntime({ stateDir: join(dir, 'state'), docker })
  t.teardown(async () => await rt.close())
  const seen: RunningPlacement[] = []
  const ended = new Promise<RunningPlacement>((resolve) => {
    rt.on('status', (s: RunningPlacement) => {
      seen.push(s)
      if (['exited', 'failed', 'lost', 'stopped'].includes(s.state)) resolve(s)
    })
  })
  await rt.start({
    placementId: randomUUID(),
    workloadId: randomUUID(),
    workloadName: 'bad-image',
    replica: 0,
    gpus: [],
    run: { driver: 'docker', image: 'nope', command: ['serve'] },
    env: {}
  })
  const end = await ended
  t.match(end, {
    state: 'failed',
    exitCode: 125,
    reason:
      /^launch failed: docker could not start the container \(exit 125\): docker: Error response from daemon: pull access denied/
  })
})
