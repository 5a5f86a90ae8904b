// The readable summary of `gpumesh-agent detect`: host, GPUs, a compact link
// matrix, NICs, disks, pool key and warnings.
import type { HostFacts } from '../protocol/host-facts.js'
import { table } from './table.js'

const GiB = 1024 ** 3

export function renderFacts(f: HostFacts): string {
  const out: string[] = []
  const os = [f.os.distro, f.os.release, f.os.kernel === null ? null : `(kernel ${f.os.kernel})`]
    .filter((x) => x !== null)
    .join(' ')
  const cpu = [
    f.cpu.model,
    f.cpu.logicalCores === null ? null : `${f.cpu.logicalCores} threads`,
    f.cpu.sockets === null ? null : `${f.cpu.sockets} socket(s)`,
    f.cpu.numaNodes === null ? null : `${f.cpu.numaNodes} NUMA node(s)`
  ]
    .filter((x) => x !== null)
    .join(', ')
  out.push(`Host     ${f.hostname}  ${os} ${f.os.arch}`)
  out.push(`CPU      ${cpu === '' ? '-' : cpu}`)
  out.push(`Memory   ${f.memoryBytes === null ? '-' : `${(f.memoryBytes / GiB).toFixed(1)} GiB`}`)
  out.push(`Driver   ${f.driverVersion ?? '-'}   CUDA ${f.cudaVersion ?? '-'}`)
  out.push(`Pool     ${f.pool.key}`)

  out.push('', `GPUs (${f.gpus.length})`)
  if (f.gpus.length === 0) out.push('  none')
  else {
    out.push(
      indent(
        table(
          ['#', 'Name', 'Memory', 'Bus id', 'NUMA', 'CPUs', 'MIG', 'NVLink'],
          f.gpus.map((g) => [
            g.index,
            g.name,
            g.memoryMiB === null ? null : `${g.memoryMiB} MiB`,
            g.pciBusId,
            g.numaNode,
            g.cpuAffinity,
            g.mig === null
              ? null
              : g.mig.mode === 'enabled'
                ? `${g.mig.devices.length}: ${g.mig.devices.map((d) => d.profile ?? '?').join(' ')}`
                : 'off',
            g.nvlink === null
              ? null
              : g.nvlink.total === 0
                ? 'none'
                : `${g.nvlink.active}/${g.nvlink.total} links${g.nvlink.bandwidthGBs === null ? '' : `, ${g.nvlink.bandwidthGBs} GB/s`}`
          ])
        )
      )
    )
  }

  if (f.topology.labels.length > 0) {
    out.push('', 'Links (nvidia-smi topo -m; ? = unreadable)')
    const { labels, matrix } = f.topology
    const short = labels.map((l) => l.replace(/^GPU/, 'G').replace(/^NIC/, 'N'))
    const gpuRows = labels.flatMap((l, i) => (/^GPU\d+$/.test(l) ? [i] : []))
    out.push(
      indent(
        table(
          ['', ...short],
          gpuRows.map((r) => [short[r] as string, ...(matrix[r] ?? []).map((c) => c ?? '?')])
        )
      )
    )
    out.push(
      `  NVLink domains: ${f.topology.nvlinkDomains.length === 0 ? 'none' : f.topology.nvlinkDomains.map((d) => `[${d.join(',')}]`).join(' ')}`
    )
  }

  if (f.topology.nics.length > 0) {
    out.push('', 'NICs near GPUs')
    out.push(
      indent(
        table(
          ['Label', 'Device', 'Nearest GPUs', 'Link'],
          f.topology.nics.map((n) => [n.label, n.name, n.nearestGpus.join(',') || null, n.link])
        )
      )
    )
  }
  if (f.rdmaDevices.length > 0) {
    out.push('', 'RDMA devices')
    out.push(
      indent(
        table(
          ['Device', 'Link layer', 'State', 'Rate', 'Netdevs'],
          f.rdmaDevices.map((d) => [d.name, d.linkLayer, d.state, d.rate, d.netdevs.join(',') || null])
        )
      )
    )
  }
  const nics = f.networkInterfaces.filter((n) => n.kind !== 'loopback')
  if (nics.length > 0) {
    out.push('', 'Network interfaces')
    out.push(
      indent(
        table(
          ['Name', 'Kind', 'State', 'Speed', 'Addresses'],
          nics.map((n) => [
            n.name,
            n.kind,
            n.up ? 'up' : 'down',
            n.speedMbps === null ? null : `${n.speedMbps} Mb/s`,
            n.addresses.join(' ') || null
          ])
        )
      )
    )
  }
  out.push('', 'Disks')
  if (f.disks.length === 0) out.push('  none found')
  else {
    out.push(
      indent(
        table(
          ['Mount', 'Device', 'FS', 'Size', 'Free', 'Media'],
          f.disks.map((d) => [
            d.mount,
            d.device,
            d.fsType,
            `${(d.sizeBytes / 1e9).toFixed(0)} GB`,
            `${(d.freeBytes / 1e9).toFixed(0)} GB`,
            d.nvme ? 'NVMe' : d.rotational === null ? null : d.rotational ? 'rotational' : 'SSD'
          ])
        )
      )
    )
  }
  out.push('', `Warnings (${f.warnings.length})`)
  for (const w of f.warnings) out.push(`  ! ${w.code} [${w.source}] ${w.message}`)
  if (f.warnings.length === 0) out.push('  none')
  return `${out.join('\n')}\n`
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')
}
