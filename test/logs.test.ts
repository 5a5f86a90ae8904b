// Placement logs end to end, every part real: a coordinator on embedded
// PostgreSQL, an agent over libp2p on 127.0.0.1 running the placements'
// processes, the API over HTTP and `gpumesh logs` as a process. The agent rotates logs at 100 bytes
// so that `tail` is seen to count lines across the rotated file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Multiaddr } from '@multiformats/multiaddr'
import t from 'tap'
import { detectMachine } from '../cli/up/simulated.js'
import { LOGS_PROTOCOL } from '../protocol/logs.js'
import { encodeJsonFrame, FrameDecoder } from '../protocol/session.js'
import { gpumesh, gpumeshRunning } from './helpers/cli.js'
import { eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { bareNode, clusterKeyOf, joinToken, startTestAgent, type TestAgent } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'
import { endAtTeardown } from './helpers/process.js'

const POOL = 'h100-80gb-8x-nvlink'
/** Each stream's file rotates at half of it (100 bytes): 50 short lines fill several files. */
const LOG_MAX_BYTES = 200

const lines = (prefix: string, from: number, to: number): string =>
  Array.from({ length: to - from + 1 }, (_, i) => `${prefix}-${from + i}\n`).join('')

async function create(c: TestCoordinator, body: Record<string, unknown>): Promise<string> {
  const r = await c.call('POST', '/v1/workloads', body)
  if (r.status !== 201) throw new Error(`create ${String(body.name)}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

/** A one-host recipe that runs a shell script once. */
async function recipe(c: TestCoordinator, name: string, script: string): Promise<string> {
  return await create(c, {
    name,
    kind: 'recipe',
    pool: POOL,
    hosts: 1,
    gpus: 1,
    restart: 'never',
    run: { driver: 'process', command: ['sh', '-c', script] }
  })
}

/** The workload once every placement it should have is in `state`. */
async function placementsIn(c: TestCoordinator, id: string, state: string, count = 1): Promise<any[]> {
  return await eventually(
    async () => {
      const w = (await c.call('GET', `/v1/workloads/${id}`)).body
      const ps = (w.placements ?? []) as any[]
      return ps.length === count && ps.every((p) => p.state === state) ? ps : undefined
    },
    20_000,
    `the placements of ${id} to be ${state}`
  )
}

t.test('logs: follow, tail across rotation, stderr, both, replicas, ended placements, refusals', async (t) => {
  const c = await startTestCoordinator(t)
  // Detection has a deadline; on a loaded machine the replayed nvidia-smi can miss it and the host
  // would join the cpu pool: detect again until the fixture's GPUs are seen.
  const facts = await eventually(
    async () => {
      const f = await detectMachine('h100-8x-nv18-nics', { agentVersion: 'test' })
      return f.pool.key === POOL ? f : undefined
    },
    60_000,
    'the fixture machine to be detected whole'
  )
  const a: TestAgent = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', {
    joinToken: await joinToken(c),
    logMaxBytes: LOG_MAX_BYTES,
    facts
  })
  await eventually(() => a.control.hostId !== null, 10_000, 'the agent to join')

  // An endpoint of two replicas; each prints "up", then whatever the test leaves in its own file, when it does.
  // (A shell loop rather than an HTTP replica: the host ports tests on this machine share would collide.)
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-logs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const say = `echo up; while :; do f=${dir}/$GPUMESH_PLACEMENT_ID; if [ -e $f ]; then cat $f; rm $f; fi; sleep 0.05; done`
  const chat = await create(c, {
    name: 'chat',
    kind: 'endpoint',
    replicas: 2,
    gpus: 1,
    pools: [POOL],
    run: { driver: 'process', command: ['sh', '-c', say] }
  })
  const replicas = (await placementsIn(c, chat, 'running', 2)).sort((x, y) => x.replica - y.replica)
  for (const p of replicas) endAtTeardown(t, p.id)
  const follow = gpumeshRunning(t, c.api, ['logs', '-f', 'chat'])
  await eventually(
    () => follow.stdout().includes('chat-0 | up\n') && follow.stdout().includes('chat-1 | up\n'),
    20_000,
    "both replicas' first lines, prefixed"
  )
  // A line replica 0 prints only now, after the command started following.
  writeFileSync(join(dir, replicas[0].id), 'said after follow\n')
  await eventually(
    () => follow.stdout().includes('chat-0 | said after follow\n'),
    20_000,
    'the new line in gpumesh logs -f'
  )
  t.pass('gpumesh logs -f shows a line printed after it started, prefixed by its replica')
  t.notOk(follow.stdout().includes('chat-1 | said'), "replica 1's lines are its own")
  // The client going away ends the agent's reading.
  t.ok(a.logs.streams >= 2, 'the agent serves both followed streams')
  follow.process.kill('SIGTERM')
  await eventually(() => a.logs.streams === 0, 10_000, 'the agent to stop following once the client left')
  t.pass('a client that goes away ends the agent-side follow')

  // A recipe that prints 50 lines to each stream and exits: its logs after it ended.
  const count = await recipe(c, 'count', 'i=1; while [ $i -le 50 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done')
  const [ended] = await placementsIn(c, count, 'exited')
  const cases: Array<[string, string[], string]> = [
    ['--tail 3', ['logs', 'count', '--tail', '3'], lines('out', 48, 50)],
    ['--tail 20 (across the rotated file)', ['logs', 'count', '--tail', '20'], lines('out', 31, 50)],
    ['--stderr --tail 2', ['logs', 'count', '--stderr', '--tail', '2'], lines('err', 49, 50)],
    ['--tail 0', ['logs', 'count', '--tail', '0'], ''],
    ['by placement id prefix', ['logs', ended.id.slice(0, 8), '--tail', '1'], lines('out', 50, 50)],
    ['--both --tail 1', ['logs', 'count', '--both', '--tail', '1'], 'out-50\nerr-50\n']
  ]
  const got = new Mismatches()
  for (const [kase, args, want] of cases) {
    const r = await gpumesh(c.api, args)
    got.check(kase, 'exit code', r.exitCode, 0)
    got.check(kase, 'stdout', r.stdout, want)
  }
  t.same(got.list, [], 'logs of an ended placement: tail, stderr, both')
  const all = await c.call('GET', `/v1/placements/${ended.id}/logs?stream=both`)
  t.equal(all.headers.get('content-type'), 'text/plain; charset=utf-8', 'the API answers text/plain')
  t.ok(
    String(all.body)
      .split('\n')
      .filter((l) => l !== '')
      .every((l, i, kept) => i === 0 || /^(out|err)-\d+$/.test(l) || kept.length === 0),
    'stream=both keeps lines whole'
  )

  // Following a placement that ends: the command ends by itself once the output is read.
  const go = join(dir, 'go')
  const waiter = await recipe(c, 'waiter', `echo start; while [ ! -e ${go} ]; do sleep 0.05; done; echo end`)
  const [waiting] = await placementsIn(c, waiter, 'running')
  endAtTeardown(t, waiting.id)
  const tail = gpumeshRunning(t, c.api, ['logs', '--follow', 'waiter'])
  await eventually(() => tail.stdout() === 'start\n', 20_000, 'the first line')
  writeFileSync(go, '')
  const done = await tail.process
  t.equal(done.exitCode, 0, 'gpumesh logs -f exits 0 once the placement has ended')
  t.equal(tail.stdout(), 'start\nend\n', 'with every line, the last one written as the process ended')

  // Refusals, as problem+json.
  const unknown = await c.call('GET', '/v1/placements/00000000-0000-4000-8000-000000000000/logs')
  t.match(unknown, { status: 404, body: { code: 'NOT_FOUND' } }, 'an unknown placement: 404')
  const bad = await c.call('GET', `/v1/placements/${ended.id}/logs?stream=all`)
  t.match(bad, { status: 400, body: { code: 'VALIDATION' } }, 'an unknown stream: 400')

  // Only the coordinator may open the logs protocol.
  const other = await bareNode(t, clusterKeyOf(c))
  const stream = await other.dialProtocol(a.node.getMultiaddrs()[0] as Multiaddr, LOGS_PROTOCOL)
  stream.send(
    encodeJsonFrame({ v: 1, type: 'logs', placementId: ended.id, stream: 'stdout', tail: null, follow: false })
  )
  const decoder = new FrameDecoder()
  const answer = await new Promise<unknown>((resolve) => {
    stream.addEventListener('message', (e) => {
      const f = decoder.push(e.data instanceof Uint8Array ? e.data : e.data.subarray())[0]
      if (f !== undefined && f.tag === 1) resolve(f.value)
    })
  })
  t.match(answer, { type: 'error', code: 'ERR_FORBIDDEN' }, 'a peer that is not the coordinator is refused')

  // The host gone: the logs are there, but out of reach.
  await a.stop()
  const away = await eventually(
    async () => {
      const r = await c.call('GET', `/v1/placements/${ended.id}/logs`)
      return r.status === 503 ? r : undefined
    },
    10_000,
    'a 503 once the host is gone'
  )
  t.match(away.body, { code: 'HOST_UNREACHABLE', detail: /not connected to this coordinator/ }, 'says why')
})
