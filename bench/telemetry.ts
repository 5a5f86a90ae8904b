// Agent-side cost of GPU telemetry for an 8-GPU host (the nvidia-smi double
// answering from a values file), CPU as % of one core and RSS:
//   agent_idle_cpu_pct_telemetry_5s/_1s  the whole idle agent (`gpumesh-agent run`,
//       joined to a coordinator played here: heartbeats each second, acked as
//       the coordinator does), sampling every 5 s / 1 s
//   agent_idle_cpu_pct_no_gpus         the same agent without nvidia-smi (nothing
//       sampled): the baseline the telemetry adds to
//   telemetry_source_cpu_pct_5s/_1s      a process running only the telemetry source
//       and health (bench/lib/telemetry-source.ts: GpuMonitor, delta() each second)
// With the double, nvidia-smi's own cost is a shell and awk, not the real
// tool's; it is given apart (smi_double_*). On a GPU machine set
// GPUMESH_NVIDIA_SMI=$(which nvidia-smi) to measure the real one (source only).
// Usage: npm run bench -- telemetry [window=60]
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
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
import { idleGpu, writeGpuValues } from '../test/helpers/gpu-values.js'
import { agentEnv } from '../test/helpers/mesh.js'
import { CLK_TCK, cpuTicks, measure } from './lib/proc-usage.js'
import { round1 } from './stats.js'

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

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const window = Number(args[0] ?? 60)
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
    cpu: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version
  }
}
