// Host fact sources: the real ones on this machine, sysfs ones on a fixture
// tree (no InfiniBand here), and detect()'s isolation of a failing source.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import { detect } from '../agent/detect/detect.js'
import type { DetectContext, Fingerprinter } from '../agent/detect/fingerprinter.js'
import { HOST_SOURCES } from '../agent/detect/sources/index.js'
import { numa } from '../agent/detect/sources/numa.js'
import { rdma } from '../agent/detect/sources/rdma.js'
import { HostFacts } from '../protocol/host-facts.js'
import { schemaErrors } from '../protocol/validate.js'

function sysfs(t: Test, files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'gpumesh-sysfs-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  for (const [path, content] of Object.entries(files)) {
    // A path ending in "/" is a directory.
    mkdirSync(path.endsWith('/') ? join(root, path) : dirname(join(root, path)), { recursive: true })
    if (!path.endsWith('/')) writeFileSync(join(root, path), content)
  }
  return root
}

const ctx = (sysfsRoot = '/sys'): DetectContext => ({ smi: null, sysfsRoot })

t.test('every host source answers on this machine with its own part', async (t) => {
  const wrong: string[] = []
  for (const source of HOST_SOURCES) {
    const fragment = await source.fingerprint(ctx())
    if (fragment.host === undefined || Object.keys(fragment.host).length === 0)
      wrong.push(`${source.name} contributes no host facts`)
    if (fragment.inventory !== undefined) wrong.push(`${source.name} says something about GPUs`)
  }
  t.same(wrong, [], 'each source contributes host facts and nothing about GPUs')
  const names = HOST_SOURCES.map((s) => s.name)
  t.same(names, [...names].sort(), 'registry is sorted by name')
  t.equal(new Set(names).size, names.length, 'names are unique')
})

t.test('host facts agree with the kernel', async (t) => {
  const facts = await detect({ agentVersion: 'test', timeoutMs: 30_000, nvidiaSmi: '/nonexistent' })
  t.same(schemaErrors(HostFacts, facts), [])
  t.equal(facts.cpu.logicalCores, cpus().length)
  t.ok(
    facts.memoryBytes !== null && Math.abs(facts.memoryBytes - totalmem()) < totalmem() * 0.01,
    'memory within 1 % of os.totalmem()'
  )
  t.ok(
    facts.disks.some((d) => d.mount === '/' && d.sizeBytes > 0),
    'the root filesystem is a local disk'
  )
  t.ok(facts.cpu.numaNodes !== null && facts.cpu.numaNodes >= 1, 'at least one NUMA node')
  t.equal(facts.os.platform, 'linux')
})

t.test('NUMA nodes from sysfs', async (t) => {
  const root = sysfs(t, {
    'devices/system/node/node0/cpulist': '0-47',
    'devices/system/node/node1/cpulist': '48-95',
    'devices/system/node/possible': '0-1',
    'devices/system/node/power/': ''
  })
  t.same(await numa.fingerprint(ctx(root)), { host: { cpu: { numaNodes: 2 } } })
  await t.rejects(numa.fingerprint(ctx(sysfs(t, {}))), 'no sysfs: the source fails (and becomes a warning)')
})

t.test('RDMA devices from sysfs (InfiniBand and RoCE)', async (t) => {
  const root = sysfs(t, {
    'class/infiniband/mlx5_0/ports/1/link_layer': 'InfiniBand\n',
    'class/infiniband/mlx5_0/ports/1/state': '4: ACTIVE\n',
    'class/infiniband/mlx5_0/ports/1/rate': '400 Gb/sec (4X NDR)\n',
    'class/infiniband/mlx5_0/device/net/ibp24s0/': '',
    'class/infiniband/mlx5_1/ports/1/link_layer': 'Ethernet\n',
    'class/infiniband/mlx5_1/ports/1/state': '1: DOWN\n',
    'class/infiniband/mlx5_1/device/net/ens1f0np0/': ''
  })
  const { host } = await rdma.fingerprint(ctx(root))
  t.same(host?.rdmaDevices, [
    { name: 'mlx5_0', linkLayer: 'InfiniBand', state: 'ACTIVE', rate: '400 Gb/sec (4X NDR)', netdevs: ['ibp24s0'] },
    { name: 'mlx5_1', linkLayer: 'Ethernet', state: 'DOWN', rate: null, netdevs: ['ens1f0np0'] }
  ])
  t.same((await rdma.fingerprint(ctx(sysfs(t, {})))).host?.rdmaDevices, [], 'no RDMA devices: empty, not an error')
})

t.test('a failing source is a warning; the others still count', async (t) => {
  const broken: Fingerprinter = {
    name: 'broken',
    fingerprint: async () => {
      throw new Error('permission denied reading /dev/mem')
    }
  }
  const good: Fingerprinter = { name: 'good', fingerprint: async () => ({ host: { memoryBytes: 42 } }) }
  const facts = await detect({
    agentVersion: 'test',
    timeoutMs: 1000,
    nvidiaSmi: '/nonexistent',
    hostSources: [broken, good]
  })
  t.same(schemaErrors(HostFacts, facts), [])
  t.equal(facts.memoryBytes, 42)
  t.ok(
    facts.warnings.some(
      (w) => w.code === 'source.failed' && w.source === 'broken' && w.message === 'permission denied reading /dev/mem'
    )
  )
  t.same(facts.disks, [], 'a missing source leaves its facts empty')
  t.notOk(
    facts.warnings.some((w) => w.code === 'storage.small'),
    'unknown disks: no storage verdict'
  )
})
