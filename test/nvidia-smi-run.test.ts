// nvidia-smi calls through the test double: exit codes, hangs, garbage and
// empty output each become a typed error, and parsers reject what is not
// the command's output.
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { findNvidiaSmi, nvidiaSmi, SmiError } from '../agent/detect/nvidia/run.js'
import { parseList } from '../agent/detect/nvidia/parse-list.js'
import { parseNvlink } from '../agent/detect/nvidia/parse-nvlink.js'
import { parseQueryGpu } from '../agent/detect/nvidia/parse-query-gpu.js'
import { parseQueryText } from '../agent/detect/nvidia/parse-q-text.js'
import { parseQueryXml } from '../agent/detect/nvidia/parse-q-xml.js'
import { parseTable } from '../agent/detect/nvidia/parse-table.js'
import { parseTopo } from '../agent/detect/nvidia/parse-topo.js'
import { ParseError } from '../agent/detect/nvidia/text.js'
import { NVIDIA_SMI_DOUBLE, capture } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'

function machine(t: Test, files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-smi-'))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  process.env.GPUMESH_SMI_FIXTURE = dir
  return dir
}

const smi = (timeoutMs = 2000) => nvidiaSmi({ binary: NVIDIA_SMI_DOUBLE, timeoutMs })

t.test('replays a capture', async (t) => {
  const topo = capture('h100-sxm-8x-topo-m-1.txt')
  machine(t, { 'topo-m.txt': topo })
  t.equal(await smi()(['topo', '-m']), topo, 'bytes as captured, tabs and trailing spaces kept')
})

t.test('a missing capture fails like a host without driver', async (t) => {
  machine(t, {})
  const err = await smi()(['-L']).catch((e: unknown) => e)
  t.type(err, SmiError)
  t.equal((err as SmiError).code, 'ERR_SMI_EXIT')
  t.match((err as SmiError).message, /^exit 9: NVIDIA-SMI has failed/)
})

t.test('a hang is killed at the deadline', async (t) => {
  machine(t, { 'L.txt.hang': '' })
  const started = Date.now()
  const err = await smi(300)(['-L']).catch((e: unknown) => e)
  t.equal((err as SmiError).code, 'ERR_SMI_TIMEOUT')
  t.ok(Date.now() - started < 2000, 'returns soon after the deadline')
})

t.test('binary garbage is not text', async (t) => {
  machine(t, { 'L.txt': Buffer.from([0x47, 0x50, 0x55, 0x00, 0xff, 0xfe, 0x01, 0x02, 0x80]) })
  const err = await smi()(['-L']).catch((e: unknown) => e)
  t.equal((err as SmiError).code, 'ERR_SMI_OUTPUT')
  t.match((err as SmiError).message, /not text/)
})

t.test('empty output is an error', async (t) => {
  machine(t, { 'nvlink-s.txt': '' })
  const err = await smi()(['nvlink', '-s']).catch((e: unknown) => e)
  t.equal((err as SmiError).code, 'ERR_SMI_OUTPUT')
  t.match((err as SmiError).message, /empty output/)
})

t.test('a non-zero exit with output reports what it printed', async (t) => {
  machine(t, {
    'q-x.xml': 'Unable to determine the device handle for GPU0000:1B:00.0: Unknown Error\n',
    'q-x.xml.exit': '15'
  })
  const err = await smi()(['-q', '-x']).catch((e: unknown) => e)
  t.equal(
    (err as SmiError).message,
    'exit 15: Unable to determine the device handle for GPU0000:1B:00.0: Unknown Error'
  )
})

t.test('findNvidiaSmi: override, PATH, absent', async (t) => {
  // A PATH folder holding an executable named nvidia-smi (the replay, linked).
  const bin = mkdtempSync(join(tmpdir(), 'gpumesh-path-'))
  t.teardown(() => rmSync(bin, { recursive: true, force: true }))
  symlinkSync(NVIDIA_SMI_DOUBLE, join(bin, 'nvidia-smi'))
  const cases: Array<[string, Promise<string | null>, string | null]> = [
    ['an executable override', findNvidiaSmi(NVIDIA_SMI_DOUBLE), NVIDIA_SMI_DOUBLE],
    ['a missing override', findNvidiaSmi('/nonexistent/nvidia-smi'), null],
    ['a directory is not an executable', findNvidiaSmi(bin), null],
    ['the first on PATH', findNvidiaSmi(undefined, `/nonexistent:${bin}`), join(bin, 'nvidia-smi')],
    ['relative PATH entries are ignored', findNvidiaSmi(undefined, '/nonexistent:relative/dir'), null]
  ]
  const m = new Mismatches()
  for (const [name, found, want] of cases) m.check(name, 'found', await found, want)
  t.same(m.list, [], 'where nvidia-smi is found')
})

t.test('parsers reject output that is not theirs', async (t) => {
  const garbage = [
    '',
    '\n\n',
    'Segmentation fault (core dumped)\n',
    capture('h100-1x-L-1.txt').replace(/GPU/g, 'XPU'),
    '\u001b[31m###\u001b[0m\n'
  ]
  const parsers: Record<string, (output: string) => unknown> = {
    parseTopo,
    parseList,
    parseNvlink,
    parseQueryGpu: (o) => parseQueryGpu(o),
    parseQueryXml,
    parseQueryText,
    parseTable
  }
  const cases: Array<[string, () => unknown]> = Object.entries(parsers).flatMap(([name, parse]) =>
    garbage.map((g): [string, () => unknown] => [`${name} on ${JSON.stringify(g.slice(0, 30))}`, () => parse(g)])
  )
  // Each parser also rejects another command's real output.
  cases.push(
    ['parseTopo on -L', () => parseTopo(capture('h100-1x-L-1.txt'))],
    ['parseList on topo -m', () => parseList(capture('h100-8x-topo-m-1.txt'))],
    ['parseQueryXml on -q', () => parseQueryXml(capture('h200-1x-q-mig-1.txt'))],
    ['parseQueryText on -q -x', () => parseQueryText(capture('a100-sxm4-80gb-1x-q-x-1.xml'))],
    ['parseTable on topo -m', () => parseTable(capture('h100-4x-topo-m-1.txt'))],
    ['parseQueryGpu on an error message', () => parseQueryGpu('Field "compute_cap" is not a valid field to query.\n')]
  )
  const accepted: string[] = []
  for (const [name, parse] of cases) {
    try {
      parse()
      accepted.push(`${name}: accepted`)
    } catch (err) {
      if (!(err instanceof ParseError)) accepted.push(`${name}: threw ${String(err)} instead of a ParseError`)
    }
  }
  t.same(accepted, [], "every parser refuses garbage and other commands' output with a ParseError")
})

t.test('a topology row with lost cells keeps only what can be placed', async (t) => {
  const text =
    '\tGPU0\tGPU1\tGPU2\tCPU Affinity\tNUMA Affinity\n' +
    'GPU0\t X \tNV4\tSYS\t0-7\t0\n' +
    'GPU1\tNV4\t X \t0-7\t0\n' + // one cell lost after the diagonal
    'GPU2\t X \tSYS\tSYS\t0-7\t0\n' // self cell in the wrong place
  const { value, problems } = parseTopo(text)
  t.same(value.matrix[0], ['X', 'NV4', 'SYS'])
  t.same(value.matrix[1], ['NV4', 'X', null], 'cells up to the diagonal kept, the lost one is null')
  t.same(value.matrix[2], [null, null, null], 'a row whose self cell is misplaced is not trusted')
  t.equal(problems.length, 2)
})
