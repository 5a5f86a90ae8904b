// The import graph reads protocol → common → {agent, coordinator} → cli:
// agent/ and coordinator/ are peers that never import each other, product
// code never reads test/ or bench/, and bench/ leans on test/helpers only
// (never the other way). Every relative import in the tree is checked.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import t from 'tap'
import { ROOT } from './helpers/fixtures.js'

/** Which top-level folders each folder may import from (itself included). */
const ALLOWED: Record<string, string[]> = {
  protocol: ['protocol'],
  common: ['protocol', 'common'],
  agent: ['protocol', 'common', 'agent'],
  coordinator: ['protocol', 'common', 'coordinator'],
  cli: ['protocol', 'common', 'agent', 'coordinator', 'cli'],
  scripts: ['protocol', 'common', 'scripts'],
  bench: ['protocol', 'common', 'agent', 'coordinator', 'cli', 'bench', 'test/helpers'],
  test: ['protocol', 'common', 'agent', 'coordinator', 'cli', 'scripts', 'test']
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'(\.{1,2}\/[^']+)'/g

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = join(dir, d.name)
    if (d.isDirectory()) return d.name === 'node_modules' ? [] : sources(p)
    return d.name.endsWith('.ts') ? [p] : []
  })
}

/** The layer a repository path belongs to: its top folder (test/helpers apart). */
function layer(path: string): string {
  const [top, second] = path.split('/')
  return top === 'test' && second === 'helpers' ? 'test/helpers' : (top ?? '')
}

t.test('every relative import stays inside the layers its folder may use', async (t) => {
  const violations: string[] = []
  let imports = 0
  for (const top of Object.keys(ALLOWED)) {
    for (const file of sources(join(ROOT, top))) {
      const from = relative(ROOT, file)
      for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
        imports++
        const target = relative(ROOT, resolve(dirname(file), m[1] as string))
        const to = layer(target)
        const allowed = ALLOWED[top] as string[]
        const ok = allowed.includes(to) || (to === 'test/helpers' && allowed.includes('test'))
        if (!ok) violations.push(`${from} imports ${target} (${top}/ may import ${allowed.join(', ')})`)
      }
    }
  }
  if (imports < 300) violations.push(`the scan found only ${imports} imports: is ROOT right?`)
  t.same(violations, [], 'imports that cross a layer the wrong way')
})

/**
 * Rooms inside the coordinator: the store knows nothing of HTTP, the event
 * relay, the mesh or the scheduling loop (events/ may import store/, never
 * the other way), and the scheduler apart from its loop is pure: no store,
 * no I/O, no packages.
 */
const PURE_SCHEDULER = (path: string): boolean =>
  path.startsWith('coordinator/scheduler/') && path !== 'coordinator/scheduler/loop.ts'
const ROOMS: Array<{ room: (path: string) => boolean; name: string; may: (target: string) => boolean }> = [
  {
    room: (p) => p.startsWith('coordinator/store/'),
    name: 'coordinator/store/ imports only protocol/, common/, store/ and the pure scheduler',
    may: (t) => /^(protocol|common|coordinator\/store)\//.test(t) || PURE_SCHEDULER(t)
  },
  {
    room: PURE_SCHEDULER,
    name: 'the pure scheduler (coordinator/scheduler/ but loop.ts) imports only protocol/ and itself',
    may: (t) => t.startsWith('protocol/') || PURE_SCHEDULER(t)
  }
]
const ANY_IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)'([^']+)'/g

t.test(
  'inside the coordinator, store/ stands below http/, events/ and the scheduling loop; the scheduler is pure',
  async (t) => {
    const violations: string[] = []
    for (const file of sources(join(ROOT, 'coordinator'))) {
      const from = relative(ROOT, file)
      const rooms = ROOMS.filter((r) => r.room(from))
      for (const m of readFileSync(file, 'utf8').matchAll(ANY_IMPORT)) {
        const spec = m[1] as string
        const target = spec.startsWith('.')
          ? relative(ROOT, resolve(dirname(file), spec)).replace(/\.js$/, '.ts')
          : `package ${spec}`
        for (const r of rooms) {
          const packageOk = !PURE_SCHEDULER(from) && !spec.startsWith('.')
          if (!packageOk && !r.may(target)) violations.push(`${from} imports ${target} (${r.name})`)
        }
      }
    }
    t.same(violations, [], 'imports that cross a room of the coordinator the wrong way')
  }
)
