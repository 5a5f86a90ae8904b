// The environment of a placement (docs/design.md "Contracts"): the agent's own
// environment without its GPUMESH_* settings, then the GPU variables,
// GPUMESH_WORKLOAD and GPUMESH_PLACEMENT_ID, then the workload's `run.env`,
// then the assignment's `env` (GPUMESH_RANK, GPUMESH_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT for multi-host recipes). Later entries win, except the GPU
// variables and an endpoint replica's PORT.
import type { Assignment } from './types.js'

/**
 * The GPU variables are the allocation itself: the coordinator gave this
 * placement these GPUs and no others, and other placements hold the rest.
 * A workload that could set them (in `run.env`, or a stale value in the
 * agent's environment) would run on GPUs it was not given, so they are
 * applied last and nothing overrides them.
 *
 * CUDA_DEVICE_ORDER=PCI_BUS_ID belongs with them: the indices are nvidia-smi
 * indices, which follow the PCI bus order, while CUDA's default order is
 * "fastest first"; on a host with different GPU models (or when the driver
 * orders them differently) the same number would name another GPU.
 */
export const GPU_VARIABLES = ['CUDA_VISIBLE_DEVICES', 'NVIDIA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER'] as const

/** Agent settings are GPUMESH_*; they are the agent's, not the workload's (join token among them). */
const isAgentSetting = (name: string) => name.startsWith('GPUMESH_')

export function gpuVariables(gpus: readonly number[], driver: 'process' | 'docker'): Record<string, string> {
  const host = gpus.join(',')
  return {
    // Inside a container started with --gpus the container sees only its own
    // GPUs, numbered from 0: host indices there would name devices that do
    // not exist (CUDA_VISIBLE_DEVICES=4,5 with two visible GPUs = no GPU).
    // NVIDIA_VISIBLE_DEVICES is read by the NVIDIA container runtime on the
    // host side and keeps host indices ("" = no GPU, even if the image says
    // "all").
    CUDA_VISIBLE_DEVICES: driver === 'docker' ? gpus.map((_, i) => i).join(',') : host,
    NVIDIA_VISIBLE_DEVICES: host,
    CUDA_DEVICE_ORDER: 'PCI_BUS_ID'
  }
}

/**
 * The variables gpumesh defines for a placement, in order, without the
 * agent's environment: what a container gets (`docker run -e`), and what is
 * laid over the agent's environment for a process.
 */
export function placementVariables(a: Assignment, driver: 'process' | 'docker' = a.run.driver): Record<string, string> {
  const gpus = gpuVariables(a.gpus, driver)
  // Object.entries/fromEntries rather than assignment: a key "__proto__" in
  // run.env is an ordinary variable name, not a prototype to set.
  const entries: Array<[string, string]> = [
    ...Object.entries(gpus),
    ['GPUMESH_WORKLOAD', a.workloadName],
    ['GPUMESH_PLACEMENT_ID', a.placementId],
    ...Object.entries(a.run.env ?? {}),
    ...Object.entries(a.env)
  ]
  const merged = new Map<string, string>()
  for (const [k, v] of entries) merged.set(k, v)
  for (const [k, v] of Object.entries(gpus)) merged.set(k, v) // the allocation wins (see GPU_VARIABLES)
  // The port is the coordinator's allocation too: the gateway and the readiness probe go there.
  if (a.port !== undefined) merged.set('PORT', String(a.port))
  return Object.fromEntries(merged)
}

/** The full environment of a placement's process: the agent's environment (minus GPUMESH_*) under the placement's variables. */
export function placementEnv(
  a: Assignment,
  agentEnv: NodeJS.ProcessEnv,
  driver: 'process' | 'docker' = a.run.driver
): Record<string, string> {
  const merged = new Map(Object.entries(agentEnvWithoutSettings(agentEnv)))
  for (const [k, v] of Object.entries(placementVariables(a, driver))) merged.set(k, v)
  return Object.fromEntries(merged)
}

/** The agent's environment without its GPUMESH_* settings (what the docker client runs with). */
export function agentEnvWithoutSettings(agentEnv: NodeJS.ProcessEnv): Record<string, string> {
  const merged = new Map<string, string>()
  for (const [k, v] of Object.entries(agentEnv)) if (v !== undefined && !isAgentSetting(k)) merged.set(k, v)
  return Object.fromEntries(merged)
}
