// A workload body with one wrong field gets one error, from the schema of
// the kind it names (issue 18, fix 4), not the anyOf noise of every kind;
// a missing or unknown kind is one error that lists the kinds.
import t from 'tap'
import { addHost, startTestCoordinator } from './helpers/coordinator.js'
import { Mismatches } from './helpers/mismatches.js'

const run = { driver: 'process', command: ['python3', 'serve.py'] }
const session = { name: 's', kind: 'session', pool: 'h100-80gb-8x-nvlink', gpus: 1, run }
const endpoint = { name: 'e', kind: 'endpoint', replicas: 2, gpus: 1, pools: ['h100-80gb-8x-nvlink'], run }
const recipe = { name: 'r', kind: 'recipe', pool: 'h100-80gb-8x-nvlink', hosts: 1, gpus: 1, run }
const without = (o: Record<string, unknown>, key: string) =>
  Object.fromEntries(Object.entries(o).filter(([k]) => k !== key))

const CASES: Array<[string, unknown, string]> = [
  ['session, zero GPUs', { ...session, gpus: 0 }, 'body: /gpus must be >= 1'],
  ['session, GPUs as a string', { ...session, gpus: '4' }, 'body: /gpus must be integer'],
  [
    'session with an endpoint field',
    { ...session, pools: ['x'] },
    'body: / must NOT have additional properties: pools'
  ],
  ['session without a pool', without(session, 'pool'), "body: / must have required property 'pool'"],
  ['endpoint without pools', without(endpoint, 'pools'), "body: / must have required property 'pools'"],
  ['endpoint, zero replicas', { ...endpoint, replicas: 0 }, 'body: /replicas must be >= 1'],
  [
    'endpoint, empty command',
    { ...endpoint, run: { driver: 'process', command: [] } },
    'body: /run/command must NOT have fewer than 1 items'
  ],
  ['recipe, bad restart', { ...recipe, restart: 'always' }, 'body: /restart must be one of never, on-failure'],
  [
    'recipe, bad name',
    { ...recipe, name: 'A B' },
    'body: /name must match pattern "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"'
  ],
  [
    'no kind',
    without(session, 'kind'),
    "body: / must have required property 'kind' (one of endpoint, recipe, session)"
  ],
  ['unknown kind', { ...session, kind: 'batch' }, 'body: /kind must be one of endpoint, recipe, session'],
  ['kind not a string', { ...session, kind: 3 }, 'body: /kind must be one of endpoint, recipe, session'],
  [
    'session, unknown driver',
    { ...session, run: { ...run, driver: 'k8s' } },
    'body: /run/driver must be one of process, docker'
  ],
  ['an array', [session], 'body: / must be object']
]

t.test('each bad workload body: 400 problem+json naming only what is wrong for its kind', async (t) => {
  const c = await startTestCoordinator(t)
  await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const m = new Mismatches()
  for (const [what, body, detail] of CASES) {
    const r = await c.call('POST', '/v1/workloads', body)
    m.check(
      what,
      'answer',
      { status: r.status, type: r.headers.get('content-type'), code: r.body.code, detail: r.body.detail },
      { status: 400, type: 'application/problem+json; charset=utf-8', code: 'VALIDATION', detail }
    )
  }
  for (const good of [session, endpoint, recipe]) {
    const r = await c.call('POST', '/v1/workloads', good)
    m.check(`valid ${good.kind}`, 'created', r.status === 201 ? 201 : { status: r.status, body: r.body }, 201)
  }
  t.same(m.list, [], 'bodies whose answer is not the one error expected')
})
