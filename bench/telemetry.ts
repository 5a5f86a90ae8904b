// Agent-side cost of GPU telemetry for an 8-GPU host (the nvidia-smi double
// answering from a values file), CPU as % of one core and RSS:
//   agent_idle_cpu_pct_telemetry_5s/_1s  the whole idle agent (`gpumesh-agent run`,
//       joined to a coordinator played here: heartbeats each second, acked as
//       the coordinator does), sampling every 5 s / 1 s
//   agent_idle_cpu_pct_no_gpus         the same agent without nvidia-smi (nothing
//       sampled): the baseline the telemetry adds to
//   telemetry_source_cpu_pct_5s/_1s      a process running only the telemetry source
//       and health (bench/lib/telemetry-source.ts: GpuMonitor, delta() each second)
//   gpu_fail_to_unschedulable_ms (p50, max)  an Xid 79 line written to the kernel
//       log an agent process follows -> the GPU is failed in PostgreSQL, where the
//       scheduler's snapshot leaves it out and persistDecisions refuses it (a real
//       coordinator in this process on embedded PostgreSQL; one sample per GPU)
// With the double, nvidia-smi's own cost is a shell and awk, not the real
// tool's; it is given apart (smi_double_*). On a GPU machine set
// GPUMESH_NVIDIA_SMI=$(which nvidia-smi) to measure the real one (source only).
// Usage: npm run bench -- telemetry [window=60] [fail-only]
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { sleep } from '../common/daemon/sleep.js'
import { createClusterKey } from '../common/mesh/cluster-key.js'
import { FrameChannel } from '../common/mesh/frames.js'
import { createMeshNode } from '../common/mesh/node.js'
import { ACK_AFTER_MS, AgentFrame, CONTROL_PROTOCOL, CoordinatorFrame } from '../protocol/control.js'
import { AGENT_RUN } from '../test/helpers/fixtures.js'
import { createLogger } from '../common/log.js'
import { startCoordinator } from '../coordinator/server.js'
import { startEmbeddedPostgres } from '../coordinator/store/embedded.js'
import { idleGpu, writeGpuValues } from '../test/helpers/gpu-values.js'
import { agentEnv } from '../test/helpers/mesh.js'
import { CLK_TCK, cpuTicks, measure } from './lib/proc-usage.js'
import { percentile, round1 } from './stats.js'

const SOURCE = fileURLToPath(new URL('./lib/telemetry-source.js', import.meta.url))

function eightGpus(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-telemetry-'))
  writeGpuValues(
    dir,
    Array.from({ length: 8 }, (_, i) => ({ ...idleGpu(i), 'utilization.gpu': 37, 'memory.used': 20480 }))
  )
  writeFileSync(join(dir, 'kmsg'), '')
  return dir
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  await new Promise((resolve) => child.once('exit', resolve))
}

/** The whole agent, idle, joined to a coordinator played here; `periodMs` null: no nvidia-smi at all. */
async function wholeAgent(periodMs: number | null, window: number): Promise<{ cpuPct: number; rssMb: number }> {
  const dir = eightGpus()
  const clusterKeyFile = join(dir, 'cluster.key')
  const node = await createMeshNode({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    clusterKey: await createClusterKey(clusterKeyFile),
    role: 'coordinator'
  })
  let heartbeats = 0
  await node.handle(CONTROL_PROTOCOL, (stream) => {
    const channel = new FrameChannel(stream, AgentFrame, CoordinatorFrame)
    void (async () => {
      const hello = await channel.receive()
      if (hello?.type !== 'hello') return
      const hostId = '00000000-0000-4000-8000-0000000000d1'
      await channel.send({ v: 1, type: 'welcome', hostId, epoch: 1, heartbeatMs: 1000, placements: [] })
      // Acks as the coordinator sends them: one per ACK_AFTER_MS at most (coordinator/mesh/session.ts).
      let acked = 0
      for (let f = await channel.receive(); f !== null; f = await channel.receive())
        if (f.type === 'heartbeat') {
          if (f.gpus.length === 8 || periodMs === null) heartbeats++
          if (Date.now() - acked < ACK_AFTER_MS) continue
          acked = Date.now()
          await channel.send({ v: 1, type: 'heartbeat-ack', seq: f.seq })
        }
    })().catch(() => {})
  })
  const target = { coordinators: node.getMultiaddrs().map(String), clusterKeyFile, joinToken: 'gmj_bench-any' }
  const child = spawn(process.execPath, AGENT_RUN, {
    stdio: 'ignore',
    env: agentEnv(target, join(dir, 'state'), 'none', {
      GPUMESH_SMI_FIXTURE: dir,
      GPUMESH_KMSG: join(dir, 'kmsg'),
      GPUMESH_NODE_NAME: 'bench-telemetry',
      ...(periodMs === null
        ? { GPUMESH_NVIDIA_SMI: join(dir, 'no-nvidia-smi') }
        : { GPUMESH_TELEMETRY_INTERVAL_MS: String(periodMs) })
    })
  })
  try {
    for (let waited = 0; heartbeats < 3; waited += 250) {
      if (waited > 120_000 || child.exitCode !== null) throw new Error('the agent sent no heartbeats with its GPUs')
      await sleep(250)
    }
    await sleep(10_000) // past start-up: module loading, identify, the first row-remap call
    const usage = await measure(child.pid as number, window)
    process.stderr.write(
      `whole agent, ${periodMs === null ? 'no nvidia-smi' : `period ${periodMs} ms`}, over ${window} s: ${usage.cpuPct} % CPU, RSS max ${usage.rssMbMax} MB\n`
    )
    return { cpuPct: usage.cpuPct, rssMb: usage.rssMbMax }
  } finally {
    await stopChild(child)
    await node.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

async function sourceOnly(
  periodMs: number,
  window: number
): Promise<{ cpuPct: number; rssMb: number; smiCpuPct: number }> {
  const dir = eightGpus()
  const child = spawn(process.execPath, [SOURCE], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      GPUMESH_SMI_FIXTURE: dir,
      GPUMESH_KMSG: join(dir, 'kmsg'),
      GPUMESH_STATE_DIR: dir,
      BENCH_PERIOD_MS: String(periodMs)
    }
  })
  try {
    const smiPid = await new Promise<number>((resolve, reject) => {
      child.stdout.setEncoding('utf8')
      child.stdout.on('data', (d: string) => {
        const m = /sampling (\d+)/.exec(d)
        if (m !== null) resolve(Number(m[1]))
      })
      child.once('exit', (code) => reject(new Error(`the telemetry source exited ${code}`)))
    })
    await sleep(5000) // past start-up (module loading, the first row-remap call)
    const smi0 = cpuTicks(smiPid)
    const usage = await measure(child.pid as number, window)
    const smi1 = cpuTicks(smiPid)
    const smiCpuPct = ((smi1.self + smi1.children - smi0.self - smi0.children) / CLK_TCK / window) * 100
    process.stderr.write(
      `period ${periodMs} ms over ${window} s: ${usage.cpuPct} % CPU, RSS max ${usage.rssMbMax} MB; the double ${round1(smiCpuPct)} % CPU\n`
    )
    return { cpuPct: usage.cpuPct, rssMb: usage.rssMbMax, smiCpuPct: round1(smiCpuPct) }
  } finally {
    await stopChild(child)
    rmSync(dir, { recursive: true, force: true })
  }
}

const ADMIN = 'gmt_bench-telemetry-admin-0123456789abcdef'

/** Kernel line -> GPU failed in PostgreSQL, once per GPU of an 8-GPU agent process (default telemetry period). */
async function failToUnschedulable(): Promise<number[]> {
  const dir = eightGpus()
  const log = createLogger('bench-telemetry', { level: 'silent' })
  const cleanup: Array<() => Promise<void>> = []
  try {
    mkdirSync(join(dir, 'pg'))
    const db = await startEmbeddedPostgres(join(dir, 'pg'), log)
    cleanup.unshift(db.stop)
    const c = await startCoordinator(
      {
        stateDir: join(dir, 'coordinator'),
        apiListen: '127.0.0.1:0',
        gatewayListen: '127.0.0.1:0',
        databaseUrl: db.url,
        adminToken: ADMIN,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        staleHostSeconds: 0
      },
      log
    )
    cleanup.unshift(c.stop)
    const api = async (method: string, path: string) =>
      (await (await fetch(c.api + path, { method, headers: { authorization: `Bearer ${ADMIN}` } })).json()) as any
    const joinToken = (await api('POST', '/v1/join-tokens')).token as string
    const target = {
      coordinators: c.mesh.multiaddrs(),
      clusterKeyFile: join(dir, 'coordinator', 'cluster.key'),
      joinToken
    }
    const kmsg = join(dir, 'kmsg')
    const child = spawn(process.execPath, AGENT_RUN, {
      stdio: 'ignore',
      env: agentEnv(target, join(dir, 'state'), 'none', {
        GPUMESH_SMI_FIXTURE: dir,
        GPUMESH_KMSG: kmsg,
        GPUMESH_NODE_NAME: 'bench-fail'
      })
    })
    cleanup.unshift(async () => await stopChild(child))
    const stored = async () =>
      (
        await c.pool.query<{ gpu_index: number; state: string }>(
          'select gpu_index, state from gpu_health order by gpu_index'
        )
      ).rows
    for (let waited = 0; (await stored()).length < 8; waited += 100) {
      if (waited > 120_000 || child.exitCode !== null) throw new Error('the agent did not report its GPUs')
      await sleep(100)
    }
    const samples: number[] = []
    for (let gpu = 0; gpu < 8; gpu++) {
      await sleep(1500) // apart from the last sample's heartbeat and the kernel log's poll
      const bus = String(idleGpu(gpu)['pci.bus_id']).slice(4, 14)
      const started = performance.now()
      writeFileSync(
        kmsg,
        `3,${100 + gpu},${gpu * 1000},-;NVRM: Xid (PCI:${bus}): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n`,
        { flag: 'a' }
      )
      for (;;) {
        const { rows } = await c.pool.query<{ state: string }>('select state from gpu_health where gpu_index = $1', [
          gpu
        ])
        if (rows[0]?.state === 'failed') break
        if (performance.now() - started > 30_000) throw new Error(`GPU ${gpu} was not failed within 30 s`)
        await sleep(5)
      }
      samples.push(round1(performance.now() - started))
    }
    process.stderr.write(`kernel line -> GPU failed in PostgreSQL: ${samples.join(', ')} ms\n`)
    return samples
  } finally {
    for (const f of cleanup) await f().catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const window = Number(args[0] ?? 60)
  const fail = await failToUnschedulable()
  const failFigures = {
    gpu_fail_to_unschedulable_ms_p50: percentile(fail, 0.5),
    gpu_fail_to_unschedulable_ms_max: Math.max(...fail),
    gpu_fail_samples: fail.length
  }
  if (args[1] === 'fail-only') return { bench: 'telemetry', ...failFigures }
  const agent5 = await wholeAgent(5000, window)
  const agent1 = await wholeAgent(1000, window)
  const agentNone = await wholeAgent(null, window)
  const at5 = await sourceOnly(5000, window)
  const at1 = await sourceOnly(1000, window)
  return {
    bench: 'telemetry',
    gpus: 8,
    window_s: window,
    agent_idle_cpu_pct_telemetry_5s: agent5.cpuPct,
    agent_idle_cpu_pct_telemetry_1s: agent1.cpuPct,
    agent_idle_cpu_pct_no_gpus: agentNone.cpuPct,
    agent_idle_rss_mb_telemetry_5s: agent5.rssMb,
    agent_idle_rss_mb_telemetry_1s: agent1.rssMb,
    agent_idle_rss_mb_no_gpus: agentNone.rssMb,
    telemetry_source_cpu_pct_5s: at5.cpuPct,
    telemetry_source_cpu_pct_1s: at1.cpuPct,
    telemetry_source_rss_mb_5s: at5.rssMb,
    smi_double_cpu_pct_5s: at5.smiCpuPct,
    smi_double_cpu_pct_1s: at1.smiCpuPct,
    ...failFigures,
    cpu: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version
  }
}
