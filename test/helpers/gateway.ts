// Calls through a test coordinator's gateway (node:http, so that any header
// can be sent and a call can be cut), and endpoints of the serving tests'
// replica (helpers/replica.ts) brought to ready.
import { readdirSync, readFileSync } from 'node:fs'
import { request, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import { ADMIN_TOKEN, eventually, type TestCoordinator } from './coordinator.js'
import { REPLICA_COMMAND } from './fixtures.js'
import { placementLog } from './mesh.js'

export const SERVE_POOL = 'h100-80gb-8x-nvlink'
export const SERVE_MACHINE = 'h100-8x-nv18-nics'

export interface GatewayAnswer {
  status: number
  headers: IncomingHttpHeaders
  text: string
  /** The body as JSON, or undefined when it is not JSON. */
  json: any
  /** false when the connection ended before the whole response (the gateway cut it). */
  complete: boolean
}

export interface CallOptions {
  /** Bearer token (default: the admin token; null: none). */
  token?: string | null
  headers?: OutgoingHttpHeaders
  body?: string | Buffer | Readable
  /** The CA to trust for an https gateway. */
  ca?: Buffer
}

/** One call through the gateway, its whole answer read. */
export async function gatewayCall(
  c: TestCoordinator,
  method: string,
  path: string,
  o: CallOptions = {}
): Promise<GatewayAnswer> {
  const url = new URL(path, c.gatewayUrl)
  const token = o.token === undefined ? ADMIN_TOKEN : o.token
  const headers: OutgoingHttpHeaders = { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...o.headers }
  return await new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : request
    const req = send(url, { method, headers, ...(o.ca === undefined ? {} : { ca: o.ca }) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      // A response cut midway ends in 'error' (aborted) and 'close', no 'end': what arrived is the answer.
      res.on('error', () => {})
      res.on('close', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json: unknown
        try {
          json = JSON.parse(text)
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json, complete: res.complete })
      })
    })
    // A refused upload: the answer may come while the body is still being written, and the write then fails.
    let answered = false
    req.once('response', () => {
      answered = true
    })
    req.on('error', (err) => {
      if (!answered) reject(err)
    })
    const body = o.body
    if (body === undefined) req.end()
    else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body)
    else body.pipe(req)
  })
}

/** Creates an endpoint of the serving tests' replica (or `command`) in SERVE_POOL, one GPU a replica; returns its id. */
export async function createEndpoint(
  c: TestCoordinator,
  name: string,
  replicas: number,
  o: { env?: Record<string, string>; serve?: unknown; command?: string[] } = {}
): Promise<string> {
  const r = await c.call('POST', '/v1/workloads', {
    name,
    kind: 'endpoint',
    replicas,
    gpus: 1,
    pools: [SERVE_POOL],
    run: { driver: 'process', command: o.command ?? REPLICA_COMMAND, ...(o.env === undefined ? {} : { env: o.env }) },
    ...(o.serve === undefined ? {} : { serve: o.serve })
  })
  if (r.status !== 201) throw new Error(`create ${name}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

export interface ReadyEndpoint {
  id: string
  /** Placement ids of its ready replicas. */
  placements: string[]
}

/** Creates an endpoint of `replicas` replica processes and waits until every one is ready and the gateway routes to it. */
export async function readyEndpoint(
  t: Test,
  c: TestCoordinator,
  agents: Array<{ stateDir: string }>,
  name: string,
  replicas: number,
  extra: { env?: Record<string, string>; serve?: unknown } = {}
): Promise<ReadyEndpoint> {
  const id = await createEndpoint(c, name, replicas, extra)
  // Replicas outlive their agents by design: the test's own end with it, every one it started.
  t.teardown(() => killWorkload(agents, id))
  const placements = await eventually(
    async () => {
      const w = (await c.call('GET', `/v1/workloads/${id}`)).body
      const ready = (w.placements as Array<{ id: string; state: string; ready: boolean }>).filter(
        (p) => p.state === 'running' && p.ready
      )
      return ready.length === replicas ? ready.map((p) => p.id) : undefined
    },
    30_000,
    `${replicas} replicas of ${name} to be ready`
  )
  // Without serve.readiness a replica is ready once its process runs, a moment before it listens.
  await eventually(
    () => placements.every((p) => agents.some((a) => placementLog(a.stateDir, p).includes('listening '))),
    10_000,
    `the replicas of ${name} to listen`
  )
  await eventually(() => placements.every((p) => c.gateway.routable(p)), 10_000, `the gateway to route to ${name}`)
  return { id, placements }
}

/** Kills a placement's process group (its wrapper's pid is the group id), if it runs on the agent of `stateDir`. */
export function killPlacement(stateDir: string, placementId: string): void {
  let pgid: number
  try {
    pgid = Number(readFileSync(join(stateDir, 'placements', placementId, 'pid'), 'utf8').trim())
  } catch {
    return
  }
  if (!Number.isInteger(pgid) || pgid <= 1) return
  try {
    process.kill(-pgid, 'SIGKILL')
  } catch {}
}

/** Kills every process of a workload's placements on these agents, from their state directories (a test's teardown). */
export function killWorkload(agents: Array<{ stateDir: string }>, workloadId: string): void {
  for (const a of agents) {
    let ids: string[] = []
    try {
      ids = readdirSync(join(a.stateDir, 'placements'))
    } catch {}
    for (const id of ids) {
      try {
        const record = JSON.parse(readFileSync(join(a.stateDir, 'placements', id, 'placement.json'), 'utf8'))
        if (record.assignment?.workloadId === workloadId) killPlacement(a.stateDir, id)
      } catch {}
    }
  }
}
