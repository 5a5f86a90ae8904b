import si from 'systeminformation'
import type { NetworkInterface } from '../../../protocol/host-facts.js'
import type { Fingerprinter } from '../fingerprinter.js'

export const network: Fingerprinter = {
  name: 'network',
  async fingerprint() {
    const list = await si.networkInterfaces()
    const interfaces = (Array.isArray(list) ? list : [list]).map(
      (n): NetworkInterface => ({
        name: n.iface,
        mac: n.mac === '' || n.mac === '00:00:00:00:00:00' ? null : n.mac,
        addresses: [n.ip4, n.ip6].filter((a) => a !== ''),
        speedMbps: typeof n.speed === 'number' && n.speed > 0 ? Math.round(n.speed) : null,
        kind: n.internal
          ? 'loopback'
          : n.iface.startsWith('ib')
            ? 'infiniband'
            : n.virtual
              ? 'virtual'
              : n.type === 'wired'
                ? 'ethernet'
                : n.type === 'wireless'
                  ? 'wireless'
                  : 'other',
        up: n.operstate === 'up'
      })
    )
    return { host: { networkInterfaces: interfaces } }
  }
}
