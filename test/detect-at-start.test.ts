// The agent's detection before it joins (agent/detect/at-start.ts), with the
// real `gpumesh-agent detect` subprocess and the nvidia-smi replay: a driver
// that does not answer is asked again before the host joins GPU-less; a host
// with no driver or no nvidia-smi joins as a CPU host.
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { detectAtStart, driverSilent } from '../agent/detect/at-start.js'
import type { DetectOptions } from '../agent/detect/detect.js'
import { detectInSubprocess } from '../agent/detect/subprocess.js'
import { createLogger } from '../common/log.js'
import type { HostFacts } from '../protocol/host-facts.js'
import { makeMachine } from './helpers/agent.js'
import { MACHINES, NVIDIA_SMI_DOUBLE } from './helpers/fixtures.js'

const log = createLogger('test', { level: 'silent' })
const H100 = join(MACHINES, 'h100-8x-nv18-nics')

/** detectAtStart on `dir` (null: no nvidia-smi), real detections counted; `onPause` runs while the agent waits. */
async function startOn(
  dir: string | null,
  onPause: () => void = () => {}
): Promise<{ facts: HostFacts; tries: number; pauses: number[] }> {
  let tries = 0
  const pauses: number[] = []
  const facts = await detectAtStart(OPTIONS, log, {
    pausesMs: [7, 9],
    detect: async (o) => {
      tries++
      return await detectInSubprocess({
        ...o,
        ...(dir === null ? { nvidiaSmi: '/nonexistent' } : {}),
        env: { ...process.env, GPUMESH_SMI_FIXTURE: dir ?? '' }
      })
    },
    pause: async (ms) => {
      pauses.push(ms)
      onPause()
    }
  })
  return { facts, tries, pauses }
}

// The hung calls are cut at this deadline; the calls that answer get it too on a loaded machine.
const OPTIONS: DetectOptions = { agentVersion: 'test', timeoutMs: 3000, nvidiaSmi: NVIDIA_SMI_DOUBLE }

t.test('a driver that does not answer at first is asked again, and the host joins with its GPUs', async (t) => {
  const dir = makeMachine(t, {
    'L.txt': readFileSync(join(H100, 'L.txt')),
    'topo-m.txt': readFileSync(join(H100, 'topo-m.txt')),
    'L.txt.hang': '',
    'topo-m.txt.hang': ''
  })
  // The driver wakes up while the agent waits.
  const { facts, tries, pauses } = await startOn(dir, () => {
    rmSync(join(dir, 'L.txt.hang'))
    rmSync(join(dir, 'topo-m.txt.hang'))
  })
  t.same(
    { gpus: facts.gpus.length, pool: facts.pool.key, tries, pauses },
    { gpus: 8, pool: 'h100-80gb-8x-nvlink', tries: 2, pauses: [7] },
    'one more try after the first found the driver silent'
  )
})

t.test('hosts that have no GPUs to find join at once or after the bounded tries', async (t) => {
  const cases: Array<{ name: string; dir: string | null; tries: number; pauses: number[] }> = [
    { name: 'no nvidia-smi', dir: null, tries: 1, pauses: [] },
    // Every call exits 9: the driver is not loaded; it may be loading, so it is asked again, a bounded number of times.
    { name: 'no driver', dir: makeMachine(t, {}), tries: 3, pauses: [7, 9] }
  ]
  const mismatches: string[] = []
  for (const c of cases) {
    const { facts, tries, pauses } = await startOn(c.dir)
    const got = { pool: facts.pool.key, tries, pauses }
    const want = { pool: 'cpu', tries: c.tries, pauses: c.pauses }
    if (JSON.stringify(got) !== JSON.stringify(want))
      mismatches.push(`${c.name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
  }
  t.same(mismatches, [])
})

t.test('driverSilent: no GPUs and a failed nvidia-smi call, nothing else', async (t) => {
  const facts = (gpus: number, failed: string | null) =>
    ({
      gpus: Array(gpus).fill({}),
      warnings: failed === null ? [] : [{ code: 'source.failed', source: failed, message: 'x' }]
    }) as unknown as HostFacts
  const cases: Array<[string, HostFacts, boolean]> = [
    ['GPUs found, one call failed', facts(8, 'nvidia-smi topo -m'), false],
    ['no GPUs, nvidia-smi calls failed', facts(0, 'nvidia-smi --query-gpu, nvidia-smi -L'), true],
    ['no GPUs, only a host source failed', facts(0, 'disks'), false],
    ['no GPUs, nothing failed', facts(0, null), false]
  ]
  const mismatches = cases.filter(([, f, want]) => driverSilent(f) !== want).map(([name]) => name)
  t.same(mismatches, [])
})
