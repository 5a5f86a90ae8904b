// RDMA devices (InfiniBand and RoCE: mlx5_0, ...) from sysfs. These are the
// names nvidia-smi topo -m uses for its NIC columns.
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { RdmaDevice } from '../../../protocol/host-facts.js'
import type { Fingerprinter } from '../fingerprinter.js'

async function read(path: string): Promise<string | null> {
  try {
    return (await readFile(path, 'utf8')).trim()
  } catch {
    return null
  }
}

async function list(path: string): Promise<string[]> {
  try {
    return (await readdir(path)).sort()
  } catch {
    return []
  }
}

export const rdma: Fingerprinter = {
  name: 'rdma',
  async fingerprint({ sysfsRoot }) {
    const root = join(sysfsRoot, 'class/infiniband')
    const devices: RdmaDevice[] = []
    for (const name of await list(root)) {
      const port = join(root, name, 'ports', '1')
      const state = await read(join(port, 'state'))
      devices.push({
        name,
        linkLayer: await read(join(port, 'link_layer')),
        // "4: ACTIVE" -> "ACTIVE"
        state: state === null ? null : state.replace(/^\d+:\s*/, ''),
        rate: await read(join(port, 'rate')),
        netdevs: await list(join(root, name, 'device', 'net'))
      })
    }
    return { host: { rdmaDevices: devices } }
  }
}
