// A chatty placement on a small disk: its logs rotate while it runs, so it
// cannot fill the agent's state directory; and a disk full all the same is a
// host condition, not a reconnect loop. On a real tmpfs (needs root, as CI
// is), unmounted at the end.
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createRuntime } from '../agent/runtime/runtime.js'
import type { RunningPlacement } from '../protocol/control.js'
import { eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { joinToken, startTestAgent } from './helpers/mesh.js'

/** A tmpfs of `size` mounted on a new folder, unmounted (and removed) in teardown. */
function smallDisk(t: Test, size: string): string {
  if (process.getuid?.() !== 0) throw new Error('this test mounts a tmpfs: run it as root (CI does)')
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-full-disk-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  t.teardown(() => {
    execFileSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

const MiB = 1024 * 1024

t.test('placement logs rotate while the process writes: 50 MB of output on a 20 MB disk', async (t) => {
  const disk = smallDisk(t, '20m')
  const cap = MiB
  const rt = createRuntime({ stateDir: join(disk, 'agent'), logMaxBytes: cap, stopGraceMs: 1000 })
  t.teardown(async () => await rt.close())
  const ended = new Map<string, RunningPlacement>()
  const waiters: Array<() => void> = []
  rt.on('status', (s: RunningPlacement) => {
    if (['exited', 'failed', 'lost', 'stopped'].includes(s.state)) ended.set(s.placementId, s)
    for (const w of waiters) w()
  })
  const until = async (id: string) =>
    await new Promise<RunningPlacement>((resolve) => {
      const check = () => {
        const s = ended.get(id)
        if (s !== undefined) resolve(s)
      }
      waiters.push(check)
      check()
    })
  const total = 50_000_000
  const id = randomUUID()
  await rt.start({
    placementId: id,
    workloadId: randomUUID(),
    workloadName: 'chatty',
    replica: 0,
    gpus: [],
    // As fast as it can, on both streams; head fails (exit 1) on a write error.
    run: {
      driver: 'process',
      command: ['sh', '-c', `head -c ${total} /dev/zero & p=$!; head -c ${total} /dev/zero >&2 || exit 1; wait $p`]
    },
    env: {}
  })
  const end = await until(id)
  t.match(end, { state: 'exited', exitCode: 0 }, 'every write succeeded: the disk never filled')
  const dir = join(disk, 'agent', 'placements', id)
  const size = (f: string) => (existsSync(join(dir, f)) ? statSync(join(dir, f)).size : 0)
  // The two streams share the cap: each rotates at half of it, so all four files stay within twice the cap.
  const half = cap / 2
  const last = total % half === 0 ? half : total % half
  t.same(
    {
      'stdout.log': size('stdout.log'),
      'stdout.log.1': size('stdout.log.1'),
      'stderr.log': size('stderr.log'),
      'stderr.log.1': size('stderr.log.1')
    },
    { 'stdout.log': last, 'stdout.log.1': half, 'stderr.log': last, 'stderr.log.1': half },
    'each stream: the current file and one full previous one at half the cap, nothing lost in between'
  )
})

const groupAlive = (pgid: number) => {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

async function host(c: TestCoordinator): Promise<{ id: string; conditions: Array<{ type: string; detail: string }> }> {
  return (await c.call('GET', '/v1/hosts')).body.items[0]
}

t.test(
  'a full disk when the agent saves its state: disk-full on the host, the session stays, DELETE still stops',
  async (t) => {
    const disk = smallDisk(t, '20m')
    const stateDir = join(disk, 'agent')
    const c = await startTestCoordinator(t)
    const options = { stateDir, logMaxBytes: 64 * 1024 }
    const a = await startTestAgent(t, c, 'l40s-1x', 'node-a', { ...options, joinToken: await joinToken(c) })
    await eventually(async () => ((await host(c)) === undefined ? undefined : true), 10_000, 'node-a enrolled')
    const w = await c.call('POST', '/v1/workloads', {
      name: 'serve',
      kind: 'endpoint',
      replicas: 1,
      gpus: 1,
      pools: ['l40s-48gb-1x'],
      run: { driver: 'process', command: ['sleep', '600'] }
    })
    t.equal(w.status, 201)
    const placement = await eventually(
      async () => {
        const { rows } = await c.pool.query<{ id: string }>(
          "select id from placements where workload_id = $1 and state = 'running'",
          [w.body.id]
        )
        return rows[0]?.id
      },
      20_000,
      'the placement to run'
    )
    const pgid = (
      JSON.parse(readFileSync(join(stateDir, 'placements', placement, 'placement.json'), 'utf8')) as { pid: number }
    ).pid
    t.ok(groupAlive(pgid), 'its process runs')

    // The agent goes away, the disk fills up, the agent comes back: its welcome's save fails.
    await a.crash()
    execFileSync('sh', ['-c', `head -c 100000000 /dev/zero > ${join(disk, 'filler')}; true`])
    const b = await startTestAgent(t, c, 'l40s-1x', 'node-a', options)
    const full = await eventually(
      async () => ((await host(c)).conditions.some((x) => x.type === 'disk-full') ? await host(c) : undefined),
      20_000,
      'the host to show disk-full'
    )
    t.match(full.conditions, [{ type: 'disk-full', detail: /ENOSPC/ }], 'the host shows why')
    const { rows: events } = await c.pool.query<{ data: { condition: string; active: boolean } }>(
      "select data from events where type = 'host.condition' order by id"
    )
    t.match(
      events.map((e) => e.data),
      [{ condition: 'disk-full', active: true }],
      'an event says so'
    )
    const epochOf = async () =>
      Number((await c.pool.query<{ epoch: string }>('select epoch from hosts where id = $1', [full.id])).rows[0]?.epoch)
    const epoch = await epochOf()
    const session = b.control.connectedAt
    t.ok(session > 0, 'the session is up')

    t.equal((await c.call('DELETE', `/v1/workloads/${w.body.id as string}`)).status, 200)
    await eventually(() => (groupAlive(pgid) ? undefined : true), 20_000, 'the deleted workload to stop')
    t.pass('DELETE stopped the process')
    t.equal(await epochOf(), epoch, 'no re-registration meanwhile')
    t.equal(b.control.connectedAt, session, 'the same session throughout')

    // Space again: the save goes through at the next heartbeat and the condition ends.
    rmSync(join(disk, 'filler'))
    await eventually(
      async () => ((await host(c)).conditions.length === 0 ? true : undefined),
      20_000,
      'disk-full to end'
    )
    const saved = JSON.parse(readFileSync(join(stateDir, 'agent.json'), 'utf8')) as { epoch: number }
    t.equal(saved.epoch, epoch, 'the epoch obeyed is saved')
  }
)
