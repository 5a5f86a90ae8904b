// Teams end to end through the API and the CLI: a team's token sees and
// changes its own team's workloads only, on every route; another team's ids
// are 404, as if they did not exist; the cluster's own routes are closed to it.
import { request } from 'node:http'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { ADMIN_TOKEN, addHost, eventually, startTestCoordinator, type TestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { gatewayCall } from './helpers/gateway.js'
import { Mismatches } from './helpers/mismatches.js'
import { attachRefused } from './helpers/ws.js'

const POOL = 'h100-80gb-8x-nvlink'
const CLI = join(ROOT, 'dist/cli/main.js')

const endpoint = (name: string) => ({
  name,
  kind: 'endpoint',
  replicas: 1,
  gpus: 1,
  pools: [POOL],
  run: { driver: 'process', command: ['sleep', '600'] }
})

async function token(c: TestCoordinator, body: Record<string, unknown>): Promise<string> {
  const r = await c.call('POST', '/v1/tokens', body)
  if (r.status !== 201) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.token as string
}

/** The event stream from the start as `tok` sees it, read until `until` is seen (or 15 s). */
async function eventsSeen(c: TestCoordinator, tok: string, until: (e: any) => boolean): Promise<any[]> {
  return await new Promise((resolve, reject) => {
    const seen: any[] = []
    const req = request(`${c.api}/v1/events?after=0`, { headers: { authorization: `Bearer ${tok}` } }, (res) => {
      let buffer = ''
      res.on('data', (d: Buffer) => {
        buffer += d.toString()
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const data = /^data: (.*)$/m.exec(buffer.slice(0, i))?.[1]
          buffer = buffer.slice(i + 2)
          if (data === undefined) continue
          const e = JSON.parse(data)
          seen.push(e)
          if (until(e)) {
            req.destroy()
            resolve(seen)
          }
        }
      })
    })
    req.setTimeout(15_000, () => {
      req.destroy()
      reject(new Error(`the awaited event did not come; seen: ${JSON.stringify(seen.map((e) => e.type))}`))
    })
    req.on('error', () => {})
    req.end()
  })
}

t.test('teams: isolation on every route, and the cluster closed to team tokens', async (t) => {
  const c = await startTestCoordinator(t)
  const hostId = await addHost(c.pool, 'h100-8x-nv18-nics', 'h1')
  const cli = async (tok: string, args: string[]) =>
    await execa(process.execPath, [CLI, ...args], {
      env: { GPUMESH_API: c.api, GPUMESH_TOKEN: tok },
      reject: false,
      timeout: 30_000
    })
  const created = await cli(ADMIN_TOKEN, ['teams', 'create', 'red'])
  await cli(ADMIN_TOKEN, ['teams', 'create', 'blue'])
  const red = await token(c, { role: 'operator', name: 'red-ops', team: 'red' })
  const redViewer = await token(c, { role: 'viewer', name: 'red-eyes', team: 'red' })
  const blue = await token(c, { role: 'operator', name: 'blue-ops', team: 'blue' })

  const redW = await c.call('POST', '/v1/workloads', endpoint('red-svc'), red)
  const blueW = await c.call('POST', '/v1/workloads', endpoint('blue-svc'), blue)
  const clusterW = await c.call('POST', '/v1/workloads', endpoint('cluster-svc'))
  const redId = redW.body.id as string
  // The scheduler places red's replica on h1 (no agent runs there; the placement is what matters).
  const redPlacement = await eventually(
    async () => (await c.call('GET', `/v1/workloads/${redId}`)).body.placements?.[0]?.id as string | undefined,
    15_000,
    "red's replica to be placed"
  )

  const m = new Mismatches()
  const names = async (tok: string) =>
    ((await c.call('GET', '/v1/workloads', undefined, tok)).body.items as any[]).map((w) => w.name).sort()
  m.check(
    'create',
    'statuses and owners',
    [redW.status, redW.body.team, blueW.body.team, clusterW.body.team],
    [201, 'red', 'blue', null]
  )
  m.check(
    'teams create (CLI)',
    'exit code, says',
    [created.exitCode, /Created team red/.test(created.stdout)],
    [0, true]
  )
  m.check('list', 'red operator', await names(red), ['red-svc'])
  m.check('list', 'red viewer', await names(redViewer), ['red-svc'])
  m.check('list', 'blue operator', await names(blue), ['blue-svc'])
  m.check('list', 'admin (the cluster)', await names(ADMIN_TOKEN), ['blue-svc', 'cluster-svc', 'red-svc'])

  const status = async (method: string, path: string, tok: string, body?: unknown) =>
    (await c.call(method, path, body, tok)).status
  const cases: Array<[string, number, number]> = [
    ['get', await status('GET', `/v1/workloads/${redId}`, blue), await status('GET', `/v1/workloads/${redId}`, red)],
    [
      'patch',
      await status('PATCH', `/v1/workloads/${redId}`, blue, { replicas: 2 }),
      await status('PATCH', `/v1/workloads/${redId}`, red, { replicas: 2 })
    ],
    [
      'logs',
      await status('GET', `/v1/placements/${redPlacement}/logs`, blue),
      // Red may read them; its host has no agent connected here, so the answer is 503, not 404.
      await status('GET', `/v1/placements/${redPlacement}/logs`, red)
    ],
    [
      'attach',
      (await attachRefused(c, redId, { token: blue })).status,
      // Red may attach to its own workload, but an endpoint has no terminal: 409.
      (await attachRefused(c, redId, { token: red })).status
    ],
    ['delete', await status('DELETE', `/v1/workloads/${redId}`, blue), 0]
  ]
  for (const [route, other, own] of cases) {
    m.check(route, "another team's workload", other, 404)
    if (own !== 0) m.check(route, 'its own team', own === 404 ? 'not found' : 'found', 'found')
  }
  const placementsBlue = ((await c.call('GET', '/v1/placements', undefined, blue)).body.items as any[]).map(
    (p) => p.workloadId
  )
  m.check('placements list', "blue sees none of red's", placementsBlue.includes(redId), false)

  // Events: blue's stream from the start, read up to its own workload's creation, holds nothing of red's nor the cluster's.
  const blueEvents = await eventsSeen(c, blue, (e) => e.type === 'workload.created' && e.subject.id === blueW.body.id)
  m.check(
    'events',
    "blue's stream: only its own subjects",
    blueEvents.filter((e) => e.subject.id !== blueW.body.id).map((e) => `${e.type} ${e.subject.kind}`),
    []
  )

  // The cluster's own routes: closed to a team's operator, open to the cluster's.
  m.check('drain a host', 'team operator', await status('POST', `/v1/hosts/${hostId}/cordon`, red, {}), 403)
  m.check(
    'create a token',
    'team operator',
    await status('POST', '/v1/tokens', red, { role: 'viewer', name: 'x' }),
    403
  )
  m.check('create a team', 'team operator', await status('POST', '/v1/teams', red, { name: 'green' }), 403)
  const teamsOfRed = ((await c.call('GET', '/v1/teams', undefined, redViewer)).body.items as any[]).map((x) => x.name)
  m.check('teams list', "red's viewer sees its team", teamsOfRed, ['red'])

  // Tokens: a team for an admin is refused, an unknown team too; the list shows each token's team.
  const adminWithTeam = await c.call('POST', '/v1/tokens', { role: 'admin', name: 'a', team: 'red' })
  const unknownTeam = await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'v', team: 'nosuch' })
  m.check('token', 'admin with a team', [adminWithTeam.status, adminWithTeam.body.code], [400, 'VALIDATION'])
  m.check('token', 'unknown team', [unknownTeam.status, unknownTeam.body.code], [422, 'UNKNOWN_TEAM'])
  const listed = await cli(ADMIN_TOKEN, ['tokens', 'list', '--json'])
  const teamOf = Object.fromEntries((JSON.parse(listed.stdout) as any[]).map((k) => [k.name, k.team]))
  m.check('tokens list', 'teams', [teamOf['red-ops'], teamOf['blue-ops'], teamOf.bootstrap], ['red', 'blue', null])
  const sameName = await c.call('POST', '/v1/teams', { name: 'red' })
  m.check('teams create', 'a taken name', sameName.status, 409)

  // The gateway: a team's operator calls its own team's endpoints only; another team's is not there (404).
  // Red's has no replica running (no agent here): authorized, it gets 503 once the gateway knows the endpoint.
  const viaGateway = async (tok: string) => (await gatewayCall(c, 'GET', '/red-svc/echo', { token: tok })).status
  await eventually(async () => (await viaGateway(red)) === 503, 15_000, "the gateway to know red's endpoint")
  m.check('gateway', "red's endpoint, by blue's operator", await viaGateway(blue), 404)
  m.check('gateway', "red's endpoint, by the cluster's admin", await viaGateway(ADMIN_TOKEN), 503)

  // Last: red deletes its own (blue could not, above).
  m.check('delete', 'its own team', await status('DELETE', `/v1/workloads/${redId}`, red), 200)
  t.same(m.list, [], 'every route keeps each team to its own')
})
