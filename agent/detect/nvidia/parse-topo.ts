// Parser for `nvidia-smi topo -m`. Real captures differ a lot: tab or space
// separated, NIC columns named NIC0.. with a "NIC Legend" or (older drivers)
// named mlx5_0.., with or without "GPU NUMA ID", ANSI escapes around the
// header, empty CPU affinity cells, and pastes with separators missing. We
// keep every cell we can place with certainty and leave the rest null.
import { ParseError, stripAnsi, type Parsed } from './text.js'

export interface TopoGpuAttributes {
  cpuAffinity: string | null
  numaAffinity: string | null
  gpuNumaId: string | null
}

export interface TopoMatrix {
  /** Matrix row/column names in printed order. */
  labels: string[]
  /** matrix[row][col], rows in `labels` order; null = not readable. */
  matrix: Array<Array<string | null>>
  /** Per-row attributes (CPU/NUMA affinity) for GPU rows. */
  attributes: Map<string, TopoGpuAttributes>
  /** NIC Legend: NIC0 -> mlx5_0. */
  nicLegend: Map<string, string>
}

const LINK = /^(X|SYS|NODE|PHB|PXB|PIX|SOC|NV\d+)$/
const ATTRIBUTE_VALUE = /^(\d[\d,-]*|N\/A)$/
const ATTRIBUTE_COLUMNS = ['CPU Affinity', 'NUMA Affinity', 'GPU NUMA ID']

export function isLinkCell(cell: string): boolean {
  return LINK.test(cell)
}

export function parseTopo(output: string): Parsed<TopoMatrix> {
  const problems: string[] = []
  const lines = stripAnsi(output).split(/\r?\n/)
  const headerAt = lines.findIndex((l) => /^\s/.test(l) && /\bGPU\d+\b/.test(l))
  if (headerAt < 0) throw new ParseError('no topology header (a line of GPU0, GPU1, ... column names) found')
  const header = splitHeader(lines[headerAt] as string)
  const firstAttribute = header.findIndex((h) => ATTRIBUTE_COLUMNS.includes(h) || /\s/.test(h))
  const labels = firstAttribute < 0 ? header : header.slice(0, firstAttribute)
  const attributeNames = firstAttribute < 0 ? [] : header.slice(firstAttribute)
  const column = new Map(labels.map((l, i) => [l, i]))
  const rows = new Map<string, Array<string | null>>()
  const attributes = new Map<string, TopoGpuAttributes>()
  const nicLegend = new Map<string, string>()

  let section: 'matrix' | 'legend' | 'nic-legend' = 'matrix'
  for (const raw of lines.slice(headerAt + 1)) {
    const line = raw.replace(/\s+$/, '')
    if (line.trim() === '') continue
    if (/^\s*Legend:/.test(line)) {
      section = 'legend'
      continue
    }
    if (/^\s*NIC Legend:/.test(line)) {
      section = 'nic-legend'
      continue
    }
    if (section === 'nic-legend') {
      const m = /^\s*(NIC\d+):\s*(\S+)$/.exec(line)
      if (m !== null) nicLegend.set(m[1] as string, m[2] as string)
      else problems.push(`unreadable NIC legend line: ${JSON.stringify(line.trim())}`)
      continue
    }
    if (section === 'legend') continue
    const label = /^(\S+)/.exec(line)?.[1]
    const k = label === undefined ? undefined : column.get(label)
    if (label === undefined || k === undefined) {
      problems.push(`line does not start with a matrix label: ${JSON.stringify(line.trim().slice(0, 60))}`)
      continue
    }
    if (rows.has(label)) {
      problems.push(`row ${label} appears twice; kept the first`)
      continue
    }
    const { tokens, tail } = splitRow(raw.slice(raw.indexOf(label) + label.length))
    rows.set(label, placeCells(label, k, tokens, labels.length, problems))
    if (label.startsWith('GPU') && attributeNames.length > 0)
      attributes.set(label, readAttributes(label, attributeNames, tail, problems))
  }

  const matrix = labels.map((l) => {
    const row = rows.get(l)
    if (row === undefined) {
      problems.push(`row ${l} is missing`)
      return labels.map(() => null)
    }
    return row
  })
  return { value: { labels, matrix, attributes, nicLegend }, problems }
}

function splitHeader(line: string): string[] {
  const parts = line.includes('\t') ? line.split('\t') : line.trim().split(/ {2,}/)
  return parts.map((p) => p.trim()).filter((p) => p !== '')
}

/**
 * Split what follows a row label into link tokens and the attribute tail.
 * Tabs keep empty cells (an empty CPU affinity is printed as nothing between
 * two tabs); spaces cannot, so space-separated rows only lose that case.
 */
function splitRow(rest: string): { tokens: string[]; tail: string[] } {
  const tabbed = rest.includes('\t')
  const cells = tabbed ? rest.replace(/^\t/, '').replace(/\s+$/, '').split('\t') : rest.trim().split(/\s+/)
  const tokens: string[] = []
  let i = 0
  for (; i < cells.length; i++) {
    const words = (cells[i] as string)
      .trim()
      .split(/\s+/)
      .filter((w) => w !== '')
    if (words.length === 0 || ATTRIBUTE_VALUE.test(words[0] as string)) break
    tokens.push(...words)
  }
  return { tokens, tail: cells.slice(i).map((c) => c.trim()) }
}

/**
 * Put tokens into their columns. Tokens before the first unreadable one are
 * aligned from the left, tokens after the last unreadable one from the right;
 * a part is kept only when its "X" falls on the diagonal (or it has none).
 */
function placeCells(
  label: string,
  diagonal: number,
  tokens: string[],
  width: number,
  problems: string[]
): Array<string | null> {
  const row: Array<string | null> = new Array<string | null>(width).fill(null)
  const bad = tokens.map((t, i) => (isLinkCell(t) ? -1 : i)).filter((i) => i >= 0)
  if (bad.length === 0 && tokens.length === width) {
    if (tokens[diagonal] === 'X') return tokens
    problems.push(`row ${label}: self cell is not at column ${diagonal}; row ignored`)
    return row
  }
  // With no unreadable token but a wrong count, the self cell divides the
  // row: the side it lines up with is sound, the other lost or gained cells.
  const self = tokens.indexOf('X')
  const firstBad = bad.length > 0 ? (bad[0] as number) : self === diagonal ? self + 1 : 0
  const lastBad =
    bad.length > 0
      ? (bad[bad.length - 1] as number)
      : self >= 0 && width - (tokens.length - self) === diagonal
        ? self - 1
        : tokens.length
  const left = tokens.slice(0, firstBad)
  const right = tokens.slice(lastBad + 1)
  const anchored = (cells: string[], offset: number) => cells.every((c, i) => (c === 'X') === (offset + i === diagonal))
  if (left.length <= width && anchored(left, 0))
    left.forEach((c, i) => {
      row[i] = c
    })
  const rightStart = width - right.length
  if (right.length > 0 && rightStart >= left.length && anchored(right, rightStart))
    right.forEach((c, i) => {
      row[rightStart + i] = c
    })
  const unread = row.filter((c) => c === null).length
  const what = bad.map((i) => JSON.stringify(tokens[i])).join(', ')
  problems.push(
    `row ${label}: ${unread} of ${width} cells unreadable${what === '' ? ` (${tokens.length} cells printed)` : ` (${what})`}`
  )
  return row
}

function readAttributes(label: string, names: string[], tail: string[], problems: string[]): TopoGpuAttributes {
  // nvidia-smi pads after "NUMA Affinity" with an extra tab, so the first two
  // attributes are positional and the rest are the non-empty cells after them.
  const values = [tail[0] ?? '', tail[1] ?? '', ...tail.slice(2).filter((c) => c !== '')]
  const get = (name: string): string | null => {
    const i = names.indexOf(name)
    const v = i < 0 ? undefined : values[i]
    return v === undefined || v === '' ? null : v
  }
  const attrs = { cpuAffinity: get('CPU Affinity'), numaAffinity: get('NUMA Affinity'), gpuNumaId: get('GPU NUMA ID') }
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && !ATTRIBUTE_VALUE.test(v)) problems.push(`row ${label}: unreadable ${k} ${JSON.stringify(v)}`)
  }
  return attrs
}
