// Agents and a coordinator over libp2p on 127.0.0.1 (many nodes in one
// process): enrollment and trust, placements really running with the GPU
// environment, gangs with rank variables, failures, fencing, bad frames.
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import t from 'tap'
import { loadOrCreateIdentity } from '../common/mesh/identity.js'
import { ACK_AFTER_MS, agentSilenceMs, CONTROL_PROTOCOL } from '../protocol/control.js'
import { eventually, startTestCoordinator, type TestCoordinator, workloadWhen } from './helpers/coordinator.js'
import {
  bareNode,
  clusterKeyOf,
  dialControl,
  joinedAgents,
  joinToken,
  placementLog,
  sayHello,
  scriptedCoordinator,
  startTestAgent,
  type TestAgent
} from './helpers/mesh.js'

const sh = (script: string) => ({ driver: 'process', command: ['sh', '-c', script] })

async function hosts(
  c: TestCoordinator
): Promise<Array<{ id: string; name: string; state: string; pool: string; peerId: string }>> {
  return (await c.call('GET', '/v1/hosts')).body.items
}

/** A one-replica endpoint on the H100 pool, once its replica runs. */
async function runningEndpoint(c: TestCoordinator, name: string, gpus: number, script: string): Promise<any> {
  const w = await c.call('POST', '/v1/workloads', {
    name,
    kind: 'endpoint',
    replicas: 1,
    gpus,
    pools: ['h100-80gb-8x-nvlink'],
    run: sh(script)
  })
  return await workloadWhen(c, w.body.id, (x) => x.placements[0]?.state === 'running', 15_000, 'the replica to run')
}

const log = (agent: TestAgent, placementId: string): string => placementLog(agent.stateDir, placementId)

t.test('enrollment: join tokens are one-time, pool-bound, and the peer id is the credential after', async (t) => {
  const c = await startTestCoordinator(t)
  const token = await joinToken(c)
  const a = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', { joinToken: token })
  await eventually(async () => (await hosts(c)).some((h) => h.name === 'node-a'), 10_000, 'node-a enrolled')
  const host = (await hosts(c)).find((h) => h.name === 'node-a')
  t.equal(host?.peerId, a.node.peerId.toString(), 'registered under its peer id')
  t.equal(host?.pool, 'h100-80gb-8x-nvlink')

  // The same token again, from another peer: refused.
  const b = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-b', { joinToken: token })
  // No token at all: refused.
  const d = await startTestAgent(t, c, 'l40s-1x', 'node-d')
  // A token bound to another pool: refused.
  const e = await startTestAgent(t, c, 'l40s-1x', 'node-e', { joinToken: await joinToken(c, 'h100-80gb-8x-nvlink') })
  const refusals = await eventually(
    () =>
      [b, d, e].every((x) => x.control.refusal !== null)
        ? [b, d, e].map((x) => `${x.name}: ${x.control.refusal?.code ?? ''}`)
        : undefined,
    10_000,
    'the three agents to be refused'
  )
  t.same(
    refusals,
    ['node-b: ERR_JOIN_TOKEN', 'node-d: ERR_UNKNOWN_PEER', 'node-e: ERR_POOL_MISMATCH'],
    'each refused for its reason'
  )
  t.same((await hosts(c)).map((h) => h.name).sort(), ['node-a'], 'only the agent with a valid token joined')
  t.same(
    [b, d, e].filter((x) => x.control.hostId !== null).map((x) => x.name),
    [],
    'none of them was welcomed'
  )

  // Restart of the enrolled agent (same state dir, so same key): no token needed.
  await a.stop()
  const again = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', { stateDir: a.stateDir })
  await eventually(
    async () => again.control.hostId === host?.id,
    10_000,
    'the restarted agent to rejoin as the same host'
  )
  t.equal((await hosts(c)).length, 1, 'still one host')
})

t.test('a peer without the cluster key cannot even connect', async (t) => {
  const c = await startTestCoordinator(t)
  const wrongKey = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${'0f'.repeat(32)}\n`)
  const outsider = await bareNode(t, wrongKey)
  // The handshake itself fails (pnet), at once: not the dial's timeout (an AbortError) running out.
  await t.rejects(dialControl(outsider, c, AbortSignal.timeout(30_000)), { name: 'EncryptionFailedError' })
})

t.test('placements run with the GPU environment; exits and deletions are reported', async (t) => {
  const c = await startTestCoordinator(t)
  const [a] = (await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a'])) as [TestAgent]
  const w = await c.call('POST', '/v1/workloads', {
    name: 'env',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 4,
    run: sh(
      'echo "cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES workload=$GPUMESH_WORKLOAD placement=$GPUMESH_PLACEMENT_ID"; exit 0'
    )
  })
  const done = await workloadWhen(c, w.body.id, (x) => x.state === 'completed', 15_000, 'the session to finish')
  const p = done.placements[0]
  t.match(p, { state: 'exited', exitCode: 0, gpus: [0, 1, 2, 3] })
  t.equal(log(a, p.id).trim(), `cuda=0,1,2,3 nvidia=0,1,2,3 workload=env placement=${p.id as string}`)

  // A long-running endpoint replica, then DELETE: the agent stops it.
  const running = await runningEndpoint(c, 'serve', 2, 'echo up; exec sleep 60')
  const pid = running.placements[0].id as string
  t.equal((await c.call('DELETE', `/v1/workloads/${running.id as string}`)).status, 200)
  await eventually(
    async () => a.runtime.list().find((x) => x.placementId === pid)?.state === 'stopped',
    15_000,
    'the agent to stop the deleted replica'
  )

  // A failing recipe with restart "never" ends failed with the exit code in the reason.
  const bad = await c.call('POST', '/v1/workloads', {
    name: 'bad',
    kind: 'recipe',
    pool: 'h100-80gb-8x-nvlink',
    hosts: 1,
    gpus: 1,
    run: sh('exit 3')
  })
  const failed = await workloadWhen(c, bad.body.id, (x) => x.state === 'failed', 15_000, 'the recipe to fail')
  t.match(failed.reason, /exited with code 3/)
})

t.test('a 2-host recipe gets ranks, world size and the rank-0 address', async (t) => {
  const c = await startTestCoordinator(t)
  const agents = await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a', 'node-b'])
  const w = await c.call('POST', '/v1/workloads', {
    name: 'sft',
    kind: 'recipe',
    pool: 'h100-80gb-8x-nvlink',
    hosts: 2,
    gpus: 8,
    run: sh(
      'echo "rank=$GPUMESH_RANK world=$GPUMESH_WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT cuda=$CUDA_VISIBLE_DEVICES"'
    )
  })
  const done = await workloadWhen(c, w.body.id, (x) => x.state === 'completed', 20_000, 'the gang to finish')
  const lines = done.placements
    .map((p: any) => log(agents.find((a) => a.control.hostId === p.hostId) as TestAgent, p.id).trim())
    .sort()
  t.match(lines[0], /^rank=0 world=2 master=127\.0\.0\.1:\d{5} cuda=0,1,2,3,4,5,6,7$/)
  t.match(lines[1], /^rank=1 world=2 master=127\.0\.0\.1:\d{5} cuda=0,1,2,3,4,5,6,7$/)
  t.equal(lines[0].split(' ')[2], lines[1].split(' ')[2], 'both ranks meet at the same master address and port')
})

t.test('a crashed agent is detected, its endpoint replica moves, the stale copy is fenced on return', async (t) => {
  const c = await startTestCoordinator(t, { heartbeatMs: 500 })
  const agents = await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a', 'node-b', 'node-c'])
  const first = await runningEndpoint(c, 'chat', 8, 'exec sleep 120')
  const victim = agents.find((a) => a.control.hostId === first.placements[0].hostId) as TestAgent
  await victim.crash()
  // How fast is a bench figure (bench mesh: down_detect_ms); here only that it happens.
  const moved = await workloadWhen(
    c,
    first.id,
    (x) => x.placements.some((p: any) => p.state === 'running' && p.hostId !== victim.control.hostId),
    30_000,
    'the replica to be placed elsewhere'
  )
  t.equal(moved.placements.find((p: any) => p.id === first.placements[0].id)?.state, 'lost', 'the old replica is lost')
  t.equal((await hosts(c)).find((h) => h.name === victim.name)?.state, 'down')
  // The crashed agent comes back (same state dir): its old process is still running; the coordinator's list fences it.
  const back = await startTestAgent(t, c, 'h100-8x-nv18-nics', victim.name, { stateDir: victim.stateDir })
  await eventually(
    async () => back.runtime.list().find((p) => p.placementId === first.placements[0].id)?.state === 'stopped',
    15_000,
    'the stale replica to be stopped'
  )
  await eventually(
    async () => (await hosts(c)).find((h) => h.name === victim.name)?.state === 'ready',
    10_000,
    'the host to be ready again'
  )
})

t.test('bad frames get an error and close that stream only', async (t) => {
  const c = await startTestCoordinator(t)
  await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a'])
  const rogue = await bareNode(t, clusterKeyOf(c))
  const target = multiaddr(c.mesh.multiaddrs()[0] as string)
  const answers: string[] = []
  for (const bytes of [
    new TextEncoder().encode('not json'),
    new TextEncoder().encode('{"v":99,"type":"hello"}'),
    new TextEncoder().encode('{"v":1,"type":"heartbeat","seq":1,"gpus":[]}'),
    new TextEncoder().encode('{"v":1,"type":"hello","name":"x"}')
  ]) {
    const lp = lpStream(await rogue.dialProtocol(target, CONTROL_PROTOCOL))
    await lp.write(bytes)
    const reply = JSON.parse(
      new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(5000) })).subarray())
    ) as { type: string; code: string }
    answers.push(`${reply.type}:${reply.code}`)
  }
  t.same(answers, ['error:ERR_FRAME_JSON', 'error:ERR_FRAME_VERSION', 'error:ERR_FRAME_SHAPE', 'error:ERR_FRAME_SHAPE'])
  const big = lpStream(await rogue.dialProtocol(target, CONTROL_PROTOCOL))
  // The coordinator refuses the frame from its length prefix and resets the stream: the write may fail half-way.
  void big.write(new Uint8Array(5 * 1024 * 1024)).catch(() => {})
  const refused = JSON.parse(
    new TextDecoder().decode((await big.read({ signal: AbortSignal.timeout(10_000) })).subarray())
  ) as { type: string; code: string }
  t.same(
    [refused.type, refused.code],
    ['error', 'ERR_FRAME_TOO_LARGE'],
    'a frame over the limit is refused as too large'
  )
  // The real agent's session is unaffected.
  const w = await c.call('POST', '/v1/workloads', {
    name: 'still',
    kind: 'session',
    pool: 'h100-80gb-8x-nvlink',
    gpus: 1,
    run: sh('exit 0')
  })
  await workloadWhen(c, w.body.id, (x) => x.state === 'completed', 15_000, 'the good agent to keep working')
  t.equal((await hosts(c)).length, 1, 'the rogue peer registered nothing')
})

t.test('revocation: the peer id stops being a credential', async (t) => {
  const c = await startTestCoordinator(t)
  const [a] = (await joinedAgents(t, c, 'l40s-1x', ['node-a'])) as [TestAgent]
  const id = a.control.hostId as string
  t.equal((await c.call('DELETE', `/v1/hosts/${id}`)).status, 204)
  t.equal((await c.call('GET', `/v1/hosts/${id}`)).status, 404)
  t.match(await a.fatal, { code: 'ERR_REVOKED' }, 'the agent is told, and must end')
  t.equal(a.control.connectedAt, 0, 'its session is closed')
  // It cannot come back: its identity (the agent's own key file) is answered ERR_REVOKED and cut off.
  await a.stop()
  const same = await bareNode(t, clusterKeyOf(c), {
    privateKey: await loadOrCreateIdentity(join(a.stateDir, 'peer.key'))
  })
  t.equal(same.peerId.toString(), a.node.peerId.toString(), 'the revoked identity')
  const lp = lpStream(await same.dialProtocol(multiaddr(c.mesh.multiaddrs()[0] as string), CONTROL_PROTOCOL))
  await lp.write(new TextEncoder().encode(JSON.stringify({ v: 1, type: 'heartbeat', seq: 0, gpus: [] })))
  const answer = JSON.parse(
    new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(10_000) })).subarray())
  ) as { type: string; code: string }
  t.same([answer.type, answer.code], ['error', 'ERR_REVOKED'], 'its first frame is answered ERR_REVOKED')
  await eventually(
    () => (same.getConnections().length === 0 ? true : undefined),
    10_000,
    'the coordinator to cut the connection'
  )
  t.equal((await hosts(c)).length, 0, 'and it is not a host again')
})

t.test('changed GPUs quarantine the host instead of shrinking its pool', async (t) => {
  const c = await startTestCoordinator(t)
  const [a] = (await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a'])) as [TestAgent]
  const facts = a.facts()
  await a.control.sendFacts({ ...facts, gpus: facts.gpus.slice(0, 7) })
  const host = await eventually(
    async () => (await hosts(c)).find((h) => h.state === 'quarantined'),
    10_000,
    'quarantine'
  )
  t.equal(host.name, 'node-a')
  const events = (await c.pool.query<{ type: string }>("select type from events where type = 'host.quarantined'")).rows
  t.equal(events.length, 1, 'an event says so')
})

t.test('gossip: agents of a pool see each other, through the coordinator when that is their only link', async (t) => {
  const c = await startTestCoordinator(t)
  const a = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', { joinToken: await joinToken(c) })
  const b = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-b', { joinToken: await joinToken(c) })
  const l = await startTestAgent(t, c, 'l40s-1x', 'node-l', { joinToken: await joinToken(c) })
  // Both directions: each side hears the other on its own gossip schedule.
  const view = await eventually(
    async () => {
      const v = a.membership.view('h100-80gb-8x-nvlink')
      const heard = v.some((m) => m.name === 'node-b') && b.membership.view('h100-80gb-8x-nvlink').length > 0
      return heard ? v : undefined
    },
    // A prompt announcement to a new subscriber can be missed under load; the periodic one (30 s) is not.
    45_000,
    'node-a and node-b to hear each other'
  )
  t.same(
    view.map((m) => m.name),
    ['node-b'],
    'its pool: the other H100 host, not itself'
  )
  await eventually(
    async () => a.membership.view().some((m) => m.name === 'node-l'),
    20_000,
    'the cluster view to include the L40S host'
  )
  t.notOk(l.membership.view('l40s-48gb-1x').length > 0, 'the L40S pool has no other member')
  t.equal(b.membership.view('h100-80gb-8x-nvlink')[0]?.name, 'node-a')
})

t.test(
  'liveness in the control session: the coordinator acks a heartbeat only after 2 s of saying nothing',
  async (t) => {
    const c = await startTestCoordinator(t)
    const channel = await sayHello(await bareNode(t, clusterKeyOf(c)), c, 'raw-agent', await joinToken(c))
    const welcome = await channel.receive(AbortSignal.timeout(5000))
    t.equal(welcome?.type, 'welcome', 'enrolled')
    const welcomedAt = Date.now()
    // Heartbeats four times a second (a silent agent would soon be suspect and dropped); every frame
    // the coordinator sends back is recorded with when it came.
    let seq = 0
    const beat = setInterval(() => {
      void channel.send({ v: 1, type: 'heartbeat', seq: seq++, gpus: [] }).catch(() => {})
    }, 250)
    t.teardown(() => {
      clearInterval(beat)
    })
    const heard: Array<{ at: number; frame: { type: string; seq?: number } }> = []
    while (heard.length < 3) {
      const frame = await channel.receive(AbortSignal.timeout(30_000))
      if (frame === null) break
      heard.push({ at: Date.now(), frame })
    }
    clearInterval(beat)
    t.same(
      heard.map((h) => h.frame.type),
      ['heartbeat-ack', 'heartbeat-ack', 'heartbeat-ack'],
      'nothing but acks'
    )
    const gaps = heard.map((h, i) => h.at - (i === 0 ? welcomedAt : (heard[i - 1] as { at: number }).at))
    t.same(
      gaps.filter((g) => g < ACK_AFTER_MS - 50),
      [],
      `each ack only after ${ACK_AFTER_MS} ms of the coordinator's silence (${gaps.join(', ')} ms)`
    )
    const acked = heard.map((h) => h.frame.seq ?? -1)
    t.ok(
      acked.every((n, i) => n < seq && (i === 0 || n - (acked[i - 1] as number) > 1)),
      `not one ack per heartbeat: acks for heartbeats ${acked.join(', ')} of ${seq} sent`
    )
  }
)

t.test(
  'liveness in the control session: an agent that hears nothing from the coordinator dials a new connection',
  async (t) => {
    // A coordinator that welcomes the agent and then stays silent, as one behind a partition does
    // (the old connection never errors); with `ack` on, it answers heartbeats.
    const hellos: number[] = []
    let ack = false
    const acked: number[] = []
    let epoch = 0
    const { node: silent, target } = await scriptedCoordinator(t, async (channel) => {
      for (let frame = await channel.receive(); frame !== null; frame = await channel.receive()) {
        if (frame.type === 'hello') {
          hellos.push(Date.now())
          await channel.send({
            v: 1,
            type: 'welcome',
            hostId: '00000000-0000-4000-8000-000000000001',
            epoch: ++epoch,
            heartbeatMs: 200,
            placements: []
          })
        } else if (frame.type === 'heartbeat' && ack) {
          acked.push(Date.now())
          await channel.send({ v: 1, type: 'heartbeat-ack', seq: frame.seq })
        }
      }
    })
    await startTestAgent(t, target, 'l40s-1x', 'listener', { mdns: false })
    const silenceMs = agentSilenceMs(200)
    await eventually(async () => hellos.length >= 2, silenceMs + 5000, 'the agent to dial again')
    const gap = (hellos[1] as number) - (hellos[0] as number)
    t.ok(
      gap >= silenceMs,
      `a new session ${gap} ms after the first: not before the coordinator was silent for ${silenceMs} ms`
    )
    t.ok(
      await eventually(async () => silent.getConnections().length === 1, 15_000, 'the old connection to close'),
      'over a new connection; the old one is closed'
    )
    ack = true
    const ackedFrom = Date.now()
    const before = hellos.length
    // Heartbeats answered for longer than the agent's silence limit: had it dropped the session, it would have said hello again.
    await eventually(
      () => acked.some((at) => at - ackedFrom > silenceMs + 200),
      silenceMs + 10_000,
      'heartbeats past the silence limit'
    )
    t.equal(hellos.length, before, 'a coordinator that acks keeps the session')
  }
)
