// Registry of the host fact sources (independent of each other); the
// nvidia-smi ones are in ./nvidia.ts, in merge priority.
import type { Fingerprinter } from '../fingerprinter.js'
import { cpu } from './cpu.js'
import { disks } from './disks.js'
import { memory } from './memory.js'
import { network } from './network.js'
import { numa } from './numa.js'
import { os } from './os.js'
import { rdma } from './rdma.js'

export const HOST_SOURCES: Fingerprinter[] = [cpu, disks, memory, network, numa, os, rdma]
