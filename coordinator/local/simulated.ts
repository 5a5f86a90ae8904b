// Simulated GPU hosts for `gpumesh up --simulate N`: their facts come from
// the real nvidia-smi captures of fixture machines (test/fixtures/machines,
// shipped in the bundle), replayed by the same nvidia-smi double the tests
// use, through the agent's own detection. Only the GPUs are simulated: their
// workloads are real processes on this machine.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { detect } from '../../agent/detect/detect.js'
import type { HostFacts } from '../../protocol/host-facts.js'
import { MACHINES_DIR, REPLAY } from './machines.js'

let detecting: Promise<unknown> = Promise.resolve()

/** The facts the agent detects on `machine`, named `hostname`. */
export async function simulatedFacts (machine: string, hostname: string, agentVersion: string): Promise<HostFacts> {
  if (!existsSync(REPLAY)) throw new Error(`the nvidia-smi replay ${REPLAY} is missing: simulated hosts need the fixture machines`)
  // The replay reads its machine from the environment: one detection at a time.
  const turn = detecting.then(async () => {
    const before = process.env.GPUMESH_SMI_FIXTURE
    process.env.GPUMESH_SMI_FIXTURE = join(MACHINES_DIR, machine)
    try {
      return await detect({ agentVersion, timeoutMs: 5000, nvidiaSmi: REPLAY })
    } finally {
      if (before === undefined) delete process.env.GPUMESH_SMI_FIXTURE
      else process.env.GPUMESH_SMI_FIXTURE = before
    }
  })
  detecting = turn.catch(() => {})
  const facts = await turn
  return { ...facts, hostname }
}
