// Real agent processes under an operator's bad day: the agent restarts
// (kill -9, then a planned SIGTERM) under running workloads, which must not
// notice (same processes, no re-placement, the host never down); and the host
// is revoked, which must stop its work and the agent for good (exit 78, also
// for an agent that was away when it happened).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa, type Result } from 'execa'
import t, { type Test } from 'tap'
import { eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { AGENT } from './helpers/fixtures.js'
import { agentProcessEnv } from './helpers/mesh.js'

const MACHINE = 'h100-8x-nv18-nics'
const POOL = 'h100-80gb-8x-nvlink'

interface AgentProcess {
  /** Its stdout and stderr so far: pino JSON lines. */
  output: () => string
  /** Resolves once it has joined the coordinator (after the welcome's list was reconciled). */
  joined: () => Promise<void>
  kill: (signal: NodeJS.Signals) => void
  exited: Promise<Result>
}

function runAgent(t: Test, env: Record<string, string>): AgentProcess {
  // The timeout only keeps a broken agent from hanging the run.
  const child = execa(process.execPath, [AGENT], { env, extendEnv: false, reject: false, timeout: 120_000 })
  let output = ''
  const append = (d: Buffer) => {
    output += d.toString()
  }
  child.stdout?.on('data', append)
  child.stderr?.on('data', append)
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  return {
    output: () => output,
    joined: async () => {
      await eventually(
        () => (logLines(output).some((l) => l.msg === 'joined the coordinator') ? true : undefined),
        60_000,
        'the agent to join'
      )
    },
    kill: (signal) => {
      child.kill(signal)
    },
    exited: child
  }
}

function logLines(output: string): Array<{ level: number; msg: string }> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string })
}

/** An error (or fatal) line that says the host was revoked and what to do. */
function saysRevoked(output: string): boolean {
  return output
    .split('\n')
    .some(
      (l) => l.startsWith('{') && (JSON.parse(l) as { level: number }).level >= 50 && /revoked.*new join token/.test(l)
    )
}

/** Alive and not a zombie. */
function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/** The pid a placement's `echo $$; exec sleep` printed, or undefined before it did. */
function pidOf(stateDir: string, placementId: string): number | undefined {
  try {
    const first = readFileSync(join(stateDir, 'placements', placementId, 'stdout.log'), 'utf8').split('\n')[0] ?? ''
    return /^\d+$/.test(first) ? Number(first) : undefined
  } catch {
    return undefined
  }
}

/** An agent process with a state directory of its own, once its host is ready. */
async function enrolledAgent(
  t: Test,
  c: TestCoordinator,
  name: string
): Promise<{ stateDir: string; env: Record<string, string>; agent: AgentProcess; host: { id: string } }> {
  const stateDir = mkdtempSync(join(tmpdir(), `gpumesh-agent-${name}-`))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const env = await agentProcessEnv(c, stateDir, MACHINE, { GPUMESH_NODE_NAME: name })
  const agent = runAgent(t, env)
  const host = await eventually(
    async () =>
      (await c.call('GET', '/v1/hosts')).body.items.find(
        (h: { name: string; state: string }) => h.name === name && h.state === 'ready'
      ),
    60_000,
    `${name} to enroll`
  )
  return { stateDir, env, agent, host }
}

/** An endpoint of `replicas` one-GPU replicas that print their pid; resolves to placement id -> pid once all run. */
async function runningReplicas(
  t: Test,
  c: TestCoordinator,
  stateDir: string,
  replicas: number
): Promise<Map<string, number>> {
  const w = await c.call('POST', '/v1/workloads', {
    name: 'chat',
    kind: 'endpoint',
    replicas,
    gpus: 1,
    pools: [POOL],
    run: { driver: 'process', command: ['sh', '-c', 'echo $$; exec sleep 600'] }
  })
  t.equal(w.status, 201)
  const pids = await eventually(
    async () => {
      const placements = (await c.call('GET', `/v1/workloads/${w.body.id as string}`)).body.placements as Array<{
        id: string
        state: string
      }>
      const running = placements.filter((p) => p.state === 'running')
      const found = new Map(running.map((p) => [p.id, pidOf(stateDir, p.id)]))
      return running.length === replicas && [...found.values()].every((pid) => pid !== undefined)
        ? (found as Map<string, number>)
        : undefined
    },
    30_000,
    `${replicas} replicas running`
  )
  // Workloads outlive their agent by design: the test's own are ended here.
  t.teardown(() => {
    for (const pid of pids.values()) if (isAlive(pid)) process.kill(pid, 'SIGKILL')
  })
  return pids
}

async function eventTypes(c: TestCoordinator): Promise<Array<{ type: string; subject: string; data: any }>> {
  return (
    await c.pool.query<{ type: string; subject: string; data: any }>(
      'select type, subject_id as subject, data from events order by id'
    )
  ).rows
}

t.test('an agent restart (kill -9, then SIGTERM) leaves its workloads alone', async (t) => {
  // The grace is longer than any agent start: it must never be what decides here.
  const c = await startTestCoordinator(t, { agentGraceMs: 10 * 60_000 })
  const enrolled = await enrolledAgent(t, c, 'restarting')
  const { stateDir, env, host } = enrolled
  let agent = enrolled.agent
  const pids = await runningReplicas(t, c, stateDir, 3)

  let restarts = 0
  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    agent.kill(signal)
    const ended = await agent.exited
    if (signal === 'SIGTERM') t.equal(ended.exitCode, 0, 'a planned stop exits 0')
    else t.equal(ended.signal, 'SIGKILL', 'killed')
    agent = runAgent(t, env)
    restarts++
    await agent.joined()
    const events = await eventTypes(c)
    const mismatches: string[] = []
    for (const [id, pid] of pids) {
      if (!isAlive(pid)) mismatches.push(`placement ${id}: its process ${pid} is gone`)
      if (pidOf(stateDir, id) !== pid) mismatches.push(`placement ${id}: started again`)
    }
    const restarted = events.filter((e) => e.type === 'host.agent-restarted' && e.subject === host.id)
    if (restarted.length !== restarts) mismatches.push(`${restarted.length} host.agent-restarted events`)
    else if (restarted.at(-1)?.data.kept !== 3) mismatches.push(`kept ${restarted.at(-1)?.data.kept}, not 3`)
    for (const e of events) {
      if (e.type === 'host.state-changed' && e.subject === host.id && ['down', 'quarantined'].includes(e.data.to))
        mismatches.push(`the host went ${e.data.to}: ${e.data.reason}`)
      if (e.type === 'placement.lost' || e.type === 'placement.stopped')
        mismatches.push(`${e.type} ${e.subject}: ${e.data.reason}`)
    }
    const created = events.filter((e) => e.type === 'placement.created').length
    if (created !== 3) mismatches.push(`${created} placements created, not 3`)
    for (const l of logLines(agent.output()))
      if (/fenced/.test(l.msg)) mismatches.push(`the returning agent fenced something: ${l.msg}`)
    t.same(mismatches, [], `after ${signal} and a new start: the same processes run, nothing moved`)
  }
  let last = ''
  await eventually(
    async () => {
      const { body } = await c.call('GET', `/v1/hosts/${host.id}`)
      last = `${body.state} (${body.stateReason})`
      return body.state === 'ready' ? true : undefined
    },
    30_000,
    'the host to be ready'
  ).catch((err: Error) => {
    throw new Error(`${err.message}; it is ${last}`)
  })
})

t.test('a revoked host stops its work and its agent exits 78, at once again when restarted', async (t) => {
  const c = await startTestCoordinator(t)
  const { stateDir, env, host, agent } = await enrolledAgent(t, c, 'revoked')
  const [pid] = [...(await runningReplicas(t, c, stateDir, 1)).values()]
  t.equal((await c.call('DELETE', `/v1/hosts/${host.id}`)).status, 204)
  const ended = await agent.exited
  const second = runAgent(t, env)
  const again = await second.exited
  t.same(
    {
      exitCode: ended.exitCode,
      placementAlive: isAlive(pid as number),
      saysWhy: saysRevoked(agent.output()),
      restartedExitCode: again.exitCode,
      restartedSaysWhy: saysRevoked(second.output())
    },
    { exitCode: 78, placementAlive: false, saysWhy: true, restartedExitCode: 78, restartedSaysWhy: true },
    'the placement is stopped, the agent exits 78 saying why, and again at once on a restart'
  )
})

t.test('an agent revoked while it was stopped is told so when it dials in, and exits 78', async (t) => {
  const c = await startTestCoordinator(t)
  const { env, host, agent: first } = await enrolledAgent(t, c, 'away')
  first.kill('SIGTERM')
  t.equal((await first.exited).exitCode, 0)
  t.equal((await c.call('DELETE', `/v1/hosts/${host.id}`)).status, 204)
  const back = runAgent(t, env)
  const ended = await back.exited
  t.equal(ended.exitCode, 78, 'the coordinator answered its dial with ERR_REVOKED')
  t.ok(saysRevoked(back.output()), 'and it says why')
})
