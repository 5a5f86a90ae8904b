// A process running only the agent's GPU telemetry and health (GpuMonitor:
// the nvidia-smi loop, row remapping, the kernel-message follower) and, once
// a second, the heartbeat's delta(): what bench/telemetry.ts measures.
// Environment: GPUMESH_NVIDIA_SMI (default: the double), GPUMESH_SMI_FIXTURE,
// GPUMESH_KMSG, GPUMESH_STATE_DIR, BENCH_PERIOD_MS. Prints `sampling <pid of
// nvidia-smi>` once the first block is in; ends on SIGTERM.
import { GpuMonitor } from '../../agent/health/gpu-monitor.js'
import { NVIDIA_SMI_DOUBLE } from '../../test/helpers/fixtures.js'

let blocks = 0
const monitor = new GpuMonitor({
  binary: process.env.GPUMESH_NVIDIA_SMI ?? NVIDIA_SMI_DOUBLE,
  stateDir: process.env.GPUMESH_STATE_DIR ?? '.',
  ...(process.env.GPUMESH_KMSG === undefined ? {} : { kmsgPath: process.env.GPUMESH_KMSG }),
  periodMs: Number(process.env.BENCH_PERIOD_MS ?? 5000)
})
await monitor.start()
const heartbeat = setInterval(() => {
  if (monitor.delta() !== null) blocks++
  if (blocks === 1 && monitor.samplerPid !== null) {
    blocks++
    process.stdout.write(`sampling ${monitor.samplerPid}\n`)
  }
}, 1000)
process.once('SIGTERM', () => {
  clearInterval(heartbeat)
  void monitor.stop().then(() => process.exit(0))
})
