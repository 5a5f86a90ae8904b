// The pieces of GPU health that need no process: XID lines in both driver
// forms (test/fixtures/kmsg, from public reports), bus ids, kernel records,
// nvidia-smi cells, the health policy's hysteresis and recovery, and deltas.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { telemetryDelta } from '../agent/health/delta.js'
import { healthPolicy, loadHealthPolicy } from '../agent/health/policy.js'
import { HealthTracker } from '../agent/health/tracker.js'
import { type GpuSample, parseSampleLine, SAMPLE_FIELDS } from '../agent/telemetry/gpu-sample.js'
import { unknownField } from '../agent/telemetry/field-list.js'
import { parseKernelRecord } from '../agent/telemetry/kernel-log.js'
import { parseRemappedRows } from '../agent/telemetry/remapped-rows.js'
import { busKey, parseXid } from '../agent/telemetry/xid.js'
import { ROOT } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'

const XID_LINES = readFileSync(join(ROOT, 'test/fixtures/kmsg/xid-messages.txt'), 'utf8').trim().split('\n')

t.test('XID lines of both driver forms name their GPU and code; other lines are none', async (t) => {
  const m = new Mismatches()
  const want = [
    { bus: '0000:05:00', code: 79 },
    { bus: '0000:44:00', code: 79 },
    { bus: '0000:65:00', code: 13 },
    { bus: '0000:03:00', code: 14 },
    { bus: '0000:03:00', code: 13 },
    null
  ]
  XID_LINES.forEach((line, i) => {
    const x = parseXid(line)
    m.check(line, 'bus and code', x === null ? null : { bus: x.bus, code: x.code }, want[i])
  })
  for (const [address, key] of [
    ['00000000:2B:00.0', '0000:2b:00'],
    ['0000:2b:00', '0000:2b:00'],
    ['PCI:0000:2b:00', null],
    ['2b:00', '0000:2b:00'],
    ['00000001:18:00.0', '0001:18:00'],
    ['GPU-1234', null]
  ] as const)
    m.check(address, 'busKey', busKey(address), key)
  for (const [line, rec] of [
    [
      '3,4471,3023054882,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234',
      { seq: 4471, usec: 3023054882, message: 'NVRM: Xid (PCI:0000:3b:00): 79, pid=1234' }
    ],
    ['6,1000,100;usb 1-1: new device', { seq: 1000, usec: 100, message: 'usb 1-1: new device' }],
    [' SUBSYSTEM=pci', null],
    ['[ 1843.308145] NVRM: not a kmsg record', null]
  ] as const)
    m.check(line, 'kernel record', parseKernelRecord(line), rec)
  t.same(m.list, [])
})

t.test('nvidia-smi cells: [N/A] and [Not Supported] are null, masks are hex, units are tolerated', async (t) => {
  const fields = SAMPLE_FIELDS.map((f) => f.field)
  const line =
    '2, GPU-x, 00000000:18:00.0, [N/A], 3, 1024 MiB, 81559, 41, [Not Supported], 0x0000000000000028, 0, 7, Yes, 4, 5, 16, 16'
  const s = parseSampleLine(line, fields, 0) as GpuSample
  const m = new Mismatches()
  for (const [key, want] of [
    ['index', 2],
    ['pciBusId', '00000000:18:00.0'],
    ['utilizationPct', null],
    ['memoryUsedMiB', 1024],
    ['powerW', null],
    ['clockEventReasons', 0x28],
    ['eccCorrectedVolatile', 7],
    ['retiredPagesPending', true],
    ['pcieGenCurrent', 4]
  ] as const)
    m.check(line, key, s[key], want)
  m.check('a header line', 'parse', parseSampleLine(fields.join(', '), fields, 0), null)
  m.check(
    'an error line',
    'parse',
    parseSampleLine('Unable to determine the device handle for GPU0000:18:00.0: Unknown Error', fields, 0),
    null
  )
  m.check(
    'refused field',
    'unknownField',
    unknownField('exit 2: Field "clocks_event_reasons.active" is not a valid field to query.'),
    'clocks_event_reasons.active'
  )
  m.check(
    'remapped rows',
    'parse',
    parseRemappedRows('00000000:18:00.0, 0, 2, 1, 0\n', [
      'gpu_bus_id',
      'remapped_rows.correctable',
      'remapped_rows.uncorrectable',
      'remapped_rows.pending',
      'remapped_rows.failure'
    ]),
    [{ bus: '0000:18:00', correctable: 0, uncorrectable: 2, pending: true, failure: false }]
  )
  t.same(m.list, [])
})

function sample(index: number, over: Partial<GpuSample> = {}): GpuSample {
  return {
    index,
    uuid: `GPU-${index}`,
    pciBusId: `00000000:0${index}:00.0`,
    utilizationPct: 10,
    memoryUtilizationPct: 0,
    memoryUsedMiB: 100,
    memoryTotalMiB: 81559,
    temperatureC: 40,
    powerW: 70,
    clockEventReasons: 0x1,
    eccUncorrectedVolatile: 0,
    eccCorrectedVolatile: 0,
    retiredPagesPending: false,
    pcieGenCurrent: 5,
    pcieGenMax: 5,
    pcieWidthCurrent: 16,
    pcieWidthMax: 16,
    at: 0,
    ...over
  }
}

t.test('health by the default policy, sample after sample (one GPU per case)', async (t) => {
  const cases: Array<{ name: string; steps: Array<Partial<GpuSample> | 'missing' | { xid: number }>; want: string[] }> =
    [
      { name: 'idle', steps: [{}, {}], want: ['healthy', 'healthy'] },
      {
        name: 'thermal bit: degraded on the second sample, healthy after two without',
        steps: [
          { clockEventReasons: 0x20 },
          { clockEventReasons: 0x20 },
          { clockEventReasons: 0x1 },
          { clockEventReasons: 0x1 }
        ],
        want: ['healthy', 'degraded:thermal-slowdown', 'degraded:thermal-slowdown', 'healthy']
      },
      {
        name: 'one thermal sample only',
        steps: [{ clockEventReasons: 0x40 }, {}, {}],
        want: ['healthy', 'healthy', 'healthy']
      },
      {
        name: 'SW power cap is normal under load',
        steps: [{ clockEventReasons: 0x4 }, { clockEventReasons: 0x4 }],
        want: ['healthy', 'healthy']
      },
      {
        name: 'uncorrected ECC fails at once; a reset (counter back to 0) heals',
        steps: [{}, { eccUncorrectedVolatile: 1 }, { eccUncorrectedVolatile: 2 }, { eccUncorrectedVolatile: 0 }],
        want: ['healthy', 'failed:ecc-uncorrected', 'failed:ecc-uncorrected', 'healthy']
      },
      {
        name: 'corrected ECC rising twice in a row',
        steps: [{ eccCorrectedVolatile: 1 }, { eccCorrectedVolatile: 5 }, { eccCorrectedVolatile: 9 }],
        want: ['healthy', 'healthy', 'degraded:ecc-corrected-rising']
      },
      {
        name: 'retired pages pending',
        steps: [{ retiredPagesPending: true }, { retiredPagesPending: false }],
        want: ['failed:retired-pages-pending', 'healthy']
      },
      {
        name: 'PCIe width below max; generation below max only counts when busy',
        steps: [
          { pcieWidthCurrent: 8 },
          { pcieWidthCurrent: 8 },
          { pcieWidthCurrent: 16, pcieGenCurrent: 1, utilizationPct: 0 },
          { pcieGenCurrent: 1, utilizationPct: 0 }
        ],
        want: ['healthy', 'degraded:pcie-degraded', 'degraded:pcie-degraded', 'healthy']
      },
      {
        name: 'missing fails; back again heals, and the fatal XID before it with it (a reset)',
        steps: [{}, { xid: 79 }, 'missing', {}],
        want: ['healthy', 'failed:xid-79', 'failed:xid-79,gpu-missing', 'healthy']
      },
      {
        name: 'application XID: counted only',
        steps: [{}, { xid: 13 }, { xid: 31 }],
        want: ['healthy', 'healthy', 'healthy']
      },
      {
        name: 'fatal XID stays over clean samples',
        steps: [{ xid: 48 }, {}, {}],
        want: ['failed:xid-48', 'failed:xid-48', 'failed:xid-48']
      }
    ]
  const m = new Mismatches()
  for (const c of cases) {
    const tr = new HealthTracker(healthPolicy())
    tr.know(0, { pciBusId: '00000000:00:00.0' })
    let seq = 0
    const got = c.steps.map((step) => {
      if (step === 'missing') tr.observeBlock([])
      else if ('xid' in step) tr.observeXid({ bus: '0000:00:00', code: step.xid, detail: '', seq: ++seq })
      else tr.observeBlock([sample(0, { pciBusId: '00000000:00:00.0', ...step })])
      const h = tr.snapshot()[0]?.health
      return h === undefined ? 'none' : h.reasons.length === 0 ? h.state : `${h.state}:${h.reasons.join(',')}`
    })
    m.check(c.name, 'states', got, c.want)
  }
  t.same(m.list, [])
})

t.test(
  'an admin clear ends a fatal XID and accepts the uncorrected count; a new XID or a rise fails again',
  async (t) => {
    const tr = new HealthTracker(healthPolicy())
    tr.observeBlock([sample(1, { eccUncorrectedVolatile: 3 })])
    tr.observeXid({ bus: '0000:01:00', code: 79, detail: '', seq: 10 })
    const states = [tr.snapshot()[0]?.health.reasons]
    states.push(tr.clear(1, 10)?.health.reasons)
    tr.observeXid({ bus: '0000:01:00', code: 79, detail: '', seq: 10 }) // replayed: at or below the mark
    tr.observeBlock([sample(1, { eccUncorrectedVolatile: 3 })])
    states.push(tr.snapshot()[0]?.health.reasons)
    tr.observeBlock([sample(1, { eccUncorrectedVolatile: 4 })])
    states.push(tr.snapshot()[0]?.health.reasons)
    t.same(states, [['xid-79', 'ecc-uncorrected'], [], [], ['ecc-uncorrected']])
  }
)

t.test('a delta holds only what changed, and nothing when nothing did', async (t) => {
  const tr = new HealthTracker(healthPolicy())
  tr.observeBlock([sample(0), sample(1)])
  const first = tr.snapshot()
  tr.observeBlock([sample(0, { at: 5000 }), sample(1, { utilizationPct: 90, at: 5000 })])
  const second = tr.snapshot()
  tr.observeXid({ bus: '0000:00:00', code: 79, detail: '', seq: 1 })
  const third = tr.snapshot()
  const m = new Mismatches()
  m.check('first report', 'full', telemetryDelta(null, first)?.full, true)
  m.check('same values, new time', 'delta', telemetryDelta(second, second), null)
  m.check(
    'utilization changed',
    'gpus',
    telemetryDelta(first, second)?.gpus.map((g) => Object.keys(g)),
    [['index', 'usage']]
  )
  m.check(
    'xid',
    'gpus',
    telemetryDelta(second, third)?.gpus.map((g) => [g.index, g.health?.state, g.xids?.last]),
    [[0, 'failed', 79]]
  )
  m.check('GPU gone', 'removed', telemetryDelta(first, first.slice(0, 1))?.removed, [1])
  m.check('warning only', 'warnings', telemetryDelta(first, first, ['w'])?.warnings, ['w'])
  t.same(m.list, [])
})

t.test(
  'a policy file is laid over the defaults; one that cannot be used is a configuration error saying why',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gpumesh-policy-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text)
      return join(dir, name)
    }
    const ok = await loadHealthPolicy(
      file(
        'ok.json',
        JSON.stringify({ fatalXids: [79], conditions: { 'pcie-degraded': 'ignore' }, hysteresisSamples: 3 })
      )
    )
    const m = new Mismatches()
    m.check('override', 'fatal XIDs', [...ok.fatalXids], [79])
    m.check('override', 'pcie-degraded', ok.conditions['pcie-degraded'], 'ignore')
    m.check('override', 'others keep their default', ok.conditions['gpu-missing'], 'failed')
    m.check('override', 'hysteresis', ok.hysteresisSamples, 3)
    m.check('no file', 'defaults', [...(await loadHealthPolicy(undefined)).fatalXids].length, 10)
    for (const [name, path, why] of [
      ['missing file', join(dir, 'none.json'), /cannot read the GPU health policy .*ENOENT/],
      ['not JSON', file('bad.json', '{fatal'), /cannot read the GPU health policy/],
      ['a word for an XID', file('word.json', '{"fatalXids":["79"]}'), /is not valid: .*fatalXids/],
      ['an unknown key', file('key.json', '{"fatalXid":[79]}'), /is not valid/],
      ['an unknown severity', file('sev.json', '{"conditions":{"gpu-missing":"fatal"}}'), /is not valid/]
    ] as const) {
      const err = (await loadHealthPolicy(path).catch((e: unknown) => e)) as {
        name?: string
        code?: string
        message?: string
      }
      m.check(
        name,
        'error',
        { name: err.name, code: err.code, says: why.test(err.message ?? '') },
        {
          name: 'ConfigError',
          code: 'ERR_HEALTH_POLICY',
          says: true
        }
      )
    }
    t.same(m.list, [])
  }
)
