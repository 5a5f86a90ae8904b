// GPU health end to end through real processes: a `gpumesh-agent run`
// process samples the nvidia-smi double (share/nvidia-smi-replay, from a
// values file the test rewrites) and follows a regular file as its kernel
// log; the coordinator stores what it reports, schedules around failed GPUs
// and moves the work on them; the CLI (a process too) shows it and clears it.
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { gpumesh } from './helpers/cli.js'
import { eventually, startTestCoordinator, type TestCoordinator, workloadWhen } from './helpers/coordinator.js'
import { AGENT, ROOT } from './helpers/fixtures.js'
import { FIXTURE_BUSES, idleGpu, valuesMachine, writeGpuValues } from './helpers/gpu-values.js'
import { agentProcessEnv } from './helpers/mesh.js'

const XID = readFileSync(join(ROOT, 'test/fixtures/kmsg/xid-messages.txt'), 'utf8').trim().split('\n')
/** Public lines (test/fixtures/kmsg/README.md), moved to GPU `gpu`'s bus. */
const onGpu = (line: string, gpu: number) =>
  line.replace(/\(PCI:[0-9a-f:]+\)/, `(PCI:${(FIXTURE_BUSES[gpu] as string).slice(4, 14)})`)
const XID_79 = XID[0] as string
const XID_13 = XID[2] as string
const SLEEPER = { driver: 'process', command: ['sh', '-c', 'echo $$; exec sleep 600'] }

interface HealthEvent {
  gpu: number
  from: string
  to: string
  reasons: string[]
}

async function healthEvents(c: TestCoordinator, host: string): Promise<HealthEvent[]> {
  const { rows } = await c.pool.query<{ data: HealthEvent }>(
    "select data from events where type = 'gpu.health-changed' and subject_id = $1 order by id",
    [host]
  )
  return rows.map((r) => ({ gpu: r.data.gpu, from: r.data.from, to: r.data.to, reasons: r.data.reasons }))
}

const activeOf = (w: any): Array<{ id: string; gpus: number[]; state: string }> =>
  w.placements.filter((p: any) => ['assigned', 'starting', 'running'].includes(p.state))

t.test(
  'a GPU that fails in the kernel log: failed on the coordinator, its work moved, cleared by an admin',
  async (t) => {
    const c = await startTestCoordinator(t)
    const gpus = [0, 1, 2, 3].map((i) => idleGpu(i))
    const dir = valuesMachine(gpus)
    const kmsg = join(dir, 'kmsg')
    writeFileSync(kmsg, '')
    let seq = 100
    const kernel = (message: string) => appendFileSync(kmsg, `3,${++seq},${seq * 1000},-;${message}\n`)
    const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-health-mesh-'))
    const env = await agentProcessEnv(c, stateDir, 'none', {
      GPUMESH_SMI_FIXTURE: dir,
      GPUMESH_KMSG: kmsg,
      GPUMESH_TELEMETRY_INTERVAL_MS: '300',
      GPUMESH_NODE_NAME: 'gpu-host'
    })
    const agent = execa(process.execPath, [AGENT], { env, extendEnv: false, reject: false, timeout: 180_000 })
    t.teardown(async () => {
      agent.kill('SIGKILL')
      await agent
      // Workloads outlive their agent by design: the test's own (they print their pid first) end here.
      for (const id of readdirSync(join(stateDir, 'placements'), { withFileTypes: true }).filter((d) =>
        d.isDirectory()
      )) {
        const pid = Number(readFileSync(join(stateDir, 'placements', id.name, 'stdout.log'), 'utf8').split('\n')[0])
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {}
        }
      }
      rmSync(dir, { recursive: true, force: true })
      rmSync(stateDir, { recursive: true, force: true })
    })

    const host = await eventually(
      async () => {
        const h = (await c.call('GET', '/v1/hosts')).body.items.find((x: any) => x.name === 'gpu-host')
        return h?.gpus.length === 4 && h.gpus.every((g: any) => g.health?.state === 'healthy') ? h : undefined
      },
      90_000,
      'the agent to join and report four healthy GPUs'
    )
    const get = async () => (await c.call('GET', `/v1/hosts/${host.id}`)).body
    const endpoint = async (name: string, gpus: number): Promise<string> =>
      (
        await c.call('POST', '/v1/workloads', {
          name,
          kind: 'endpoint',
          replicas: 1,
          gpus,
          pools: [host.pool],
          run: SLEEPER
        })
      ).body.id as string
    t.match((await get()).gpus[2], { index: 2, health: { state: 'healthy', reasons: [] }, usage: { temperatureC: 41 } })

    // A replica on one GPU.
    const chat = await endpoint('chat', 1)
    const running = await workloadWhen(
      c,
      chat,
      (w) => activeOf(w)[0]?.state === 'running',
      30_000,
      'the replica running'
    )
    const first = activeOf(running)[0] as { id: string; gpus: number[] }
    const bad = first.gpus[0] as number

    // An application XID first (no health change), then the GPU falls off the bus.
    kernel(onGpu(XID_13, bad))
    kernel(onGpu(XID_79, bad))
    const failed = await eventually(
      async () => {
        const g = (await get()).gpus[bad]
        return g.health.state === 'failed' ? g : undefined
      },
      30_000,
      'the GPU failed on the coordinator'
    )
    t.same(failed.health.reasons, ['xid-79'], 'failed by the Xid 79 alone: the Xid 13 changed nothing')
    t.same(
      await healthEvents(c, host.id),
      [{ gpu: bad, from: 'healthy', to: 'failed', reasons: ['xid-79'] }],
      'one gpu.health-changed event: the Xid 13 raised none'
    )
    const moved = await workloadWhen(
      c,
      chat,
      (w) => activeOf(w)[0]?.state === 'running' && activeOf(w)[0]?.id !== first.id,
      30_000,
      'the replica running again'
    )
    const second = activeOf(moved)[0] as { gpus: number[] }
    t.not(second.gpus[0], bad, 'the replica runs again on another GPU')
    t.match(
      moved.placements.find((p: any) => p.id === first.id),
      { state: 'lost', reason: `GPU ${bad} failed (xid-79)` },
      'the old one was lost, the GPU its reason'
    )

    // A 2-GPU endpoint placed afterwards never gets it.
    const wide = await endpoint('wide', 2)
    const widePlaced = await workloadWhen(c, wide, (w) => w.state === 'placed', 30_000, 'the 2-GPU endpoint placed')
    t.notOk(activeOf(widePlaced)[0]?.gpus.includes(bad), 'the 2-GPU endpoint does not get the failed GPU')

    // The CLI shows it.
    const list = await gpumesh(c.api, ['hosts'])
    t.match(list.stdout, new RegExp(`gpu-host .*failed ${bad}`), '`gpumesh hosts` marks the host')
    const detail = await gpumesh(c.api, ['hosts', 'get', 'gpu-host'])
    t.match(detail.stdout, /GPU\s+MODEL\s+HEALTH\s+REASONS\s+UTIL\s+MEM USED\s+TEMP\s+POWER/, 'a GPU table')
    t.match(
      detail.stdout,
      new RegExp(`\\n\\s+${bad}\\s+NVIDIA H100 80GB HBM3\\s+failed\\s+xid-79\\s+`),
      'the failed GPU in it'
    )

    // An admin clears it after repair, through the CLI.
    const cleared = await gpumesh(c.api, ['hosts', 'clear-health', 'gpu-host', String(bad)])
    t.same(
      { exitCode: cleared.exitCode, stdout: cleared.stdout },
      { exitCode: 0, stdout: `GPU ${bad} of host gpu-host cleared: now healthy\n` },
      'clear-health through the CLI'
    )
    await eventually(
      async () => (await get()).gpus[bad].health.state === 'healthy',
      30_000,
      'healthy on the coordinator'
    )
    const refused = await gpumesh(c.api, ['hosts', 'clear-health', 'gpu-host', String(bad)])
    t.match(
      { exitCode: refused.exitCode, stderr: refused.stderr },
      { exitCode: 1, stderr: /healthy/ },
      'a healthy GPU: nothing to clear'
    )

    // A condition that clears by itself: uncorrected ECC errors on another GPU, then a reset.
    await c.call('DELETE', `/v1/workloads/${chat}`)
    await c.call('DELETE', `/v1/workloads/${wide}`)
    const other = (bad + 1) % 4
    gpus[other] = { ...gpus[other], 'ecc.errors.uncorrected.volatile.total': 2 }
    writeGpuValues(dir, gpus)
    await eventually(
      async () => (await get()).gpus[other].health.state === 'failed',
      30_000,
      'failed by uncorrected ECC errors'
    )
    gpus[other] = { ...gpus[other], 'ecc.errors.uncorrected.volatile.total': 0 }
    writeGpuValues(dir, gpus)
    await eventually(async () => (await get()).gpus[other].health.state === 'healthy', 30_000, 'healthy again')
    t.same(
      (await healthEvents(c, host.id)).slice(1),
      [
        { gpu: bad, from: 'failed', to: 'healthy', reasons: [] },
        { gpu: other, from: 'healthy', to: 'failed', reasons: ['ecc-uncorrected'] },
        { gpu: other, from: 'failed', to: 'healthy', reasons: [] }
      ],
      'each change an event'
    )
  }
)
