import si from 'systeminformation'
import type { Fingerprinter } from '../fingerprinter.js'

export const memory: Fingerprinter = {
  name: 'memory',
  async fingerprint() {
    return { host: { memoryBytes: (await si.mem()).total } }
  }
}
