// HostFacts: what an agent knows about its host. The agent prints it
// (`gpumesh-agent detect --json`), registers with it, and the coordinator
// stores it; other tools read its required fields (see docs/design.md "Agent").
import { Type, type Static } from '@sinclair/typebox'
import { Nullable } from './schema.js'
import { MAX_POOL_LABEL_LENGTH, POOL_KEY_PATTERN } from './workload.js'

export const HOST_FACTS_VERSION = 1

export const MigDevice = Type.Object(
  {
    index: Type.Integer({ minimum: 0 }),
    /** Profile as nvidia-smi -L prints it, e.g. `1g.10gb` or `1c.3g.71gb`; null when no source named it. */
    profile: Nullable(Type.String()),
    uuid: Nullable(Type.String())
  },
  { additionalProperties: false }
)

export const Mig = Type.Object(
  {
    mode: Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]),
    devices: Type.Array(MigDevice)
  },
  { additionalProperties: false }
)

export const NvLink = Type.Object(
  {
    /** Links that report a speed (active). */
    active: Type.Integer({ minimum: 0 }),
    /** Links listed in total, active or not. */
    total: Type.Integer({ minimum: 0 }),
    /** Sum of active link speeds, GB/s as nvidia-smi reports. */
    bandwidthGBs: Nullable(Type.Number({ minimum: 0 }))
  },
  { additionalProperties: false }
)

export const Gpu = Type.Object(
  {
    index: Type.Integer({ minimum: 0 }),
    uuid: Nullable(Type.String()),
    /** Exactly as nvidia-smi prints it (e.g. `NVIDIA H100 80GB HBM3`). */
    name: Nullable(Type.String()),
    memoryMiB: Nullable(Type.Integer({ minimum: 0 })),
    pciBusId: Nullable(Type.String()),
    /** NUMA node nearest the GPU (topo -m "NUMA Affinity"); null when unknown or several. */
    numaNode: Nullable(Type.Integer({ minimum: 0 })),
    /** CPU list nearest the GPU as printed (e.g. `0-47,96-143`). */
    cpuAffinity: Nullable(Type.String()),
    mig: Nullable(Mig),
    nvlink: Nullable(NvLink)
  },
  { additionalProperties: false }
)

export const TopologyNic = Type.Object(
  {
    /** Row/column name in topo -m (`NIC0` or, in the legacy layout, `mlx5_0`). */
    label: Type.String(),
    /** Device name (`mlx5_0`) from the NIC Legend or the legacy label; null when not printed. */
    name: Nullable(Type.String()),
    /** GPUs at the closest link level seen for this NIC. */
    nearestGpus: Type.Array(Type.Integer({ minimum: 0 })),
    /** That link level (PIX, PXB, PHB, NODE, SYS); null when no cell was readable. */
    link: Nullable(Type.String())
  },
  { additionalProperties: false }
)

export const Topology = Type.Object(
  {
    /** Row/column names in nvidia-smi order: GPU0.., then NIC0.. or mlx5_0... */
    labels: Type.Array(Type.String()),
    /** matrix[row][col] exactly as printed (X, NV18, PIX, ...); null where the output was damaged. */
    matrix: Type.Array(Type.Array(Nullable(Type.String()))),
    /** Maximal groups (size >= 2) of GPU indices that are all pairwise NVLink-connected. */
    nvlinkDomains: Type.Array(Type.Array(Type.Integer({ minimum: 0 }))),
    nics: Type.Array(TopologyNic)
  },
  { additionalProperties: false }
)

export const Cpu = Type.Object(
  {
    vendor: Nullable(Type.String()),
    model: Nullable(Type.String()),
    sockets: Nullable(Type.Integer({ minimum: 0 })),
    physicalCores: Nullable(Type.Integer({ minimum: 0 })),
    logicalCores: Nullable(Type.Integer({ minimum: 0 })),
    numaNodes: Nullable(Type.Integer({ minimum: 0 }))
  },
  { additionalProperties: false }
)

export const Disk = Type.Object(
  {
    device: Type.String(),
    mount: Type.String(),
    fsType: Type.String(),
    sizeBytes: Type.Integer({ minimum: 0 }),
    freeBytes: Type.Integer({ minimum: 0 }),
    /** true for spinning disks; null when the kernel does not say. */
    rotational: Nullable(Type.Boolean()),
    nvme: Type.Boolean()
  },
  { additionalProperties: false }
)

export const NetworkInterface = Type.Object(
  {
    name: Type.String(),
    mac: Nullable(Type.String()),
    addresses: Type.Array(Type.String()),
    speedMbps: Nullable(Type.Integer({ minimum: 0 })),
    /** `ethernet`, `infiniband`, `wireless`, `loopback`, `virtual` or `other`. */
    kind: Type.String(),
    up: Type.Boolean()
  },
  { additionalProperties: false }
)

export const RdmaDevice = Type.Object(
  {
    /** RDMA device name, e.g. `mlx5_0`. */
    name: Type.String(),
    /** `InfiniBand` or `Ethernet` (RoCE), per port 1. */
    linkLayer: Nullable(Type.String()),
    state: Nullable(Type.String()),
    rate: Nullable(Type.String()),
    /** Network interfaces backed by this device. */
    netdevs: Type.Array(Type.String())
  },
  { additionalProperties: false }
)

export const Os = Type.Object(
  {
    platform: Type.String(),
    distro: Nullable(Type.String()),
    release: Nullable(Type.String()),
    kernel: Nullable(Type.String()),
    arch: Type.String()
  },
  { additionalProperties: false }
)

export const Interconnect = Type.Union([
  Type.Literal('nvlink'),
  Type.Literal('nvlink-partial'),
  Type.Literal('pcie'),
  Type.Literal('unknown'),
  Type.Literal('none')
])

export const PoolAttributes = Type.Object(
  {
    key: Type.String({ pattern: POOL_KEY_PATTERN }),
    family: Type.String(),
    memoryGB: Nullable(Type.Integer({ minimum: 0 })),
    gpuCount: Type.Integer({ minimum: 0 }),
    interconnect: Interconnect,
    label: Nullable(Type.String({ maxLength: MAX_POOL_LABEL_LENGTH }))
  },
  { additionalProperties: false }
)

export const Warning = Type.Object(
  {
    /** Stable, dotted code, e.g. `gpu.eol`, `source.failed`, `topology.damaged`. */
    code: Type.String(),
    /** Fact source that raised it (`nvidia-smi topo -m`, `disks`, ...) or `policy`. */
    source: Type.String(),
    message: Type.String()
  },
  { additionalProperties: false }
)

export const HostFacts = Type.Object(
  {
    version: Type.Literal(HOST_FACTS_VERSION),
    hostname: Type.String(),
    detectedAt: Type.String({ format: 'date-time' }),
    agentVersion: Type.String(),
    gpus: Type.Array(Gpu),
    topology: Topology,
    driverVersion: Nullable(Type.String()),
    cudaVersion: Nullable(Type.String()),
    cpu: Cpu,
    memoryBytes: Nullable(Type.Integer({ minimum: 0 })),
    disks: Type.Array(Disk),
    networkInterfaces: Type.Array(NetworkInterface),
    rdmaDevices: Type.Array(RdmaDevice),
    os: Os,
    pool: PoolAttributes,
    warnings: Type.Array(Warning)
  },
  { additionalProperties: false }
)

export type MigDevice = Static<typeof MigDevice>
export type Mig = Static<typeof Mig>
export type NvLink = Static<typeof NvLink>
export type Gpu = Static<typeof Gpu>
export type TopologyNic = Static<typeof TopologyNic>
export type Topology = Static<typeof Topology>
export type Cpu = Static<typeof Cpu>
export type Disk = Static<typeof Disk>
export type NetworkInterface = Static<typeof NetworkInterface>
export type RdmaDevice = Static<typeof RdmaDevice>
export type Os = Static<typeof Os>
export type Interconnect = Static<typeof Interconnect>
export type PoolAttributes = Static<typeof PoolAttributes>
export type Warning = Static<typeof Warning>
export type HostFacts = Static<typeof HostFacts>
