// `gpumesh-agent detect` when nvidia-smi is missing, broken, hanging or
// printing garbage: it still exits 0 with valid facts, and says what failed.
import t from 'tap'
import { HostFacts } from '../protocol/host-facts.js'
import { schemaErrors } from '../protocol/validate.js'
import { detectJson, makeMachine, runDetect, warned } from './helpers/agent.js'

const PRIMARY_CALLS = 5

t.test('no nvidia-smi at all: a valid CPU host', async (t) => {
  const { facts } = await detectJson(t, null)
  t.same(schemaErrors(HostFacts, facts), [])
  t.same(facts.gpus, [])
  t.equal(facts.pool.key, 'cpu')
  t.ok(warned(facts, 'nvidia.missing', 'nvidia-smi'), 'says nvidia-smi is missing')
  t.ok(facts.cpu.logicalCores !== null && facts.memoryBytes !== null, 'host facts still detected')
})

t.test('driver not loaded (every call exits 9): one warning, no fallback calls', async (t) => {
  const { facts, calls } = await detectJson(t, makeMachine(t, {}))
  t.same(schemaErrors(HostFacts, facts), [])
  t.equal(facts.pool.key, 'cpu')
  const failed = facts.warnings.filter((w) => w.code === 'source.failed')
  t.equal(failed.length, 1, 'the same failure is reported once')
  t.match(failed[0]?.message, /^exit 9: NVIDIA-SMI has failed/)
  t.equal(failed[0]?.source.split(', ').length, PRIMARY_CALLS, 'naming every call that failed')
  t.equal(calls.length, PRIMARY_CALLS, 'fallback calls are skipped when the driver does not answer')
})

t.test('a hanging call is cut at the deadline; the rest still counts', async (t) => {
  const dir = makeMachine(t, {
    'L.txt': { capture: 'h100-1x-L-1.txt' },
    'nvlink-s.txt': { capture: 'h100-1x-nvlink-s-1.txt' },
    'topo-m.txt.hang': ''
  })
  const started = Date.now()
  // The deadline leaves the calls that answer time to do so on a loaded machine; the hung one sleeps an hour.
  const { facts } = await detectJson(t, dir, { GPUMESH_NVIDIA_SMI_TIMEOUT_MS: '3000' })
  t.ok(Date.now() - started < 60_000, 'detect does not wait for the hung call')
  t.ok(warned(facts, 'source.failed', 'nvidia-smi topo -m', /no answer within 3000 ms/), 'says topo -m timed out')
  t.equal(facts.gpus.length, 1)
  t.equal(facts.gpus[0]?.name, 'NVIDIA H100 80GB HBM3')
  t.same(facts.gpus[0]?.nvlink, { active: 18, total: 18, bandwidthGBs: 478.116 })
})

t.test('binary garbage and empty output become warnings', async (t) => {
  const dir = makeMachine(t, {
    'query-gpu.csv': Buffer.from([0x00, 0xde, 0xad, 0xbe, 0xef, 0x0a, 0xff]),
    'L.txt': '',
    'topo-m.txt': { capture: 'h100-sxm-8x-topo-m-1.txt' }
  })
  const { facts } = await detectJson(t, dir)
  t.same(schemaErrors(HostFacts, facts), [])
  t.ok(warned(facts, 'source.failed', 'nvidia-smi --query-gpu', /not text/), 'garbage reported')
  t.ok(warned(facts, 'source.failed', /nvidia-smi -L/, /empty output/), 'empty output reported')
  t.equal(facts.gpus.length, 8, 'GPUs known from the topology')
  t.same(
    facts.gpus.map((g) => g.name),
    Array(8).fill(null),
    'names are not invented'
  )
  t.equal(facts.pool.key, 'gpu-8x-nvlink')
  t.ok(warned(facts, 'gpu.unidentified'))
})

t.test("another command's output where topo -m belongs is rejected, not misread", async (t) => {
  const dir = makeMachine(t, { 'L.txt': { capture: 'h100-1x-L-1.txt' }, 'topo-m.txt': { capture: 'h100-1x-L-1.txt' } })
  const { facts } = await detectJson(t, dir)
  t.same(facts.topology.labels, [])
  t.ok(warned(facts, 'source.failed', 'nvidia-smi topo -m', /no topology header/))
  t.equal(facts.gpus.length, 1)
})

t.test('the readable summary', async (t) => {
  const dir = makeMachine(t, {
    'L.txt': { capture: 'h100-1x-L-1.txt' },
    'topo-m.txt': { capture: 'h100-sxm-8x-topo-m-1.txt' }
  })
  const r = await runDetect(t, dir, [])
  t.equal(r.exitCode, 0)
  t.match(r.stdout, /^Pool\s+\S+$/m)
  t.match(r.stdout, /NVIDIA H100 80GB HBM3/)
  t.match(r.stdout, /NVLink domains: \[0,1,2,3,4,5,6,7\]/)
  t.match(r.stdout, /NIC0\s+mlx5_0\s+0\s+PIX/)
  t.match(r.stdout, /gpu\.inconsistent .*1 listed, 8 in topo -m/, 'sources that disagree are reported')
})

t.test('bad flags are a configuration error with a clear message', async (t) => {
  const r = await runDetect(t, null, ['--smi-timeout', 'soon'])
  t.equal(r.exitCode, 78)
  t.match(r.stderr, /--smi-timeout.*must be a positive integer/)
  const help = await runDetect(t, null, ['--help'])
  t.equal(help.exitCode, 0)
  t.match(help.stdout, /--json/)
})
