// Several hosts on one machine, in Linux network namespaces this test
// creates (test/helpers/netns.ts): a coordinator process and four agent
// processes (`gpumesh-agent run`, each replaying another fixture machine
// through the nvidia-smi double), each in a namespace of its own on one
// bridge. mDNS is on. It shows discovery by mDNS, pools forming, a 2-host
// gang meeting at rank 0's address, an endpoint across two pools, a cut link
// detected and its replica moved, and the healed host's stale copy fenced.
// Needs root and iproute2 (CI runs as root): without them it fails, saying so.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { freshDatabase } from './helpers/postgres.js'
import { eventually as waitFor } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'
import { alive } from './helpers/process.js'
import { networkFor, requireNetns, startNetAgent, startNetCoordinator, type NetAgent } from './helpers/netns.js'

const H100 = 'h100-80gb-8x-nvlink'
const L40S = 'l40s-48gb-1x'

/** node name -> fixture machine */
const MACHINES: Record<string, string> = {
  'h100-a': 'h100-8x-nv18-nics',
  'h100-b': 'h100-8x-nv18-nics',
  'l40s-c': 'l40s-1x',
  'l40s-d': 'l40s-1x'
}

// Every rank prints what it was given; rank 0 listens on MASTER_ADDR:MASTER_PORT and rank 1 must reach it there.
const RENDEZVOUS = `
const net = require('node:net')
const e = process.env
console.log('rank=' + e.GPUMESH_RANK + ' world=' + e.GPUMESH_WORLD_SIZE + ' master=' + e.MASTER_ADDR + ':' + e.MASTER_PORT + ' cuda=' + e.CUDA_VISIBLE_DEVICES)
setTimeout(() => { console.log('rendezvous timed out'); process.exit(1) }, 20000).unref()
if (e.GPUMESH_RANK === '0') {
  const s = net.createServer((c) => { c.end('hello from rank 0'); s.close() }).listen(Number(e.MASTER_PORT), e.MASTER_ADDR)
} else {
  const attempt = () => {
    const c = net.connect(Number(e.MASTER_PORT), e.MASTER_ADDR)
    let got = ''
    c.on('data', (d) => { got += d })
    c.on('end', () => console.log('rendezvous: ' + got))
    c.on('error', () => setTimeout(attempt, 100))
  }
  attempt()
}
`

interface Host {
  id: string
  name: string
  pool: string
  state: string
  stateReason: string | null
}
interface Placement {
  id: string
  hostId: string
  hostName: string
  replica: number
  state: string
  gpus: number[]
  reason: string | null
}

t.test(
  'hosts in network namespaces: mDNS, pools, a gang, an endpoint across pools, a cut link and its heal',
  async (t) => {
    requireNetns() // first: without root or iproute2 the test fails here, saying which
    const databaseUrl = await freshDatabase(t)
    const net = await networkFor(t, ['coord', ...Object.keys(MACHINES)])
    // PostgreSQL listens on a Unix socket only: a file, reachable from every network namespace.
    t.match(databaseUrl, /[?&]host=(\/|%2F)/, 'the database is reached over a Unix socket')
    const c = await startNetCoordinator(net, 'coord', { databaseUrl, heartbeatMs: 500 })
    t.match(
      c.multiaddrs,
      [new RegExp(`^/ip4/${c.node.ip.replaceAll('.', '\\.')}/tcp/7471/p2p/${c.peerId}$`)],
      'the coordinator listens on its namespace address'
    )
    const api = c.api
    const hosts = async (): Promise<Host[]> => (await api.get('/v1/hosts')).items as Host[]
    const workload = async (id: string): Promise<{ state: string; reason: string | null; placements: Placement[] }> =>
      await api.get(`/v1/workloads/${id}`)
    const post = async (body: unknown): Promise<string> => {
      const r = await api.call('POST', '/v1/workloads', body)
      if (r.status !== 201) throw new Error(`POST /v1/workloads: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.id as string
    }

    const agents = new Map<string, NetAgent>()
    const tokens: number[] = []
    for (const [name, machine] of Object.entries(MACHINES)) {
      const token = await api.call('POST', '/v1/join-tokens', {})
      tokens.push(token.status)
      agents.set(name, startNetAgent(net, name, { machine, coordinator: c, joinToken: token.body.token as string }))
    }
    t.same(tokens, Array(agents.size).fill(201), 'a join token for each host')
    const agent = (name: string) => agents.get(name) as NetAgent
    const hostName = new Map<string, string>()
    await waitFor(
      async () => {
        const list = await hosts()
        for (const h of list) hostName.set(h.id, h.name)
        return list.length === agents.size && list.every((h) => h.state === 'ready') ? true : undefined
      },
      60_000,
      'the four agents to enroll and be ready'
    )

    await t.test('agents find each other by mDNS', async (t) => {
      // Agents are only told the coordinator's address and the coordinator hands out no peers, so a
      // connection between two agents (across pools, where failure probes never dial) comes from mDNS.
      const names = [...agents.keys()]
      const mesh = await waitFor(
        async () => {
          const seen = new Map<string, Set<string>>()
          for (const n of names) seen.set(n, await net.tcpPeers(n))
          return names.every((n) => names.every((m) => m === n || seen.get(n)?.has(net.node(m).ip) === true))
            ? seen
            : undefined
        },
        30_000,
        'every agent to be connected to every other agent'
      )
      const peersOf = (n: string) => ({
        coordinator: mesh.get(n)?.has(c.node.ip) === true,
        agents: [...(mesh.get(n) ?? [])].filter((ip) => ip !== c.node.ip).sort()
      })
      t.same(
        names.map(peersOf),
        names.map((n) => ({
          coordinator: true,
          agents: names
            .filter((m) => m !== n)
            .map((m) => net.node(m).ip)
            .sort()
        })),
        'each agent is connected to the coordinator and the three other agents'
      )
    })

    await t.test('two pools form', async (t) => {
      const pools = (await api.get('/v1/pools')).items as Array<{
        key: string
        hostCount: number
        readyHosts: number
        gpus: { total: number }
      }>
      t.same(pools.map((p) => p.key).sort(), [H100, L40S])
      t.match(
        pools.find((p) => p.key === H100),
        { hostCount: 2, readyHosts: 2, gpus: { total: 16 } }
      )
      t.match(
        pools.find((p) => p.key === L40S),
        { hostCount: 2, readyHosts: 2, gpus: { total: 2 } }
      )
      const list = await hosts()
      t.same(
        Object.keys(MACHINES).map((name) => list.find((h) => h.name === name)?.pool),
        Object.values(MACHINES).map((machine) => (machine.startsWith('h100') ? H100 : L40S)),
        'each host in its pool'
      )
    })

    await t.test("a 2-host recipe runs on the two H100 hosts and meets at rank 0's address", async (t) => {
      const id = await post({
        name: 'sft',
        kind: 'recipe',
        pool: H100,
        hosts: 2,
        gpus: 8,
        run: { driver: 'process', command: [process.execPath, '-e', RENDEZVOUS] }
      })
      const done = await waitFor(
        async () => {
          const w = await workload(id)
          if (w.state === 'failed')
            throw new Error(`the recipe failed: ${w.reason ?? ''} ${JSON.stringify(w.placements)}`)
          return w.state === 'completed' ? w : undefined
        },
        30_000,
        'the recipe to complete'
      )
      t.equal(done.placements.length, 2)
      t.same(
        done.placements.map((p) => hostName.get(p.hostId)).sort(),
        ['h100-a', 'h100-b'],
        'one rank on each H100 host'
      )
      const rank0 = done.placements.find((p) => p.replica === 0) as Placement
      const rank0Ip = net.node(hostName.get(rank0.hostId) as string).ip
      // A log line that is not there shows as the whole log in the diff.
      const has = (out: string, re: RegExp) => re.test(out) || out
      const m = new Mismatches()
      for (const p of [...done.placements].sort((a, b) => a.replica - b.replica)) {
        const name = hostName.get(p.hostId) as string
        const out = agent(name).placementLog(p.id)
        const rank = `rank ${p.replica} on ${name}`
        const line = new RegExp(
          `^rank=${p.replica} world=2 master=${rank0Ip.replaceAll('.', '\\.')}:\\d+ cuda=0,1,2,3,4,5,6,7$`,
          'm'
        )
        m.check(
          rank,
          `its rank, world size 2, MASTER_ADDR = rank 0's namespace address (${rank0Ip}), 8 GPUs`,
          has(out, line),
          true
        )
        m.check(rank, 'state', p.state, 'exited')
        if (p.replica === 1)
          m.check(
            rank,
            'reached rank 0 at MASTER_ADDR:MASTER_PORT across namespaces',
            has(out, /^rendezvous: hello from rank 0$/m),
            true
          )
      }
      t.same(m.list, [], 'each rank: its variables and the rendezvous')
    })

    const endpointId = await post({
      name: 'chat',
      kind: 'endpoint',
      replicas: 4,
      gpus: 1,
      pools: [H100, L40S],
      run: { driver: 'process', command: ['sh', '-c', 'echo serving; exec sleep 600'] }
    })
    let before: Placement[] = []
    await t.test('an endpoint with replicas in both pools', async (t) => {
      const w = await waitFor(
        async () => {
          const w = await workload(endpointId)
          return w.placements.filter((p) => p.state === 'running').length === 4 ? w : undefined
        },
        30_000,
        'four replicas running'
      )
      before = w.placements
      t.equal(new Set(before.map((p) => p.hostId)).size, 4, 'one replica per host')
      t.same(
        before.map((p) => hostName.get(p.hostId)).sort(),
        [...agents.keys()].sort(),
        'on all four hosts, so in both pools'
      )
      // Running means started: the first line of its log follows a moment later.
      const silent = () =>
        before
          .filter((p) => !/^serving$/m.test(agent(hostName.get(p.hostId) as string).placementLog(p.id)))
          .map((p) => p.replica)
      await waitFor(() => silent().length === 0, 15_000, 'every replica to log "serving"').catch(() => undefined)
      t.same(silent(), [], 'every replica serves on its host')
    })

    const victim = 'l40s-c'
    const victimHost = [...hostName].find(([, n]) => n === victim)?.[0] as string
    let stale: Placement | undefined
    await t.test('a cut link: the host goes down and its replica is placed again elsewhere', async (t) => {
      stale = before.find((p) => p.hostId === victimHost)
      t.ok(stale, `${victim} holds a replica`)
      if (stale === undefined) return
      const staleId = stale.id
      const cutAt = Date.now()
      await net.cut(victim)
      // How fast is a bench figure (bench mesh: down_detect_ms); here only that it happens, and why.
      const down = await waitFor(
        async () => (await hosts()).find((h) => h.id === victimHost && h.state === 'down'),
        60_000,
        `${victim} to be down`
      )
      t.comment(`down ${Date.now() - cutAt} ms after the cut`)
      t.match(down.stateReason, /unreachable from its pool peers/, 'after its pool peer could not reach it either')
      const moved = await waitFor(
        async () => {
          const w = await workload(endpointId)
          const again = w.placements.find(
            (p) => p.replica === stale?.replica && p.id !== staleId && p.state === 'running'
          )
          return again === undefined ? undefined : { w, again }
        },
        20_000,
        `replica ${stale.replica} to run again elsewhere`
      )
      t.comment(
        `replica ${stale.replica} running again on ${hostName.get(moved.again.hostId) as string} ${Date.now() - cutAt} ms after the cut`
      )
      t.not(moved.again.hostId, victimHost, 'on another host')
      t.equal(moved.w.placements.find((p) => p.id === staleId)?.state, 'lost', 'the copy on the cut host is lost')
      t.equal(
        moved.w.placements.filter((p) => p.state === 'running').length,
        4,
        'four replicas run (as the coordinator sees it)'
      )
      const record = agent(victim).placementRecord(staleId)
      t.equal(record?.state, 'running', 'the partitioned host still runs its copy: it cannot know yet')
      t.ok(record?.pid != null && alive(record.pid), 'its process is alive')
    })

    await t.test('healing the link: the host comes back and its stale copy is fenced', async (t) => {
      if (stale === undefined) {
        t.fail('no stale replica to fence')
        return
      }
      const staleId = stale.id
      const pid = agent(victim).placementRecord(staleId)?.pid ?? null
      const epochBefore = agentEpoch(agent(victim))
      const healedAt = Date.now()
      await net.heal(victim)
      await waitFor(
        async () => ((await hosts()).find((h) => h.id === victimHost)?.state === 'ready' ? true : undefined),
        30_000,
        `${victim} to be ready again`
      )
      t.comment(`${victim} ready ${Date.now() - healedAt} ms after the heal`)
      const record = await waitFor(
        () => {
          const r = agent(victim).placementRecord(staleId)
          return r?.state === 'stopped' ? r : undefined
        },
        30_000,
        'the stale copy to be stopped by its agent'
      )
      t.equal(record.state, 'stopped', `the agent stopped it (${record.reason ?? ''})`)
      t.ok(pid !== null && !alive(pid), `its process (pid ${String(pid)}, alive through the partition) is gone`)
      // Its re-registration raised the host's epoch, and the agent obeys that one now.
      const epochAfter = await waitFor(
        () => {
          const e = agentEpoch(agent(victim))
          return e > epochBefore ? e : undefined
        },
        30_000,
        'the agent to obey a newer epoch'
      )
      const db = new pg.Client({ connectionString: databaseUrl })
      await db.connect()
      const registered = (
        await db.query<{ epoch: number }>('select epoch from hosts where id = $1', [victimHost]).finally(() => {
          void db.end()
        })
      ).rows[0]?.epoch
      t.equal(epochAfter, registered, `the agent went from epoch ${epochBefore} to the coordinator's new one`)
      const fenced = agent(victim)
        .proc.output()
        .split('\n')
        .some((l) => l.includes('fenced') && l.includes(staleId))
      t.comment(
        fenced
          ? 'fenced by the welcome list on reconnection'
          : `stopped by the coordinator's stop frame: ${record.reason ?? ''}`
      )
      const w = await workload(endpointId)
      t.equal(
        w.placements.find((p) => p.id === staleId)?.state,
        'lost',
        'the coordinator still counts the stale copy as lost'
      )
      const running = w.placements.filter((p) => p.state === 'running')
      t.same(running.map((p) => p.replica).sort(), [0, 1, 2, 3], 'each replica runs once')
      t.notOk(
        running.some((p) => p.id === staleId),
        'not the stale copy'
      )
    })
  }
)

/** The highest coordinator epoch the agent has obeyed, from its state file. */
function agentEpoch(a: NetAgent): number {
  return (JSON.parse(readFileSync(join(a.stateDir, 'agent.json'), 'utf8')) as { epoch: number }).epoch
}
