import { arch, hostname } from 'node:os'
import si from 'systeminformation'
import type { Fingerprinter } from '../fingerprinter.js'

export const os: Fingerprinter = {
  name: 'os',
  async fingerprint() {
    const o = await si.osInfo()
    return {
      host: {
        hostname: hostname(),
        os: {
          platform: o.platform,
          distro: o.distro === '' ? null : o.distro,
          release: o.release === '' ? null : o.release,
          kernel: o.kernel === '' ? null : o.kernel,
          arch: arch()
        }
      }
    }
  }
}
