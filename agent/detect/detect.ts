// Runs every fact source, isolates their failures, and assembles HostFacts.
// Host sources and the primary nvidia-smi calls run at once; the fallback
// nvidia-smi calls (-q, the summary table) run only when the first pass left
// a GPU's identity incomplete and the driver answered at all.
import { arch, hostname } from 'node:os'
import { HOST_FACTS_VERSION, type HostFacts, type Warning } from '../../protocol/host-facts.js'
import { combineGpus } from './combine-gpus.js'
import type { DetectContext, Fingerprinter, Fragment, HostPart } from './fingerprinter.js'
import type { GpuInventory } from './nvidia/inventory.js'
import { findNvidiaSmi, nvidiaSmi } from './nvidia/run.js'
import type { TopoMatrix } from './nvidia/parse-topo.js'
import { derivePool } from './pool.js'
import { policyWarnings } from './policy.js'
import { NoNvidiaSmiError, NVIDIA_SOURCES } from './sources/nvidia.js'

export interface DetectOptions {
  agentVersion: string
  /** nvidia-smi to run instead of the one on PATH (GPUMESH_NVIDIA_SMI). */
  nvidiaSmi?: string
  /** Deadline for each nvidia-smi call. */
  timeoutMs: number
  /** nvidia-smi's environment, and the PATH it is looked for in (default: this process's). */
  env?: NodeJS.ProcessEnv
  /** Operator label appended to the pool key (GPUMESH_POOL_LABEL). */
  poolLabel?: string
  sysfsRoot?: string
  hostSources?: Fingerprinter[]
  nvidiaSources?: Fingerprinter[]
}

/** Most problems one source may add to warnings[]; the rest are counted. */
const MAX_PROBLEMS_PER_SOURCE = 20

interface Outcome {
  source: Fingerprinter
  fragment?: Fragment
  error?: Error
}

export async function detect(options: DetectOptions): Promise<HostFacts> {
  const warnings: Warning[] = []
  const binary = await findNvidiaSmi(options.nvidiaSmi, options.env?.PATH)
  if (binary === null) {
    warnings.push(
      options.nvidiaSmi !== undefined && options.nvidiaSmi !== ''
        ? {
            code: 'nvidia.missing',
            source: 'nvidia-smi',
            message: `GPUMESH_NVIDIA_SMI=${options.nvidiaSmi} is not an executable file; no GPUs detected`
          }
        : {
            code: 'nvidia.missing',
            source: 'nvidia-smi',
            message: 'nvidia-smi not found on PATH (no NVIDIA driver?); no GPUs detected, this host joins pool "cpu"'
          }
    )
  }
  const ctx: DetectContext = {
    smi:
      binary === null
        ? null
        : nvidiaSmi({
            binary,
            timeoutMs: options.timeoutMs,
            ...(options.env === undefined ? {} : { env: options.env })
          }),
    sysfsRoot: options.sysfsRoot ?? '/sys'
  }
  const nvidiaSources = binary === null ? [] : (options.nvidiaSources ?? NVIDIA_SOURCES)
  // Loaded when used: a GPU-only re-detection (hostSources: []) never needs systeminformation.
  const hostSources = options.hostSources ?? (await import('./sources/index.js')).HOST_SOURCES
  const first = await runAll([...hostSources, ...nvidiaSources.filter((s) => s.fallback !== true)], ctx)
  let outcomes = first
  const driverAnswered = first.some((o) => o.fragment !== undefined && nvidiaSources.includes(o.source))
  if (driverAnswered && incomplete(first, nvidiaSources)) {
    outcomes = [
      ...first,
      ...(await runAll(
        nvidiaSources.filter((s) => s.fallback === true),
        ctx
      ))
    ]
  }

  const byPriority = (o: Outcome) => nvidiaSources.indexOf(o.source)
  const nvidia = outcomes.filter((o) => byPriority(o) >= 0).sort((a, b) => byPriority(a) - byPriority(b))
  const inventories = nvidia.flatMap((o) => (o.fragment?.inventory === undefined ? [] : [o.fragment.inventory]))
  const topo = nvidia.find((o) => o.fragment?.topology !== undefined)?.fragment?.topology ?? null
  const section = combineGpus(inventories, topo)
  const host = mergeHost(outcomes)

  warnings.push(...sourceWarnings(outcomes))
  warnings.push(...section.problems.map((message) => ({ code: 'gpu.inconsistent', source: 'nvidia-smi', message })))
  warnings.push(...policyWarnings(section.gpus, host.disks ?? null))

  return {
    version: HOST_FACTS_VERSION,
    hostname: host.hostname ?? hostname(),
    detectedAt: new Date().toISOString(),
    agentVersion: options.agentVersion,
    gpus: section.gpus,
    topology: section.topology,
    driverVersion: section.driverVersion,
    cudaVersion: section.cudaVersion,
    cpu: {
      vendor: host.cpu?.vendor ?? null,
      model: host.cpu?.model ?? null,
      sockets: host.cpu?.sockets ?? null,
      physicalCores: host.cpu?.physicalCores ?? null,
      logicalCores: host.cpu?.logicalCores ?? null,
      numaNodes: host.cpu?.numaNodes ?? null
    },
    memoryBytes: host.memoryBytes ?? null,
    disks: host.disks ?? [],
    networkInterfaces: host.networkInterfaces ?? [],
    rdmaDevices: host.rdmaDevices ?? [],
    os: host.os ?? { platform: process.platform, distro: null, release: null, kernel: null, arch: arch() },
    pool: derivePool(section.gpus, section.topology, options.poolLabel),
    warnings
  }
}

async function runAll(sources: Fingerprinter[], ctx: DetectContext): Promise<Outcome[]> {
  return await Promise.all(
    sources.map(async (source): Promise<Outcome> => {
      try {
        return { source, fragment: await source.fingerprint(ctx) }
      } catch (err) {
        return { source, error: err instanceof Error ? err : new Error(String(err)) }
      }
    })
  )
}

/** A GPU without name, memory or bus id, or no CUDA version: worth the fallback calls. */
function incomplete(outcomes: Outcome[], nvidiaSources: Fingerprinter[]): boolean {
  const inventories: GpuInventory[] = []
  let topo: TopoMatrix | null = null
  for (const o of outcomes) {
    if (!nvidiaSources.includes(o.source) || o.fragment === undefined) continue
    if (o.fragment.inventory !== undefined) inventories.push(o.fragment.inventory)
    topo ??= o.fragment.topology ?? null
  }
  const { gpus, cudaVersion, driverVersion } = combineGpus(inventories, topo)
  return (
    cudaVersion === null ||
    driverVersion === null ||
    gpus.some((g) => g.name === null || g.memoryMiB === null || g.pciBusId === null)
  )
}

function mergeHost(outcomes: Outcome[]): Partial<HostPart> {
  const host: Partial<HostPart> = {}
  for (const o of outcomes) {
    const part = o.fragment?.host
    if (part === undefined) continue
    const { cpu, ...rest } = part
    Object.assign(host, rest)
    if (cpu !== undefined) host.cpu = { ...host.cpu, ...cpu }
  }
  return host
}

function sourceWarnings(outcomes: Outcome[]): Warning[] {
  const out: Warning[] = []
  // The same failure from several nvidia-smi calls (no driver: exit 9 from
  // each) is one warning naming them all.
  const failures = new Map<string, string[]>()
  for (const o of outcomes) {
    if (o.error === undefined || o.error instanceof NoNvidiaSmiError) continue
    const names = failures.get(o.error.message) ?? []
    names.push(o.source.name)
    failures.set(o.error.message, names)
  }
  for (const [message, names] of failures) out.push({ code: 'source.failed', source: names.join(', '), message })
  for (const o of outcomes) {
    const problems = o.fragment?.problems ?? []
    for (const message of problems.slice(0, MAX_PROBLEMS_PER_SOURCE))
      out.push({ code: 'source.partial', source: o.source.name, message })
    if (problems.length > MAX_PROBLEMS_PER_SOURCE) {
      out.push({
        code: 'source.partial',
        source: o.source.name,
        message: `and ${problems.length - MAX_PROBLEMS_PER_SOURCE} more problems`
      })
    }
  }
  return out
}
