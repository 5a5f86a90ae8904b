// Agent-side cost of GPU telemetry: CPU (% of one core) and RSS of a process
// running only the telemetry source and health (bench/lib/telemetry-source.ts:
// GpuMonitor with its one long-lived nvidia-smi loop, row remapping once a
// minute, the kernel-message follower on a regular file, delta() every
// second) for an 8-GPU host, at 5 s and 1 s sampling periods. Not the whole
// agent: the mesh and the control session are not in it (bench/mesh gives
// the idle agent's figure). With the test double, nvidia-smi's own cost is a
// shell and awk, not the real tool's; it is given apart (smi_double_*).
// On a GPU machine set GPUMESH_NVIDIA_SMI=$(which nvidia-smi) to measure the real one.
// Usage: npm run bench -- telemetry [window=60]
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sleep } from '../common/daemon/sleep.js'
import { idleGpu, writeGpuValues } from '../test/helpers/gpu-values.js'
import { CLK_TCK, cpuTicks, measure } from './lib/proc-usage.js'
import { round1 } from './stats.js'

const SOURCE = fileURLToPath(new URL('./lib/telemetry-source.js', import.meta.url))

async function one(periodMs: number, window: number): Promise<{ cpuPct: number; rssMb: number; smiCpuPct: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-telemetry-'))
  writeGpuValues(
    dir,
    Array.from({ length: 8 }, (_, i) => ({ ...idleGpu(i), 'utilization.gpu': 37, 'memory.used': 20480 }))
  )
  writeFileSync(join(dir, 'kmsg'), '')
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
    child.kill('SIGTERM')
    await new Promise((resolve) => child.once('exit', resolve))
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const window = Number(args[0] ?? 60)
  const at5 = await one(5000, window)
  const at1 = await one(1000, window)
  return {
    bench: 'telemetry',
    measured: 'a process running only GpuMonitor (telemetry source + health), 8 GPUs, nvidia-smi double',
    window_s: window,
    agent_idle_cpu_pct_telemetry_5s: at5.cpuPct,
    agent_idle_cpu_pct_telemetry_1s: at1.cpuPct,
    agent_idle_rss_mb_telemetry_5s: at5.rssMb,
    agent_idle_rss_mb_telemetry_1s: at1.rssMb,
    smi_double_cpu_pct_5s: at5.smiCpuPct,
    smi_double_cpu_pct_1s: at1.smiCpuPct,
    cpu: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version
  }
}
