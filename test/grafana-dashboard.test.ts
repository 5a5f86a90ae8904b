// The Grafana dashboard shipped in docs/grafana queries only what the
// coordinator exports: every metric name in its PromQL (panels and template
// variables) is a family on a real coordinator's /metrics, every GPU family
// is charted, and every expression parses (promtool check rules, with
// Grafana's variables filled in).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { GPU_METRIC_NAMES } from '../coordinator/telemetry/gpu-metrics.js'
import { startTestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { scrape } from './helpers/gpu-metrics.js'
import { Mismatches } from './helpers/mismatches.js'

const DASHBOARD = join(ROOT, 'docs/grafana/gpumesh-fleet.json')

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right'])
const KEYWORDS_TOO = new Set([...KEYWORDS, 'bool', 'offset', 'inf', 'nan'])

/** Metric names in a PromQL expression: identifiers that are not functions, keywords, labels, strings or durations. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/(?<![A-Za-z0-9_:])\d[\w.]*/g, ' ')
    .replace(new RegExp(`\\b(?:${[...KEYWORDS].join('|')})\\s*\\([^)]*\\)`, 'g'), ' ')
  const names = new Set<string>()
  for (const m of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = bare.slice((m.index ?? 0) + m[0].length).trimStart()
    if (after.startsWith('(') || KEYWORDS_TOO.has(m[0].toLowerCase())) continue
    names.add(m[0])
  }
  return [...names].sort()
}

/** Grafana's variables as a query would have them filled in. */
const fillVariables = (expr: string) =>
  expr.replace(/\$__(?:range|rate_interval|interval)\b/g, '5m').replace(/\$\w+/g, '.*')

interface Dashboard {
  panels: Array<{ title: string; targets?: Array<{ expr?: string }> }>
  templating: { list: Array<{ name: string; type: string; query?: string | { query?: string } }> }
}

/** Every PromQL expression of the dashboard with where it is; label_values(selector, label) gives its selector. */
function expressions(d: Dashboard): Array<[where: string, expr: string]> {
  const out: Array<[string, string]> = []
  for (const p of d.panels) for (const target of p.targets ?? []) if (target.expr) out.push([p.title, target.expr])
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '')
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(q)?.[1] ?? q
    out.push([`variable ${v.name}`, selector])
  }
  return out
}

t.test('the metric-name reader', async (t) => {
  const m = new Mismatches()
  for (const [expr, want] of [
    ['DCGM_FI_DEV_GPU_UTIL{Hostname=~"$host", pool=~"$pool"}', ['DCGM_FI_DEV_GPU_UTIL']],
    ['sum by (Hostname, gpu, xid) (increase(gpumesh_gpu_xid_total{a="b"}[$__range])) > 0', ['gpumesh_gpu_xid_total']],
    ['100 * sum(a{x="sum(b)"}) / (sum(a) + sum without (gpu) (c))', ['a', 'c']],
    ['sum(x) or vector(0)', ['x']],
    ['rate(y[5m]) > bool 1 unless on (gpu) z offset 5m', ['y', 'z']]
  ] as Array<[string, string[]]>)
    m.check(expr, 'names', metricNames(expr), want)
  t.same(m.list, [], 'names found in PromQL')
})

t.test('the fleet dashboard queries only metrics the coordinator exports, and all the GPU ones', async (t) => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard
  const exprs = expressions(dashboard)
  const c = await startTestCoordinator(t)
  const exported = new Set<string>()
  for (const [, name, type] of (await scrape(c)).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exported.add(name as string)
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(`${name}${s}`)
    if (type === 'summary') for (const s of ['_sum', '_count']) exported.add(`${name}${s}`)
  }
  const used = new Set(exprs.flatMap(([, e]) => metricNames(e)))
  t.same(
    exprs.flatMap(([where, e]) =>
      metricNames(e)
        .filter((n) => !exported.has(n))
        .map((n) => `${where}: ${n}`)
    ),
    [],
    'every metric the dashboard queries is on /metrics'
  )
  t.same(
    GPU_METRIC_NAMES.filter((n) => !used.has(n)),
    [],
    'every per-GPU family is charted'
  )

  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-dashboard-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const rules = join(dir, 'rules.yml')
  // JSON is YAML: one recording rule per expression, for promtool to parse.
  writeFileSync(
    rules,
    JSON.stringify({
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map(([, expr], i) => ({ record: `dashboard_expr_${i}`, expr: fillVariables(expr) }))
        }
      ]
    })
  )
  const check = await execa('promtool', ['check', 'rules', rules], { reject: false })
  t.equal(check.exitCode, 0, `promtool check rules:\n${check.stdout}\n${check.stderr}`)
})
