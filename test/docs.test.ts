// The docs stand alone and stay navigable: every relative link in README.md,
// CONTRIBUTING.md and docs/ reaches a file of this repository (and, with a
// #fragment, a heading of it), and the README stays a front door.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, relative, resolve } from 'node:path'
import t from 'tap'
import { ROOT } from './helpers/fixtures.js'

const README_MAX_LINES = 200

function docFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`)
  return ['README.md', 'CONTRIBUTING.md', ...docs.sort()]
}

/** Markdown without fenced code blocks, where `#` starts no heading. */
function withoutFences(text: string): string {
  return text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '')
}

/** ... and without inline code, where link syntax means nothing. */
function prose(text: string): string {
  return withoutFences(text).replace(/`[^`\n]*`/g, '')
}

function linkTargets(text: string): string[] {
  const body = prose(text)
  const inline = [...body.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1] ?? '')
  const reference = [...body.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/gm)].map((m) => m[1] ?? '')
  return [...inline, ...reference]
}

/** Heading anchors as GitHub generates them (duplicates get -1, -2, ...). */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>()
  const out = new Set<string>()
  for (const m of withoutFences(text).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const heading = (m[1] ?? '').replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    const base = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .trim()
      .replace(/\s/g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.add(n === 0 ? base : `${base}-${n}`)
  }
  return out
}

function brokenLinks(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const broken: string[] = []
  for (const target of linkTargets(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
      if (!/^(https?|mailto):/i.test(target)) broken.push(`${file}: ${target} (not a web link)`)
      continue
    }
    const [path = '', fragment] = target.split('#', 2)
    const absolute = path === '' ? join(ROOT, file) : resolve(ROOT, dirname(file), decodeURIComponent(path))
    const inRepo = relative(ROOT, absolute)
    if (inRepo.startsWith('..') || isAbsolute(inRepo)) {
      broken.push(`${file}: ${target} (outside the repository)`)
    } else if (!existsSync(absolute)) {
      broken.push(`${file}: ${target} (no such file)`)
    } else if (
      fragment !== undefined &&
      absolute.endsWith('.md') &&
      !anchors(readFileSync(absolute, 'utf8')).has(fragment)
    ) {
      broken.push(`${file}: ${target} (no such heading)`)
    }
  }
  return broken
}

t.test('every relative link in the docs reaches a file and heading of this repository', async (t) => {
  const files = docFiles()
  t.ok(files.length > 2, 'docs/ has documents')
  t.same(files.flatMap(brokenLinks), [], 'broken links')
})

t.test(`README.md has at most ${README_MAX_LINES} lines`, async (t) => {
  const lines = readFileSync(join(ROOT, 'README.md'), 'utf8').split('\n')
  if (lines.at(-1) === '') lines.pop()
  t.ok(lines.length <= README_MAX_LINES, `README.md has ${lines.length} lines (details belong in docs/)`)
})

t.test('the link checker finds what it must', async (t) => {
  const sample = [
    '# A `code` title (v2)',
    '## Same',
    '## Same',
    '[ok](#a-code-title-v2) [dup](#same-1) [web](https://example.org) ![img](x.png "t")',
    '```',
    '[in code](nowhere.md)',
    '```',
    '`[inline](nowhere.md)`',
    '[ref]: ../outside.md'
  ].join('\n')
  t.same(
    { targets: linkTargets(sample), anchors: [...anchors(sample)] },
    {
      targets: ['#a-code-title-v2', '#same-1', 'https://example.org', 'x.png', '../outside.md'],
      anchors: ['a-code-title-v2', 'same', 'same-1']
    }
  )
})
