// The `gpumesh` admin CLI, run as a subprocess against a real coordinator:
// tables and --json (which must equal the API's resources), pagination,
// spec files, tokens and roles, the event stream, and the error messages
// for a refused token, an absent coordinator and a broken spec file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa, type ResultPromise } from 'execa'
import t, { type Test } from 'tap'
import { jsonSyntaxProblem } from '../cli/json-syntax.js'
import { SseParser } from '../protocol/sse.js'
import { cleanEnv } from './helpers/agent.js'
import { ADMIN_TOKEN, addHost, eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { Mismatches } from './helpers/mismatches.js'
import { freePort } from './helpers/redis.js'

const CLI = join(ROOT, 'dist/cli/main.js')
const H100 = 'h100-80gb-8x-nvlink'
const run = { driver: 'process', command: ['python3', 'serve.py'] }

interface CliRun {
  exitCode: number
  stdout: string
  stderr: string
}

async function gpumesh(
  api: string,
  args: string[],
  options: { token?: string | null; input?: string; env?: Record<string, string> } = {}
): Promise<CliRun> {
  const token = options.token === undefined ? ADMIN_TOKEN : options.token
  const env = cleanEnv({ GPUMESH_API: api, ...(token === null ? {} : { GPUMESH_TOKEN: token }), ...options.env })
  const r = await execa(process.execPath, [CLI, ...args], {
    env,
    extendEnv: false,
    reject: false,
    timeout: 60_000,
    ...(options.input === undefined ? {} : { input: options.input })
  })
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) }
}

/** Runs the CLI and expects exit 0; returns stdout. */
async function ok(
  t: Test,
  c: TestCoordinator | string,
  args: string[],
  options: Parameters<typeof gpumesh>[2] = {}
): Promise<string> {
  const r = await gpumesh(typeof c === 'string' ? c : c.api, args, options)
  t.equal(
    r.exitCode,
    0,
    `gpumesh ${args.join(' ')} exits 0${r.exitCode === 0 ? '' : ` (stderr: ${r.stderr.slice(0, 500)})`}`
  )
  return r.stdout
}

async function okJson<T = any>(
  t: Test,
  c: TestCoordinator,
  args: string[],
  options: Parameters<typeof gpumesh>[2] = {}
): Promise<T> {
  return JSON.parse(await ok(t, c, ['--json', ...args], options)) as T
}

/** Table rows as arrays of cells (columns are separated by two or more spaces). */
function rows(table: string): string[][] {
  return table
    .trimEnd()
    .split('\n')
    .map((l) => l.trim().split(/\s{2,}/))
}

/**
 * `gpumesh --json <args>` prints what `GET <path>` answers: the items of a list, the resource of a get.
 * The table of commands is one assertion (each command's exit code is checked by ok()).
 */
async function jsonIsApi(t: Test, c: TestCoordinator, cases: Array<[args: string[], path: string]>): Promise<void> {
  const m = new Mismatches()
  for (const [args, path] of cases) {
    const api = (await c.call('GET', path)).body
    m.check(
      `gpumesh --json ${args.join(' ')}`,
      `GET ${path}`,
      await okJson(t, c, args),
      args[1] === 'get' ? api : api.items
    )
  }
  t.same(m.list, [], '--json prints what the API answers')
}

/** `gpumesh events --follow --json` running against `api` (killed at teardown), and what it printed so far. */
function followEvents(t: Test, api: string, token: string): { follow: ResultPromise; output: () => string } {
  const follow = execa(process.execPath, [CLI, 'events', '--follow', '--json'], {
    env: cleanEnv({ GPUMESH_API: api, GPUMESH_TOKEN: token }),
    extendEnv: false,
    reject: false
  })
  t.teardown(() => {
    follow.kill()
  })
  let out = ''
  follow.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8')
  })
  return { follow, output: () => out }
}

function scratch(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function workloadCount(c: TestCoordinator): Promise<number> {
  const { rows } = await c.pool.query<{ n: number }>('select count(*)::int as n from workloads')
  return rows[0]?.n ?? -1
}

t.test('hosts and pools: tables, --json equal to the API, host actions, pool settings', async (t) => {
  const c = await startTestCoordinator(t)
  const h1 = await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h2')
  await addHost(c.pool, 'l40s-1x', 'l1')

  const hosts = rows(await ok(t, c, ['hosts']))
  t.same(
    hosts[0],
    ['ID', 'NAME', 'POOL', 'STATE', 'GPUS FREE', 'GPU HEALTH', 'AGENT', 'LAST SEEN'],
    'hosts table header'
  )
  const h1Row = hosts.find((r) => r[1] === 'h1')
  t.match(
    h1Row,
    [h1.slice(0, 8), 'h1', H100, 'ready', '8/8', '-'],
    'a host row: short id, name, pool, state, free/total GPUs, GPU health (no agent reported it)'
  )
  t.equal(hosts.length, 4, 'one row per host')
  await jsonIsApi(t, c, [
    [['hosts'], '/v1/hosts'],
    [['hosts', 'get', h1], `/v1/hosts/${h1}`]
  ])
  t.same(await ok(t, c, ['hosts', '--json']), await ok(t, c, ['--json', 'hosts']), '--json works after the command too')
  const detail = await ok(t, c, ['hosts', 'get', 'h1'])
  t.match(detail, new RegExp(`ID:\\s+${h1}`), 'get by name shows the full id')
  t.match(detail, /GPUs \(8\)/, 'and the facts summary')
  t.match(detail, /H100/)

  const cordon = await ok(t, c, ['hosts', 'cordon', h1, '--reason', 'bad fan'])
  t.match(cordon, /host h1 \(\w{8}\) is now cordoned: bad fan/)
  t.match((await c.call('GET', `/v1/hosts/${h1}`)).body, { state: 'cordoned', stateReason: 'bad fan' })
  t.match(await ok(t, c, ['hosts', 'uncordon', h1.slice(0, 8)]), /is now ready/, 'a short id from the table works')
  t.match(await okJson(t, c, ['hosts', 'drain', 'h1']), { id: h1, state: 'draining' }, 'drain --json prints the host')

  const pools = rows(await ok(t, c, ['pools']))
  t.same(pools[0], ['KEY', 'KIND', 'HOSTS', 'READY', 'GPUS FREE/TOTAL', 'LARGEST FREE BLOCK', 'LABELS'])
  t.same(
    pools.find((r) => r[0] === H100),
    [H100, 'static', '2', '1', '8/16', '8', '-'],
    'h1 drains: 2 hosts, 1 ready, its GPUs not free'
  )
  t.ok(
    pools.some((r) => r[0] === 'l40s-48gb-1x'),
    'the L40S pool is listed'
  )
  await jsonIsApi(t, c, [
    [['pools'], '/v1/pools'],
    [['pools', 'get', H100], `/v1/pools/${H100}`]
  ])
  const pool = await ok(t, c, ['pools', 'get', H100])
  t.match(pool, /Kind:\s+static/)
  t.match(pool, /\bh1\s+draining\s+8\/8/, "the pool's hosts are listed")
  t.match(pool, /\bh2\s+ready\s+8\/8/)

  t.match(
    await okJson(t, c, ['pools', 'set', H100, '--kind', 'inference', '--label', 'team=ml', '--label', 'zone=a']),
    { kind: 'inference', labels: { team: 'ml', zone: 'a' } }
  )
  t.match(
    await ok(t, c, ['pools', 'set', H100, '--label', 'zone=b']),
    /Labels:\s+team=ml,zone=b/,
    'one --label keeps the others'
  )
  await ok(t, c, ['pools', 'set', H100, '--label', 'team-'])
  t.match(
    (await c.call('GET', `/v1/pools/${H100}`)).body,
    { kind: 'inference', labels: { zone: 'b' } },
    'key- removes a label'
  )
  t.notOk('team' in (await c.call('GET', `/v1/pools/${H100}`)).body.labels)

  const nothing = await gpumesh(c.api, ['pools', 'set', H100])
  t.equal(nothing.exitCode, 2, 'pools set without anything to set is a usage error')
  const badKind = await gpumesh(c.api, ['pools', 'set', H100, '--kind', 'gpu'])
  t.equal(badKind.exitCode, 2)
  t.match(badKind.stderr, /Allowed choices are static, inference, training/)
  const missing = await gpumesh(c.api, ['pools', 'get', 'tpu-v5'])
  t.equal(missing.exitCode, 1)
  t.match(missing.stderr, /^error: No such resource: no pool tpu-v5 \[NOT_FOUND\]$/m)
})

t.test('workloads: create from YAML and from JSON on stdin, get, placements, pagination, delete', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h2')
  const dir = scratch(t)
  const yamlFile = join(dir, 'dev.yaml')
  writeFileSync(
    yamlFile,
    `# a session on the H100 pool
name: dev
kind: session
pool: ${H100}
gpus: 2
run:
  driver: process
  command: [bash, -l]
  env:
    MODE: "dev"
`
  )
  t.match(await ok(t, c, ['workloads', 'create', '-f', yamlFile]), /^workload dev created \(id [0-9a-f-]{36}\)/)
  const chat = { name: 'chat', kind: 'endpoint', replicas: 2, gpus: 4, pools: [H100], run }
  const created = await okJson(t, c, ['workloads', 'create', '-f', '-'], { input: JSON.stringify(chat, null, 2) })
  t.match(
    created,
    { name: 'chat', kind: 'endpoint', spec: chat },
    'JSON from stdin; --json prints the created workload'
  )

  const all = (await c.call('GET', '/v1/workloads')).body.items as Array<{ id: string; name: string; spec: unknown }>
  const dev = all.find((w) => w.name === 'dev')
  t.same(
    dev?.spec,
    {
      name: 'dev',
      kind: 'session',
      pool: H100,
      gpus: 2,
      run: { driver: 'process', command: ['bash', '-l'], env: { MODE: 'dev' } }
    },
    'the YAML spec arrived as written'
  )
  for (const w of all)
    await eventually(
      async () => ((await c.call('GET', `/v1/workloads/${w.id}`)).body.state === 'placed' ? true : undefined),
      15_000,
      `${w.name} placed`
    )

  const table = rows(await ok(t, c, ['workloads']))
  t.same(table[0], ['ID', 'NAME', 'KIND', 'STATE', 'PLACEMENTS', 'AGE', 'REASON'])
  t.match(
    table.find((r) => r[1] === 'chat'),
    [created.id.slice(0, 8), 'chat', 'endpoint', 'placed', '2/2']
  )
  t.match(
    table.find((r) => r[1] === 'dev'),
    [/^[0-9a-f]{8}$/, 'dev', 'session', 'placed', '1/1']
  )
  await jsonIsApi(t, c, [[['workloads', 'get', created.id], `/v1/workloads/${created.id as string}`]])
  const got = await ok(t, c, ['workloads', 'get', 'chat'])
  t.match(got, new RegExp(`ID:\\s+${created.id as string}`), 'get by name')
  t.match(got, /Shape:\s+2 replicas × 4 GPUs/)
  t.match(got, /Placements\n\s+ID\s+REPLICA\s+HOST\s+GPUS\s+PORT\s+STATE\s+READY/, 'with its placements')
  t.match(got, /\bh[12]\s+\d,\d,\d,\d\s+3\d{4}\s+\w+\s+no\b/, 'each replica with its port, not ready (no agent)')

  const placements = rows(await ok(t, c, ['placements']))
  t.same(placements[0], ['ID', 'WORKLOAD', 'REPLICA', 'HOST', 'GPUS', 'STATE', 'READY', 'EXIT', 'REASON'])
  t.same(
    placements
      .slice(1)
      .map((r) => `${r[1]} ${r[6]}`)
      .sort(),
    ['chat no', 'chat no', 'dev -'],
    'READY for endpoint replicas, - for other work'
  )
  t.equal(placements.filter((r) => r[1] === 'chat').length, 2, 'two chat replicas, by workload name')
  t.equal(placements.filter((r) => r[1] === 'dev').length, 1)
  await jsonIsApi(t, c, [[['placements'], '/v1/placements']])

  // More workloads than one page: the CLI must follow nextCursor to the end.
  const batch: number[] = []
  for (let i = 0; i < 9; i++)
    batch.push(
      (await c.call('POST', '/v1/workloads', { name: `batch-${i}`, kind: 'session', pool: H100, gpus: 8, run })).status
    )
  t.same(batch, Array(9).fill(201), 'nine more workloads created')
  // Compare once the scheduler has had its say, so that the API and the CLI read the same state.
  const api = await eventually(
    async () => {
      const a = (await c.call('GET', '/v1/workloads?limit=1000')).body
      if (a.items.some((w: { reason: string | null }) => w.reason === 'waiting for the scheduler')) return undefined
      const b = (await c.call('GET', '/v1/workloads?limit=1000')).body
      return JSON.stringify(a) === JSON.stringify(b) ? a : undefined
    },
    15_000,
    'the scheduler to settle'
  )
  t.equal(api.items.length, 11)
  t.not((await c.call('GET', '/v1/workloads?limit=4')).body.nextCursor, null, 'a page of 4 is not all of them')
  t.same(await okJson(t, c, ['--page-size', '4', 'workloads']), api.items, 'every page, in order, each item once')
  const paged = rows(await ok(t, c, ['workloads', '--page-size', '3']))
  t.equal(paged.length, 12, 'the table has every workload too')
  t.ok(
    paged.some(
      (r) => r[1] === 'batch-8' && r[3] === 'pending' && r[4] === '0/1' && /no free|GPU|host/i.test(r[6] ?? '')
    ),
    'a pending workload shows why'
  )

  t.match(await ok(t, c, ['workloads', 'delete', created.id]), /^workload chat \([0-9a-f]{8}\) deleted$/m)
  t.match(
    await okJson(t, c, ['workloads', 'delete', 'dev']),
    { name: 'dev', state: 'deleted' },
    'delete by name, --json'
  )
  t.same(
    (await c.call('GET', '/v1/workloads?limit=1000')).body.items
      .map((w: { name: string }) => w.name)
      .filter((n: string) => !n.startsWith('batch-')),
    [],
    'both are gone from the list'
  )
  const again = await gpumesh(c.api, ['workloads', 'delete', 'dev'])
  t.equal(again.exitCode, 1)
  t.match(again.stderr, /^error: no workload has the id or name "dev"$/m)
})

t.test('tokens: created once, then the viewer reads but may not delete; join tokens', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const w = await c.call('POST', '/v1/workloads', { name: 'keep', kind: 'session', pool: H100, gpus: 1, run })
  t.equal(w.status, 201)

  const out = await ok(t, c, ['tokens', 'create', '--role', 'viewer', '--name', 'ci'])
  t.match(out, /Created viewer token "ci"/)
  const tokens = out.match(/^\s+(gmt_\S+)$/gm) ?? []
  t.equal(tokens.length, 1, 'the token is printed once, alone on its line')
  const viewer = (tokens[0] ?? '').trim()

  t.equal((await gpumesh(c.api, ['hosts'], { token: viewer })).exitCode, 0, 'the viewer token reads hosts')
  t.match(await ok(t, c, ['workloads'], { token: viewer }), /\bkeep\b/, 'and workloads')
  const denied = await gpumesh(c.api, ['workloads', 'delete', w.body.id], { token: viewer })
  t.equal(denied.exitCode, 1, 'delete with a viewer token exits 1')
  t.match(
    denied.stderr,
    /^error: This token's role may not do this: DELETE \/v1\/workloads\/:id needs the operator role; this token is viewer \[FORBIDDEN\]$/m
  )
  t.notMatch(denied.stderr, viewer, 'the token is not echoed')
  t.not((await c.call('GET', `/v1/workloads/${w.body.id as string}`)).body.state, 'deleted', 'nothing was deleted')
  const byName = await gpumesh(c.api, ['workloads', 'delete', 'keep'], { token: viewer })
  t.equal(byName.exitCode, 1)
  t.match(byName.stderr, /\[FORBIDDEN\]/, 'by name: the lookup reads, the delete is refused')

  const asJson = await okJson(t, c, ['tokens', 'create', '--role', 'operator', '--name', 'ops'])
  t.match(asJson, { role: 'operator', name: 'ops', token: /^gmt_/, id: /^[0-9a-f-]{36}$/ })
  t.equal((await c.call('GET', '/v1/hosts', undefined, asJson.token)).status, 200, 'the printed token works')
  const missingRole = await gpumesh(c.api, ['tokens', 'create', '--name', 'x'])
  t.equal(missingRole.exitCode, 2, '--role is required')
  t.match(missingRole.stderr, /--role/)

  const join = await ok(t, c, ['join-token', 'create', '--pool', H100, '--ttl', '600'])
  t.match(join, new RegExp(`Created join token [0-9a-f-]{36} for pool ${H100}, valid until \\d{4}-`))
  t.equal((join.match(/^\s+gmj_\S+$/gm) ?? []).length, 1, 'the join token, once')
  const joinJson = await okJson(t, c, ['join-token', 'create'])
  t.match(joinJson, { token: /^gmj_/, pool: null })
  t.ok(Math.abs(Date.parse(joinJson.expiresAt) - Date.now() - 86_400_000) < 60_000, 'default lifetime: a day')
  const viewerJoin = await gpumesh(c.api, ['join-token', 'create'], { token: viewer })
  t.equal(viewerJoin.exitCode, 1)
  t.match(viewerJoin.stderr, /\[FORBIDDEN\]$/m)
})

t.test('events: up to now, --json, --after, and --follow', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  t.equal(
    (await c.call('POST', '/v1/workloads', { name: 'first', kind: 'session', pool: H100, gpus: 1, run })).status,
    201
  )

  const started = Date.now()
  const table = await ok(t, c, ['events'])
  t.ok(Date.now() - started < 15_000, 'events without --follow returns')
  const lines = rows(table)
  t.same(lines[0], ['ID', 'TIME', 'TYPE', 'SUBJECT', 'DATA'])
  t.ok(
    lines.some(
      (r) => r[2] === 'host.registered' && /^host\/[0-9a-f]{8}$/.test(r[3] ?? '') && /name=h1/.test(r[4] ?? '')
    ),
    'host.registered, with subject and data'
  )
  t.ok(
    lines.some((r) => r[2] === 'workload.created' && /kind=session name=first/.test(r[4] ?? '')),
    'workload.created'
  )

  const { rows: db } = await c.pool.query<{ id: number; type: string }>('select id, type from events order by id')
  const printed = (await ok(t, c, ['--json', 'events']))
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: number; type: string; subject: { kind: string }; at: string })
  t.same(
    printed.map((e) => e.id).slice(0, db.length),
    db.map((e) => e.id),
    'every event, in order, one JSON object per line'
  )
  t.match(printed[0], { id: db[0]?.id, type: db[0]?.type, subject: { kind: String }, at: String })
  const mid = db[1]?.id ?? 0
  const after = (await ok(t, c, ['--json', 'events', '--after', String(mid)]))
    .trimEnd()
    .split('\n')
    .map((l) => (JSON.parse(l) as { id: number }).id)
  t.ok(after.length > 0 && after.every((id) => id > mid), '--after skips what came before')

  // --follow: history, then an event created while it runs.
  const { follow, output } = followEvents(t, c.api, ADMIN_TOKEN)
  await eventually(() => output().includes('"workload.created"'), 15_000, 'the history')
  t.equal(
    (await c.call('POST', '/v1/workloads', { name: 'second', kind: 'session', pool: H100, gpus: 1, run })).status,
    201
  )
  await eventually(() => output().includes('"name":"second"'), 15_000, 'the new event')
  follow.kill('SIGTERM')
  const r = await follow
  t.not(r.exitCode, 0, 'still running until killed')
  const events = output()
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: number; type: string; data: { name?: string } })
  t.ok(
    events.some((e) => e.type === 'workload.created' && e.data.name === 'second'),
    'the new workload.created'
  )
  t.same(
    [...new Set(events.map((e) => e.id))],
    events.map((e) => e.id),
    'no event twice'
  )
})

t.test('events --follow resumes with Last-Event-ID after a disconnect', async (t) => {
  const seen: Array<string | undefined> = []
  const event = (id: number) =>
    `id: ${id}\nevent: test.tick\ndata: ${JSON.stringify({ id, type: 'test.tick', subject: { kind: 'test', id: String(id) }, data: { n: id }, at: new Date().toISOString() })}\n\n`
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const header = req.headers['last-event-id']
    seen.push(typeof header === 'string' ? header : req.url)
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    // First connection: two events, a short retry, then a clean hang-up; the second breaks off after
    // event 3 (a dead socket); the third resumes after 3 and stays open.
    if (seen.length === 1) res.end(`retry: 50\n${event(1)}${event(2)}`)
    else if (seen.length === 2) {
      res.write(event(3))
      setTimeout(() => req.socket.destroy(), 100)
    } else res.write(event(Number(header ?? '0') + 1))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const address = server.address()
  const api = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const { follow, output } = followEvents(t, api, 'gmt_x')
  await eventually(() => output().split('\n').length > 4, 10_000, 'four events')
  follow.kill('SIGTERM')
  const r = await follow
  t.same(
    output()
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as { id: number }).id),
    [1, 2, 3, 4],
    'each event once, in order'
  )
  t.same(seen, ['/v1/events?after=0', '2', '3'], 'reconnected with Last-Event-ID: 2, then 3')
  t.match(r.stderr, /event stream closed by the server; reconnecting/)
  t.match(r.stderr, /event stream interrupted \(.*broke off.*\); reconnecting/)
})

t.test('errors: refused token, absent coordinator, broken spec files, usage', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')

  const bad = await gpumesh(c.api, ['hosts'], { token: 'gmt_wrong-token-123456' })
  t.equal(bad.exitCode, 1)
  t.equal(bad.stdout, '')
  t.match(bad.stderr, /^error: Missing, unknown or revoked bearer token \[UNAUTHORIZED\]$/m)
  t.notMatch(bad.stderr, 'gmt_wrong-token-123456', 'the token is never printed')

  const port = await freePort()
  const down = await gpumesh(`http://127.0.0.1:${port}`, ['workloads'])
  t.equal(down.exitCode, 1)
  t.match(
    down.stderr,
    new RegExp(
      `^error: cannot reach the coordinator at http://127\\.0\\.0\\.1:${port} \\(.*ECONNREFUSED.*\\); is gpumesh-coordinator running\\? set GPUMESH_API$`,
      'm'
    )
  )
  t.notMatch(down.stderr, ADMIN_TOKEN)
  const downEvents = await gpumesh(`http://127.0.0.1:${port}`, ['events', '--follow'])
  t.equal(downEvents.exitCode, 1, 'events --follow: an absent coordinator at start is an error too')
  t.match(downEvents.stderr, /cannot reach the coordinator/)

  const dir = scratch(t)
  const broken = join(dir, 'broken.yaml')
  writeFileSync(
    broken,
    `name: broken\nkind: session\npool: [${H100}\ngpus: 1\nrun: {driver: process, command: [bash]}\n`
  )
  const yaml = await gpumesh(c.api, ['workloads', 'create', '-f', broken])
  t.equal(yaml.exitCode, 1)
  t.match(yaml.stderr, /^error: .*broken\.yaml: line \d+, column \d+: invalid YAML: /m, 'a YAML error with its line')
  const multi = join(dir, 'two.yml')
  writeFileSync(multi, 'name: a\nkind: session\n---\nname: b\n')
  t.match(
    (await gpumesh(c.api, ['workloads', 'create', '-f', multi])).stderr,
    /two\.yml: line 3, column 1: one workload spec per file/
  )
  const json = await gpumesh(c.api, ['workloads', 'create', '-f', '-'], {
    input: '{\n  "name": "x",\n  "kind": "session"\n  "gpus": 1\n}\n'
  })
  t.equal(json.exitCode, 1)
  t.match(json.stderr, /^error: <stdin>: line 4, column 3: invalid JSON: /m, 'a JSON error with its line')
  const jsonFile = join(dir, 'spec.json')
  writeFileSync(jsonFile, '{"name": "x",\n"kind": session}')
  t.match(
    (await gpumesh(c.api, ['workloads', 'create', '-f', jsonFile])).stderr,
    /spec\.json: line 2, column 9: invalid JSON: expected a value .*, found "s"/
  )
  const none = await gpumesh(c.api, ['workloads', 'create', '-f', join(dir, 'missing.yaml')])
  t.equal(none.exitCode, 1)
  t.match(none.stderr, /cannot read .*missing\.yaml: no such file/)
  t.equal(await workloadCount(c), 0, 'nothing was created')

  const invalid = await gpumesh(c.api, ['workloads', 'create', '-f', '-'], {
    input: 'name: x\nkind: session\npool: nope-pool\ngpus: 0\nrun: {driver: process, command: [bash]}\n'
  })
  t.equal(invalid.exitCode, 1)
  t.match(
    invalid.stderr,
    /^error: The request does not match the schema: .*gpus.* \[VALIDATION\]$/m,
    'a parsable but invalid spec: the API says why'
  )
  const notFound = await gpumesh(c.api, ['workloads', 'get', '00000000-0000-4000-8000-000000000000'])
  t.equal(notFound.exitCode, 1)
  t.match(notFound.stderr, /\[NOT_FOUND\]$/m)

  // No token anywhere: the coordinator's admin.token is the fallback, else a clear error.
  const state = scratch(t)
  const noToken = await gpumesh(c.api, ['hosts'], { token: null, env: { GPUMESH_STATE_DIR: state } })
  t.equal(noToken.exitCode, 1)
  t.match(noToken.stderr, /^error: no API token: pass --token or set GPUMESH_TOKEN/m)
  writeFileSync(join(state, 'admin.token'), `${ADMIN_TOKEN}\n`, { mode: 0o600 })
  t.match(
    await ok(t, c, ['hosts'], { token: null, env: { GPUMESH_STATE_DIR: state } }),
    /\bh1\b/,
    'admin.token from GPUMESH_STATE_DIR'
  )
  t.match(await ok(t, c.api.replace(/:\d+$/, ':1'), ['--api', c.api, 'hosts']), /\bh1\b/, '--api wins over GPUMESH_API')

  const m = new Mismatches()
  for (const args of [
    ['frobnicate'],
    ['hosts', 'get'],
    ['workloads', 'create'],
    ['events', '--after', 'x'],
    ['--api', 'ftp://x', 'hosts'],
    []
  ]) {
    const r = await gpumesh(c.api, args)
    m.check(
      `gpumesh ${args.join(' ')}`,
      'usage error: exit 2, says so',
      [r.exitCode, /error|Usage/.test(r.stderr)],
      [2, true]
    )
  }
  for (const args of [
    ['--help'],
    ['hosts', '--help'],
    ['hosts', 'drain', '--help'],
    ['pools', 'set', '--help'],
    ['workloads', 'create', '--help'],
    ['events', '--help'],
    ['tokens', 'create', '--help'],
    ['join-token', 'create', '--help'],
    ['placements', '--help']
  ]) {
    const r = await gpumesh(c.api, args, { token: null, env: { GPUMESH_STATE_DIR: state } })
    m.check(
      `gpumesh ${args.join(' ')}`,
      'help: exit 0, usage on stdout',
      [r.exitCode, /^Usage: gpumesh/.test(r.stdout)],
      [0, true]
    )
  }
  t.same(m.list, [], 'usage errors exit 2, help exits 0 with the usage')
})

t.test('SSE parser: fields, multi-line data, comments, chunks split anywhere', async (t) => {
  const stream =
    '\uFEFF: hello\r\nretry: 250\r\nid: 7\r\nevent: a.b\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: no type\n\nid: 8\nevent: c\ndata\n\n: keep-alive\n\nevent: lost\n\n'
  const want = [
    { id: '7', event: 'a.b', data: '{"x":\n1}' },
    { id: '7', event: 'message', data: 'no type' },
    { id: '8', event: 'c', data: '' }
  ]
  const whole = new SseParser()
  t.same(whole.push(stream), want, 'in one piece')
  t.equal(whole.retryMs, 250)
  t.equal(whole.lastEventId, '8')
  const m = new Mismatches()
  for (let cut = 1; cut < stream.length; cut++) {
    const p = new SseParser()
    m.check(`split at ${cut}`, 'events', [...p.push(stream.slice(0, cut)), ...p.push(stream.slice(cut))], want)
  }
  t.same(m.list, [], 'in two pieces, split anywhere')
  const bytewise = new SseParser()
  t.same(
    [...stream].flatMap((ch) => bytewise.push(ch)),
    want,
    'one character at a time'
  )
  t.same(
    new SseParser().push('data: a\rdata: b\r\r'),
    [{ id: null, event: 'message', data: 'a\nb' }],
    'bare CR line ends'
  )
})

t.test('JSON syntax errors: offset and what was expected', async (t) => {
  const cases: Array<[string, number | null, RegExp?]> = [
    ['{"a": 1, "b": [true, null, -1.5e3, "x\\u00e9"]}', null],
    ['{"a": 1 "b": 2}', 8, /expected "," or "}"/],
    ['{"a": tru}', 6, /expected a value/],
    ['{a: 1}', 1, /property name in double quotes/],
    ['[1, 2,]', 6, /expected a value/],
    ['{"a": "line\nbreak"}', 11, /control character/],
    ['{"a": 1}}', 8, /end of the text/],
    ['{"a": "open', 11, /not closed/],
    ['', 0, /found the end of the text/],
    ['{"a": 01}', 7, /"," or "}"/]
  ]
  const m = new Mismatches()
  for (const [text, offset, message] of cases) {
    let parses = true
    try {
      JSON.parse(text)
    } catch {
      parses = false
    }
    const p = jsonSyntaxProblem(text)
    m.check(JSON.stringify(text), `offset (${p?.message ?? 'valid'})`, p?.offset ?? null, offset)
    m.check(JSON.stringify(text), 'agrees with JSON.parse', p === null, parses)
    if (message !== undefined)
      m.check(JSON.stringify(text), `message matches ${String(message)}`, message.test(p?.message ?? ''), true)
  }
  t.same(m.list, [], 'each text: its offset, its message, and JSON.parse agrees')
})
