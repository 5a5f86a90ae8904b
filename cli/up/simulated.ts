// Simulated GPU hosts for `gpumesh up --simulate N`: their facts come from
// the real nvidia-smi captures of fixture machines (share/machines,
// shipped in the bundle), replayed by the same nvidia-smi double the tests
// use, through the agent's own detection. Only the GPUs are simulated: their
// workloads are real processes on this machine.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { detect } from '../../agent/detect/detect.js'
import type { HostFacts } from '../../protocol/host-facts.js'
import { MACHINES_DIR, REPLAY } from './machines.js'

/**
 * What the agent detects on `machine` (a folder of share/machines): the
 * replay finds its machine in its own environment (GPUMESH_SMI_FIXTURE).
 */
export async function detectMachine(
  machine: string,
  options: { agentVersion: string; poolLabel?: string }
): Promise<HostFacts> {
  if (!existsSync(REPLAY))
    throw new Error(`the nvidia-smi replay ${REPLAY} is missing: simulated hosts need the fixture machines`)
  return await detect({
    ...options,
    // The replay is a local script: a slow answer is a loaded machine (a CI runner), never a hung GPU.
    timeoutMs: 30_000,
    nvidiaSmi: REPLAY,
    env: { ...process.env, GPUMESH_SMI_FIXTURE: join(MACHINES_DIR, machine) }
  })
}

/** The facts of a simulated host named `hostname` on `machine`. */
export async function simulatedFacts(machine: string, hostname: string, agentVersion: string): Promise<HostFacts> {
  return { ...(await detectMachine(machine, { agentVersion })), hostname }
}
