// Reading a workload spec file (JSON or YAML, one spec per file). Syntax
// errors are reported with line and column here, before anything is sent;
// whether the spec itself is valid is the API's call (it answers VALIDATION).
import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { LineCounter, parseAllDocuments } from 'yaml'
import { CliError } from './client.js'
import { jsonSyntaxProblem } from './json-syntax.js'

export class SpecSyntaxError extends CliError {
  constructor(
    readonly source: string,
    readonly line: number,
    readonly column: number,
    message: string,
    context = ''
  ) {
    super(`${source}: line ${line}, column ${column}: ${message}${context === '' ? '' : `\n${context}`}`)
    this.name = 'SpecSyntaxError'
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** The text of `file`, or of standard input for `-`. */
export async function readSpecText(file: string): Promise<{ text: string; source: string }> {
  if (file === '-') return { text: await readStdin(), source: '<stdin>' }
  try {
    return { text: await readFile(file, 'utf8'), source: file }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new CliError(
      `cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'it is a folder' : (e.code ?? e.message)}`
    )
  }
}

/** 1-based line and column of a character offset. */
function position(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)))
  const lines = before.split(/\r\n|\r|\n/)
  return { line: lines.length, column: (lines[lines.length - 1]?.length ?? 0) + 1 }
}

/** The offending line with a caret under the column, indented; long lines (minified JSON) are cut around it. */
function caret(text: string, line: number, column: number): string {
  const src = text.split(/\r\n|\r|\n/)[line - 1]
  if (src === undefined) return ''
  const from = src.length > 100 ? Math.max(0, column - 60) : 0
  const shown = (from > 0 ? '…' : '') + src.slice(from, from + 100) + (from + 100 < src.length ? '…' : '')
  return `  ${shown}\n  ${' '.repeat(Math.max(0, column - 1 - from + (from > 0 ? 1 : 0)))}^`
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text)
  } catch (err) {
    const located = jsonSyntaxProblem(text)
    const where = position(text, located?.offset ?? text.trimEnd().length)
    const what = located?.message ?? (err as Error).message
    throw new SpecSyntaxError(
      source,
      where.line,
      where.column,
      `invalid JSON: ${what}`,
      caret(text, where.line, where.column)
    )
  }
}

function parseYaml(text: string, source: string): unknown {
  const lineCounter = new LineCounter()
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: true })
  if (!Array.isArray(docs) || docs.length === 0)
    throw new SpecSyntaxError(source, 1, 1, 'the file holds no workload spec')
  for (const doc of docs) {
    const err = doc.errors[0]
    if (err !== undefined) {
      const pos = err.linePos?.[0] ?? lineCounter.linePos(err.pos[0])
      // yaml appends " at line L, column C:" and a code excerpt; the caret below replaces both.
      const what = (err.message.split('\n')[0] ?? err.message).replace(/ at line \d+, column \d+:?$/, '')
      throw new SpecSyntaxError(source, pos.line, pos.col, `invalid YAML: ${what}`, caret(text, pos.line, pos.col))
    }
  }
  if (docs.length > 1) {
    const second = docs[1]?.range[0] ?? 0
    const pos = lineCounter.linePos(second)
    throw new SpecSyntaxError(
      source,
      pos.line,
      pos.col,
      `one workload spec per file, but this file has ${docs.length} YAML documents`
    )
  }
  return docs[0]?.toJS({ maxAliasCount: 100 })
}

/**
 * The spec in `text`. `.json` files are JSON, `.yaml`/`.yml` YAML; anything
 * else (stdin included) is JSON when it looks like JSON and parses, else YAML.
 */
export function parseSpec(raw: string, source: string): Record<string, unknown> {
  // Editors on some systems save a byte-order mark, which JSON.parse refuses.
  const text = raw.startsWith('\uFEFF') ? raw.slice(1) : raw
  const ext = extname(source).toLowerCase()
  let value: unknown
  if (ext === '.json') value = parseJson(text, source)
  else if (ext === '.yaml' || ext === '.yml') value = parseYaml(text, source)
  else if (/^\s*[{[]/.test(text)) {
    try {
      value = JSON.parse(text)
    } catch {
      // YAML flow style ({name: x}) also starts with a brace; if it is not that either, the JSON error says more.
      try {
        value = parseYaml(text, source)
      } catch {
        value = parseJson(text, source)
      }
    }
  } else value = parseYaml(text, source)
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got =
      value === null || value === undefined ? 'nothing' : Array.isArray(value) ? 'a list' : `a ${typeof value}`
    throw new SpecSyntaxError(
      source,
      1,
      1,
      `expected one workload spec (a mapping with name, kind, run, ...), got ${got}`
    )
  }
  return value as Record<string, unknown>
}
