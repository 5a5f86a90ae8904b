// A coordinator in this process on a fresh database, an API client for it,
// and hosts registered from fixture machines (facts detected through the
// nvidia-smi double, then registered by the function the mesh will call).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { createLogger } from '../../common/log.js'
import { detectMachine } from '../../cli/up/simulated.js'
import { startCoordinator, type Coordinator } from '../../coordinator/server.js'
import type { GatewayLimits } from '../../coordinator/gateway/forward.js'
import { registerHost } from '../../coordinator/store/hosts.js'
import type { Pool } from '../../coordinator/store/db.js'
import type { HostFacts } from '../../protocol/host-facts.js'
import { freshDatabase } from './postgres.js'
import { stopOnce } from './stop-once.js'

import { eventually } from './eventually.js'

export { eventually }

export const ADMIN_TOKEN = 'gmt_test-admin-token-0123456789abcdef'

export interface TestCoordinator extends Coordinator {
  stateDir: string
  databaseUrl: string
  /** fetch against the API with the admin token (or `token`). */
  call: (
    method: string,
    path: string,
    body?: unknown,
    token?: string | null
  ) => Promise<{ status: number; headers: Headers; body: any }>
}

export interface TestCoordinatorOptions {
  databaseUrl?: string
  redisUrl?: string
  leaderRetryMs?: number
  heartbeatMs?: number
  /** How long an agent whose connection closed is waited for (default here 500 ms: crashes are judged at once). */
  agentGraceMs?: number
  clusterKeyFile?: string
  staleHostSeconds?: number
  /** libp2p listen addresses (default 127.0.0.1, any port). */
  listen?: string[]
  /** An existing state dir (same identity and cluster key: a restart); kept at teardown. */
  stateDir?: string
  /** Serve the API over HTTPS with these PEM files. */
  tls?: { certFile: string; keyFile: string }
  /** The bootstrap admin token (default ADMIN_TOKEN). */
  adminToken?: string
  /** How long a request (headers and body) may take to arrive. */
  requestTimeoutMs?: number
  /** What scale-down and rolling updates wait on before they stop a ready replica (default: the gateway's drain). */
  drain?: (placementId: string, timeoutMs: number) => Promise<void>
  /** The gateway's per-call limits. */
  gatewayLimits?: Partial<GatewayLimits>
}

export async function startTestCoordinator(t: Test, options: TestCoordinatorOptions = {}): Promise<TestCoordinator> {
  const stateDir = options.stateDir ?? mkdtempSync(join(tmpdir(), 'gpumesh-coord-'))
  const databaseUrl = options.databaseUrl ?? (await freshDatabase(t))
  const log = createLogger('test-coordinator', { level: process.env.GPUMESH_TEST_LOG ?? 'silent', stream: 'stderr' })
  const c = await startCoordinator(
    {
      stateDir,
      apiListen: '127.0.0.1:0',
      gatewayListen: '127.0.0.1:0',
      ...(options.gatewayLimits === undefined ? {} : { gatewayLimits: options.gatewayLimits }),
      databaseUrl,
      adminToken: options.adminToken ?? ADMIN_TOKEN,
      leaderRetryMs: options.leaderRetryMs ?? 200,
      usageIntervalMs: 200,
      listen: options.listen ?? ['/ip4/127.0.0.1/tcp/0'],
      // Hosts registered without an agent must not be swept down in tests.
      staleHostSeconds: options.staleHostSeconds ?? 0,
      agentGraceMs: options.agentGraceMs ?? 500,
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
      ...(options.clusterKeyFile === undefined ? {} : { clusterKeyFile: options.clusterKeyFile }),
      ...(options.redisUrl === undefined ? {} : { redisUrl: options.redisUrl }),
      ...(options.tls === undefined ? {} : { tls: options.tls }),
      ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
      ...(options.drain === undefined ? {} : { drain: options.drain })
    },
    log
  )
  const once = stopOnce()
  const stop = async () => {
    await once(async () => {
      await c.stop()
    })
  }
  t.teardown(async () => {
    await stop()
    if (options.stateDir === undefined) rmSync(stateDir, { recursive: true, force: true })
  })
  // With TLS the test's own certificate is the one CA trusted (fetch has no per-call CA).
  const ca = options.tls === undefined ? null : readFileSync(options.tls.certFile)
  const call: TestCoordinator['call'] = async (method, path, body, token = ADMIN_TOKEN) => {
    const headers: Record<string, string> = {}
    if (token !== null) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const init = {
      method,
      headers,
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) })
    }
    const r = ca === null ? await fetch(c.api + path, init) : await httpsFetch(c.api + path, init, ca)
    const text = await r.text()
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {}
    return { status: r.status, headers: r.headers, body: parsed }
  }
  return { ...c, stop, stateDir, databaseUrl, call }
}

const factsCache = new Map<string, HostFacts>()

/** HostFacts of a fixture machine, as `gpumesh-agent detect` would report them (cached). */
export async function factsFor(machine: string, label?: string): Promise<HostFacts> {
  const key = `${machine}/${label ?? ''}`
  let facts = factsCache.get(key)
  if (facts === undefined) {
    facts = await detectMachine(machine, { agentVersion: 'test', ...(label === undefined ? {} : { poolLabel: label }) })
    factsCache.set(key, facts)
  }
  return structuredClone(facts)
}

let peers = 0

/** Registers a host with a fixture machine's facts under a new peer id; returns its id. */
export async function addHost(pool: Pool, machine: string, name: string, label?: string): Promise<string> {
  const facts = await factsFor(machine, label)
  facts.hostname = name
  return await registerHost(pool, { peerId: `12D3KooWtest${process.pid}x${++peers}`, facts, name })
}

/** The workload `id` as the API shows it, once `ok` holds for it. */
export async function workloadWhen(
  c: TestCoordinator,
  id: string,
  ok: (w: any) => boolean,
  ms = 15_000,
  what = 'workload state'
): Promise<any> {
  return await eventually(
    async () => {
      const w = (await c.call('GET', `/v1/workloads/${id}`)).body
      return ok(w) ? w : undefined
    },
    ms,
    what
  )
}

/** fetch()'s answer over https with one trusted CA (node:https). */
async function httpsFetch(
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
  ca: Buffer
): Promise<{ status: number; headers: Headers; text: () => Promise<string> }> {
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: init.method, headers: init.headers, ca }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('error', reject)
      res.on('end', () => {
        const headers = new Headers()
        for (const [k, v] of Object.entries(res.headers))
          if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v)
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({ status: res.statusCode ?? 0, headers, text: async () => text })
      })
    })
    req.on('error', reject)
    req.end(init.body)
  })
}
