// The agent's GPU health and telemetry against real processes: the nvidia-smi
// double (share/nvidia-smi-replay) in loop mode, answering from a values file
// the test rewrites while it runs, and a regular file followed as the kernel
// log, holding XID lines from public reports (test/fixtures/kmsg).
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { GpuMonitor, type GpuMonitorOptions } from '../agent/health/gpu-monitor.js'
import type { GpuTelemetry } from '../protocol/telemetry.js'
import { eventually } from './helpers/eventually.js'
import { NVIDIA_SMI_DOUBLE, ROOT } from './helpers/fixtures.js'
import { type GpuValues, idleGpu, valuesMachine, writeGpuValues } from './helpers/gpu-values.js'
import { alive } from './helpers/process.js'

const PERIOD_MS = 200
const XID = readFileSync(join(ROOT, 'test/fixtures/kmsg/xid-messages.txt'), 'utf8').trim().split('\n')
/** By what each line is: see test/fixtures/kmsg/README.md. */
const XID_79_GPU1 = XID[0] as string
const XID_79_GPU2 = XID[1] as string
const XID_13_GPU3 = XID[2] as string
const XID_14_GPU0_OLD_FORM = XID[3] as string

interface Host {
  dir: string
  gpus: GpuValues[]
  kmsg: string
  stateDir: string
  seq: number
  /** Appends kernel records, as the kernel would. */
  log: (...messages: string[]) => void
  set: (index: number, values: GpuValues) => void
  start: (o?: Partial<GpuMonitorOptions>) => Promise<GpuMonitor>
}

function host(t: Test, count = 4, o: { drop?: string[]; kmsg?: string[] } = {}): Host {
  const gpus = Array.from({ length: count }, (_, i) => idleGpu(i))
  const dir = valuesMachine(gpus, o.drop)
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-health-state-'))
  const kmsg = join(dir, 'kmsg')
  writeFileSync(kmsg, '')
  const monitors: GpuMonitor[] = []
  t.teardown(async () => {
    for (const m of monitors) await m.stop()
    rmSync(dir, { recursive: true, force: true })
    rmSync(stateDir, { recursive: true, force: true })
  })
  const h: Host = {
    dir,
    gpus,
    kmsg,
    stateDir,
    seq: 100,
    log: (...messages) => {
      for (const m of messages) appendFileSync(kmsg, `3,${++h.seq},${h.seq * 1000},-;${m}\n`)
    },
    set: (index, values) => {
      gpus[index] = { ...gpus[index], ...values }
      writeGpuValues(dir, gpus, o.drop)
    },
    start: async (more = {}) => {
      const m = new GpuMonitor({
        binary: NVIDIA_SMI_DOUBLE,
        env: { ...process.env, GPUMESH_SMI_FIXTURE: dir },
        stateDir,
        kmsgPath: kmsg,
        kmsgPollMs: 50,
        periodMs: PERIOD_MS,
        remappedEveryMs: 300,
        ...more
      })
      monitors.push(m)
      await m.start()
      return m
    }
  }
  if (o.kmsg !== undefined) h.log(...o.kmsg)
  return h
}

const gpu = (m: GpuMonitor, index: number): GpuTelemetry | undefined => m.snapshot().find((g) => g.index === index)
const healthOf = (m: GpuMonitor, index: number) => {
  const h = gpu(m, index)?.health
  return h === undefined ? 'none' : h.reasons.length === 0 ? h.state : `${h.state}:${h.reasons.join(',')}`
}
/** Waits until GPU `index` reads `want` (state:reasons) and returns the whole table's states then. */
async function until(m: GpuMonitor, index: number, want: string, what = want): Promise<string[]> {
  await eventually(() => healthOf(m, index) === want, 10_000, `GPU ${index} ${what} (is ${healthOf(m, index)})`)
  return m.snapshot().map((g) => healthOf(m, g.index))
}
/** Waits for a sample taken after now, so that what follows judges fresh values. */
async function nextSample(m: GpuMonitor, index = 0): Promise<void> {
  const after = Date.now()
  await eventually(() => Date.parse(gpu(m, index)?.usage?.at ?? '0') > after, 10_000, 'a fresh sample')
}

t.test('one long-lived nvidia-smi loop: values the test changes while it runs show up', async (t) => {
  const h = host(t)
  const m = await h.start()
  await eventually(() => gpu(m, 3)?.usage !== null && gpu(m, 3) !== undefined, 10_000, 'the first sample')
  const pid = m.samplerPid
  h.set(2, { 'utilization.gpu': 87, 'memory.used': 40960, 'temperature.gpu': 66, 'power.draw': 512.5 })
  await eventually(() => gpu(m, 2)?.usage?.utilizationPct === 87, 10_000, 'utilization 87 on GPU 2')
  const u = gpu(m, 2)?.usage
  t.same(
    { usage: { ...u, at: undefined }, pid: m.samplerPid, alive: pid !== null && alive(pid), heartbeat: m.current()[2] },
    {
      usage: { utilizationPct: 87, memoryUsedMiB: 40960, temperatureC: 66, powerW: 512.5, at: undefined },
      pid,
      alive: true,
      heartbeat: { index: 2, utilizationPct: 87, memoryUsedMiB: 40960 }
    },
    'new values from the same process, and the heartbeat shape (GpuUsage) carries them'
  )
})

t.test('[N/A] and [Not Supported] values are null', async (t) => {
  const h = host(t, 1)
  h.gpus[0] = { ...h.gpus[0], 'utilization.gpu': '[N/A]', 'power.draw': '[Not Supported]', 'temperature.gpu': '[N/A]' }
  writeGpuValues(h.dir, h.gpus)
  const m = await h.start()
  await eventually(() => gpu(m, 0)?.usage, 10_000, 'a sample')
  t.same(
    { ...gpu(m, 0)?.usage, at: undefined },
    { utilizationPct: null, memoryUsedMiB: 0, temperatureC: null, powerW: null, at: undefined }
  )
})

t.test('fields the driver does not know are dropped or renamed, said once, and sampling goes on', async (t) => {
  // An older driver: the clock reasons under their old name, no PCIe width fields.
  const h = host(t, 2, { drop: ['clocks_event_reasons.active', 'pcie.link.width.max'] })
  for (const g of h.gpus) g['clocks_throttle_reasons.active'] = '0x0000000000000001'
  writeGpuValues(h.dir, h.gpus, ['clocks_event_reasons.active', 'pcie.link.width.max'])
  const m = await h.start()
  await eventually(() => gpu(m, 1)?.usage, 10_000, 'a sample')
  h.set(1, { 'clocks_throttle_reasons.active': '0x0000000000000040' })
  await until(m, 1, 'degraded:thermal-slowdown', 'degraded by the old-named throttle field')
  t.same(
    {
      asked: m.sampledFields.filter((f) => /clocks|pcie.link.width/.test(f)),
      warnings: m.warnings().filter((w) => /does not know/.test(w))
    },
    {
      asked: ['clocks_throttle_reasons.active', 'pcie.link.width.current'],
      warnings: [
        'nvidia-smi does not know clocks_event_reasons.active (GPU telemetry); using its older name clocks_throttle_reasons.active',
        'nvidia-smi does not know pcie.link.width.max (GPU telemetry); sampling without it'
      ]
    }
  )
})

t.test(
  'Xid 79 for one bus fails that GPU only; Xid 13 and an old-form Xid 14 are counted and change nothing',
  async (t) => {
    const h = host(t)
    const m = await h.start()
    await nextSample(m)
    h.log(XID_13_GPU3, XID_14_GPU0_OLD_FORM, 'usb 1-1: new high-speed USB device number 2 using xhci_hcd')
    await eventually(() => gpu(m, 0)?.xids.last === 14 && gpu(m, 3)?.xids.last === 13, 10_000, 'the XIDs counted')
    h.log(XID_79_GPU2)
    const states = await until(m, 2, 'failed:xid-79')
    t.same(
      { states, xids: m.snapshot().map((g) => g.xids) },
      {
        states: ['healthy', 'healthy', 'failed:xid-79', 'healthy'],
        xids: [
          { last: 14, counts: { 14: 1 } },
          { last: null, counts: {} },
          { last: 79, counts: { 79: 1 } },
          { last: 13, counts: { 13: 1 } }
        ]
      }
    )
  }
)

t.test('uncorrected ECC rising fails the GPU; the counter reset by a GPU reset heals it', async (t) => {
  const h = host(t, 2)
  const m = await h.start()
  await nextSample(m)
  h.set(0, { 'ecc.errors.uncorrected.volatile.total': 2 })
  const failed = await until(m, 0, 'failed:ecc-uncorrected')
  h.set(0, { 'ecc.errors.uncorrected.volatile.total': 0 })
  const healed = await until(m, 0, 'healthy')
  t.same({ failed, healed }, { failed: ['failed:ecc-uncorrected', 'healthy'], healed: ['healthy', 'healthy'] })
})

t.test('throttle bits degrade a GPU after two samples; the bits clearing heals it', async (t) => {
  const h = host(t, 2)
  const changes: number[][] = []
  const m = await h.start({ onHealthChange: (i) => changes.push(i) })
  await nextSample(m)
  h.set(1, { 'clocks_event_reasons.active': '0x0000000000000020' })
  const sawBit = Date.now()
  await until(m, 1, 'degraded:thermal-slowdown')
  // The sample that first showed the bit left the GPU healthy: degraded came from a later one.
  const since = Date.parse(gpu(m, 1)?.health.since ?? '0')
  h.set(1, { 'clocks_event_reasons.active': '0x0000000000000001' })
  await until(m, 1, 'healthy')
  t.ok(since >= sawBit, 'degraded after the bit was written')
  t.same(changes, [[1], [1]], 'one change to degraded, one back')
})

t.test('row remapping pending (read about once a minute) fails the GPU until it clears', async (t) => {
  const h = host(t, 1)
  const m = await h.start()
  await nextSample(m)
  h.set(0, { 'remapped_rows.pending': 1 })
  await until(m, 0, 'failed:row-remap-pending')
  h.set(0, { 'remapped_rows.pending': 0 })
  await until(m, 0, 'healthy')
  t.pass('failed and healed')
})

t.test(
  'a GPU missing from nvidia-smi fails; back after a reset it is healthy, its Xid 79 gone with the reset',
  async (t) => {
    const h = host(t, 2, { kmsg: [XID_79_GPU1] })
    const m = await h.start({
      gpus: () => h.gpus.map((g) => ({ index: Number(g.index), pciBusId: String(g['pci.bus_id']) }))
    })
    await until(m, 1, 'failed:xid-79')
    writeGpuValues(h.dir, [h.gpus[0] as GpuValues])
    const missing = await until(m, 1, 'failed:xid-79,gpu-missing')
    writeGpuValues(h.dir, h.gpus)
    const back = await until(m, 1, 'healthy')
    t.same(
      { missing, back, usage: gpu(m, 1)?.usage !== null },
      { missing: ['healthy', 'failed:xid-79,gpu-missing'], back: ['healthy', 'healthy'], usage: true }
    )
  }
)

t.test(
  'an Xid 79 already in the kernel log fails its GPU at start; after an admin clear a restart does not',
  async (t) => {
    const h = host(t, 2, { kmsg: [XID_79_GPU1] })
    const first = await h.start()
    const atStart = await until(first, 1, 'failed:xid-79')
    const cleared = await first.clearHealth(1)
    await first.stop()

    const second = await h.start()
    await nextSample(second, 1)
    const afterRestart = second.snapshot().map((g) => healthOf(second, g.index))
    const counted = gpu(second, 1)?.xids.counts
    h.log(XID_79_GPU1) // a new one, after the clear
    const again = await until(second, 1, 'failed:xid-79')
    t.same(
      { atStart, cleared: cleared.state, afterRestart, counted, again },
      {
        atStart: ['healthy', 'failed:xid-79'],
        cleared: 'healthy',
        afterRestart: ['healthy', 'healthy'],
        counted: { 79: 1 },
        again: ['healthy', 'failed:xid-79']
      },
      'the old line is read again (counted) but stays cleared; a new one fails the GPU'
    )
    await t.rejects(second.clearHealth(9), { code: 'ERR_GPU_UNKNOWN' }, 'a GPU the host does not have')
  }
)

t.test('the sampler process is started again after it is killed', async (t) => {
  const h = host(t, 1)
  const m = await h.start()
  await nextSample(m)
  const pid = m.samplerPid as number
  process.kill(pid, 'SIGKILL')
  const next = await eventually(
    () => (m.samplerPid !== null && m.samplerPid !== pid ? m.samplerPid : undefined),
    10_000,
    'a new nvidia-smi loop'
  )
  h.set(0, { 'utilization.gpu': 55 })
  await eventually(() => gpu(m, 0)?.usage?.utilizationPct === 55, 10_000, 'samples from the new process')
  t.same({ old: alive(pid), new: alive(next) }, { old: false, new: true })
})

t.test('where loop mode does not work, one call per period', async (t) => {
  const h = host(t, 1)
  writeFileSync(join(h.dir, 'loop.unsupported'), '')
  const m = await h.start()
  await nextSample(m)
  h.set(0, { 'utilization.gpu': 42 })
  await eventually(() => gpu(m, 0)?.usage?.utilizationPct === 42, 10_000, 'a later call sees the change')
  t.same(m.warnings().filter((w) => /-lms/.test(w)).length, 1, 'said once that loop mode does not work')
})

t.test('a stop leaves no nvidia-smi behind', async (t) => {
  const h = host(t, 1)
  const m = await h.start()
  await nextSample(m)
  const pid = m.samplerPid as number
  await m.stop()
  await eventually(() => !alive(pid), 15_000, 'the loop ended')
  t.equal(m.samplerPid, null)
})
