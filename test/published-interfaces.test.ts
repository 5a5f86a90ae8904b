// The interfaces other tools read pass those tools' own linters: the
// OpenAPI document (Redocly CLI, recommended rules) and the Prometheus
// exposition (promtool check metrics), both fetched over HTTP from a real
// coordinator. A linter that is not installed fails the test: it is part of
// the check, not an option (promtool comes with Debian's prometheus package).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { addHost, startTestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { gpuTelemetry, rawTelemetryHost } from './helpers/gpu-metrics.js'

const REDOCLY = join(ROOT, 'node_modules/.bin/redocly')
/** Routes that answer without a bearer token (probes, scrapers, the document itself). */
const PUBLIC = ['/livez', '/readyz', '/metrics', '/openapi.json']

t.test(
  "/openapi.json passes Redocly CLI's recommended rules; public routes say so, the rest carry the bearer scheme",
  async (t) => {
    const c = await startTestCoordinator(t)
    const r = await fetch(`${c.api}/openapi.json`)
    t.equal(r.status, 200)
    const doc = (await r.json()) as {
      security?: unknown
      paths: Record<string, Record<string, { security?: unknown[]; operationId?: string }>>
    }
    const dir = mkdtempSync(join(tmpdir(), 'gpumesh-openapi-'))
    t.teardown(() => {
      rmSync(dir, { recursive: true, force: true })
    })
    const file = join(dir, 'openapi.json')
    writeFileSync(file, JSON.stringify(doc, null, 2))

    // Warnings count too: the recommended rules name what client generators need.
    const lint = await execa(REDOCLY, ['lint', '--extends', 'recommended', '--format', 'json', file], {
      reject: false,
      cwd: dir,
      env: { REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' }
    })
    let problems: string[]
    try {
      const report = JSON.parse(lint.stdout) as {
        problems: Array<{ ruleId: string; severity: string; message: string; location?: Array<{ pointer?: string }> }>
      }
      problems = report.problems.map(
        (p) => `${p.severity} ${p.ruleId} at ${p.location?.[0]?.pointer ?? '?'}: ${p.message}`
      )
    } catch {
      problems = [
        `redocly did not report (exit ${String(lint.exitCode)}): ${lint.stdout.slice(0, 2000)} ${lint.stderr.slice(0, 2000)}`
      ]
    }
    t.same({ exitCode: lint.exitCode, problems }, { exitCode: 0, problems: [] }, 'redocly lint --extends recommended')

    const security: string[] = []
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const open = Array.isArray(op.security) && op.security.length === 0
        if (open !== PUBLIC.includes(path))
          security.push(
            `${method.toUpperCase()} ${path}: ${open ? 'marked unauthenticated' : 'carries the bearer scheme'}`
          )
      }
    }
    for (const path of PUBLIC) if (doc.paths[path] === undefined) security.push(`${path} is missing from the document`)
    t.same(security, [], 'operations whose security in the document is not what the route does')
    t.same(doc.security, [{ bearer: [] }], 'the bearer scheme is the default')

    // What the document says about security is what the server does.
    const answers = await Promise.all(
      PUBLIC.flatMap((path) => [path, `${path}?verbose=1`]).map(
        async (url) => `${url} ${(await fetch(c.api + url)).status}`
      )
    )
    t.same(
      answers,
      PUBLIC.flatMap((path) => [`${path} 200`, `${path}?verbose=1 400`]),
      'public routes answer without a token, and refuse what they do not know (the 4xx they document)'
    )
  }
)

t.test('/metrics after some traffic passes promtool check metrics', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  // A host reporting GPU telemetry, so the per-GPU families have series to lint.
  await rawTelemetryHost(t, c, 'gpus', {
    full: true,
    gpus: [gpuTelemetry(0, { xids: { last: 79, counts: { '79': 1 } } }), gpuTelemetry(1, { usage: null })]
  })
  const run = { driver: 'process', command: ['sleep', '1'] }
  for (const body of [
    { name: 'w1', kind: 'session', pool: 'h100-80gb-8x-nvlink', gpus: 1, run },
    { name: 'bad', kind: 'session', gpus: 0 }
  ])
    await c.call('POST', '/v1/workloads', body)
  for (const path of ['/v1/hosts', '/v1/pools', '/v1/workloads', '/v1/no-such-route']) await c.call('GET', path)
  const r = await fetch(`${c.api}/metrics`)
  t.equal(r.status, 200)
  const text = await r.text()
  t.match(text, /^gpumesh_http_requests_total\{[^}]*status="400"[^}]*\} \d+$/m, 'the traffic is in it')
  t.match(text, /^gpumesh_hosts\{state="ready"\} 2$/m)
  t.match(text, /^DCGM_FI_DEV_GPU_UTIL\{[^}]*Hostname="gpus"[^}]*\} 10$/m, 'per-GPU series are in it')

  const check = await execa('promtool', ['check', 'metrics'], { input: text, reject: false })
  // dcgm-exporter's label modelName is camelCase, which promtool's lint dislikes; the DCGM families keep it so
  // dashboards written for dcgm-exporter work (DESIGN). Only that lint, and only for them, is let through:
  // exit 3 is "lint problems", anything else (1: unparsable) fails.
  const problems = `${check.stdout}\n${check.stderr}`
    .split('\n')
    .filter((l) => l.trim() !== '')
    .filter((l) => !/^DCGM_FI_DEV_[A-Z_]+ label names should be written in 'snake_case' not 'camelCase'$/.test(l))
  t.same(
    { exitCode: check.exitCode === 3 && problems.length === 0 ? 0 : check.exitCode, problems },
    { exitCode: 0, problems: [] },
    'promtool check metrics'
  )
})
