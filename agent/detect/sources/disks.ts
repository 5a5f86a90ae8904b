// Local filesystems with their block device. Network, memory and image
// filesystems are left out: they are not where models and checkpoints live.
import si from 'systeminformation'
import type { Disk } from '../../../protocol/host-facts.js'
import type { Fingerprinter } from '../fingerprinter.js'

const NOT_LOCAL =
  /^(tmpfs|devtmpfs|overlay|squashfs|nfs\d?|cifs|smb\d?|fuse.*|ramfs|proc|sysfs|cgroup2?|autofs|iso9660|efivarfs|9p|virtiofs)$/

export const disks: Fingerprinter = {
  name: 'disks',
  async fingerprint() {
    const [filesystems, blocks] = await Promise.all([si.fsSize(), si.blockDevices()])
    const seen = new Set<string>()
    const out: Disk[] = []
    for (const f of filesystems) {
      if (NOT_LOCAL.test(f.type) || !f.fs.startsWith('/dev/') || seen.has(f.fs)) continue
      seen.add(f.fs)
      const name = f.fs.slice('/dev/'.length)
      // A partition's rotational flag is its disk's: nvme0n1p2 -> nvme0n1, sda1 -> sda.
      const block =
        blocks.find((b) => b.name === name) ?? blocks.find((b) => b.type === 'disk' && name.startsWith(b.name))
      out.push({
        device: f.fs,
        mount: f.mount,
        fsType: f.type,
        sizeBytes: Math.max(0, Math.round(f.size)),
        freeBytes: Math.max(0, Math.round(f.available)),
        rotational: block === undefined || block.physical === '' ? null : block.physical === 'HDD',
        nvme: name.startsWith('nvme')
      })
    }
    return { host: { disks: out } }
  }
}
