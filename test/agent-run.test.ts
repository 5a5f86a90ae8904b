// The agent daemon as an operator runs it: a real process that detects its
// host (nvidia-smi double), enrolls with a join token, logs JSON lines, and
// stops cleanly on SIGTERM; bad configuration exits 78 with a clear message.
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { cleanEnv } from './helpers/agent.js'
import { eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { AGENT, MACHINES } from './helpers/fixtures.js'
import { agentProcessEnv } from './helpers/mesh.js'

/** The host called `name` once the coordinator lists it (in `state`, unless null). */
async function hostNamed(
  c: TestCoordinator,
  name: string,
  state: string | null,
  ms: number,
  what: string
): Promise<any> {
  return await eventually(
    async () =>
      (await c.call('GET', '/v1/hosts')).body.items.find(
        (h: { name: string; state: string }) => h.name === name && (state === null || h.state === state)
      ),
    ms,
    what
  )
}

t.test('run: detects, enrolls, logs, stops on SIGTERM', async (t) => {
  const c = await startTestCoordinator(t)
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-agent-proc-'))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const child = execa(process.execPath, [AGENT], {
    env: await agentProcessEnv(c, stateDir, 'h100-8x-nv18-nics', { GPUMESH_NODE_NAME: 'proc-node' }),
    extendEnv: false,
    reject: false,
    timeout: 180_000
  })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  const host = await hostNamed(c, 'proc-node', null, 30_000, 'the agent process to enroll')
  t.equal(host.pool, 'h100-80gb-8x-nvlink', 'its detected facts decide its pool')
  t.equal(host.facts.gpus.length, 8)
  child.kill('SIGTERM')
  const r = await child
  t.equal(r.exitCode, 0, 'exits 0 on SIGTERM')
  const lines = output
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  t.ok(
    lines.every((l) => typeof l.level === 'number' && typeof l.time === 'number'),
    'every line is a pino record'
  )
  t.ok(
    lines.some((l) => l.msg === 'joined the coordinator'),
    'says it joined'
  )
  t.ok(
    lines.some((l) => l.msg === 'stopping (placements keep running)'),
    'says why it stops'
  )
  t.notOk(output.includes('gmj_'), 'the join token is not logged')
})

t.test('run: GPUs that change while it runs quarantine the host (detection in a subprocess, again)', async (t) => {
  const c = await startTestCoordinator(t)
  const scratch = mkdtempSync(join(tmpdir(), 'gpumesh-agent-redetect-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  const machine = join(scratch, 'machine')
  cpSync(join(MACHINES, 'h100-8x-nv18'), machine, { recursive: true })
  const child = execa(process.execPath, [AGENT], {
    env: await agentProcessEnv(c, join(scratch, 'state'), 'h100-8x-nv18', {
      GPUMESH_NODE_NAME: 'changing',
      GPUMESH_SMI_FIXTURE: machine,
      GPUMESH_DETECT_INTERVAL: '1'
    }),
    extendEnv: false,
    reject: false,
    timeout: 180_000
  })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  const host = await hostNamed(c, 'changing', 'ready', 30_000, 'the agent to enroll')
  t.equal(host.facts.gpus.length, 8, 'enrolled with the 8 GPUs its first detection found')
  // Half the GPUs are gone (a GPU fell off the bus, a driver update went wrong).
  rmSync(machine, { recursive: true })
  cpSync(join(MACHINES, 'h100-4x-nv18'), machine, { recursive: true })
  const changed = await hostNamed(c, 'changing', 'quarantined', 20_000, 'the host to be quarantined')
  t.equal(changed.pool, host.pool, 'it stays in its pool, out of scheduling, instead of shrinking it')
  const events = (await c.pool.query<{ type: string }>("select type from events where type = 'host.quarantined'")).rows
  t.equal(events.length, 1, 'an event says so')
})

t.test('run without a coordinator or cluster key is a configuration error', async (t) => {
  const r = await execa(process.execPath, [AGENT, 'run'], {
    env: cleanEnv({ GPUMESH_STATE_DIR: tmpdir() }),
    extendEnv: false,
    reject: false
  })
  t.equal(r.exitCode, 78)
  t.match(r.stdout, /GPUMESH_COORDINATOR.*GPUMESH_CLUSTER_KEY_FILE/)
  const badKey = await execa(
    process.execPath,
    [
      AGENT,
      'run',
      '--coordinator',
      '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
      '--cluster-key-file',
      AGENT
    ],
    {
      env: cleanEnv({
        GPUMESH_STATE_DIR: mkdtempSync(join(tmpdir(), 'gpumesh-badkey-')),
        GPUMESH_NVIDIA_SMI: '/nonexistent'
      }),
      extendEnv: false,
      reject: false
    }
  )
  t.equal(badKey.exitCode, 78, 'a file that is not a cluster key')
  t.match(badKey.stdout, /is not a cluster key/)
})

t.test('--version and --help', async (t) => {
  const version = await execa(process.execPath, [AGENT, '--version'])
  t.match(version.stdout, /^\d+\.\d+\.\d+/)
  const without: string[] = []
  for (const args of [['--help'], ['detect', '--help'], ['run', '--help']]) {
    const help = await execa(process.execPath, [AGENT, ...args])
    if (!/Usage: gpumesh-agent/.test(help.stdout)) without.push(args.join(' '))
  }
  t.same(without, [], 'each --help prints usage')
})
