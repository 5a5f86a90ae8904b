import si from 'systeminformation'
import type { Fingerprinter } from '../fingerprinter.js'

export const cpu: Fingerprinter = {
  name: 'cpu',
  async fingerprint() {
    const c = await si.cpu()
    const model = [c.manufacturer, c.brand].filter((s) => s !== '').join(' ')
    return {
      host: {
        cpu: {
          vendor: c.vendor === '' ? null : c.vendor,
          model: model === '' ? null : model,
          sockets: c.processors > 0 ? c.processors : null,
          physicalCores: c.physicalCores > 0 ? c.physicalCores : null,
          logicalCores: c.cores > 0 ? c.cores : null
        }
      }
    }
  }
}
