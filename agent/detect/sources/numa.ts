// NUMA nodes from sysfs; systeminformation does not report them.
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Fingerprinter } from '../fingerprinter.js'

export const numa: Fingerprinter = {
  name: 'numa',
  async fingerprint({ sysfsRoot }) {
    const entries = await readdir(join(sysfsRoot, 'devices/system/node'))
    const nodes = entries.filter((e) => /^node\d+$/.test(e)).length
    return { host: { cpu: { numaNodes: nodes } } }
  }
}
