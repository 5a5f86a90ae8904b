// Multi-host tests and benchmarks on one machine, in Linux network
// namespaces created for the run: a bridge namespace holding a bridge, and
// one namespace per node with a veth into that bridge, an address of a
// 10.77.<n>.0/24 chosen for the run, `lo` up and a multicast route so that
// mDNS works. Nothing is routed out of the namespaces and the root namespace
// only gains (and loses) the namespaces' names. Needs root and iproute2.
//
// Processes (coordinator, agents) run inside their node's namespace through
// `ip netns exec`, which execs: the child's pid is the process itself. Their
// state directories, logs and sockets live in one temporary folder. The test
// process stays in the root namespace and reaches:
//   - PostgreSQL over its Unix socket (a filesystem object, so it is shared
//     across network namespaces; test/helpers/postgres.ts's embedded server
//     listens on one only);
//   - the coordinator's API through a small proxy started in the
//     coordinator's namespace that listens on a Unix socket too.
// destroy() (or the teardown of networkFor) kills every process left in the
// namespaces (placements included, which outlive agents by design) and
// deletes the namespaces; leftovers of a run that was killed before its
// teardown are removed by the next run.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { SseParser } from '../../protocol/sse.js'
import { cleanEnv } from './agent.js'
import { eventually } from './coordinator.js'
import { alive } from './process.js'
import { AGENT_RUN, MACHINES, NVIDIA_SMI_DOUBLE, ROOT } from './fixtures.js'

const run = promisify(execFile)

export const COORDINATOR = join(ROOT, 'dist/coordinator/main.js')
const PREFIX = 'gpumesh'
const NAME = /^gpumesh(\d+)x(\d+)-/

/** Why this machine cannot run namespace tests, or null when it can. */
export function netnsProblem(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux, not ${process.platform}`
  if (process.getuid?.() !== 0)
    return `network namespace tests need root (uid ${String(process.getuid?.())}): run them as root, as CI does`
  const ip = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  if (ip.error !== undefined)
    return `\`ip\` (iproute2) is not installed or not on PATH: ${ip.error.message} (Debian: apt-get install iproute2)`
  if (ip.status !== 0) return `\`ip netns list\` failed (exit ${String(ip.status)}): ${ip.stderr.trim()}`
  return null
}

/** Throws a clear error when namespace tests cannot run here (they fail, never skip). */
export function requireNetns(): void {
  const problem = netnsProblem()
  if (problem !== null) throw new Error(`cannot create Linux network namespaces: ${problem}`)
}

export interface NetNode {
  /** The node's name in the test (e.g. "coord", "h100-a"). */
  name: string
  /** Its network namespace. */
  ns: string
  /** Its address on the bridge (the /24 of the run). */
  ip: string
  /** The veth end in the bridge namespace: setting it down unplugs the node. */
  port: string
}

export interface NetProc {
  name: string
  node: NetNode
  child: ChildProcess
  pid: number
  /** stdout and stderr together. */
  logFile: string
  output: () => string
  exited: Promise<number | null>
  alive: () => boolean
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  stop: (graceMs?: number) => Promise<void>
}

let networks = 0

function ip(args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8' })
  if (r.error !== undefined || r.status !== 0)
    throw new Error(`ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`)
  return r.stdout
}

function pidsIn(ns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
  if (r.status !== 0) return []
  return r.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0)
}

/** Kills every process in the namespaces (SIGKILL), waits for them, then deletes the namespaces. */
function removeNamespaces(names: string[]): string[] {
  const problems: string[] = []
  for (const ns of names)
    for (const pid of pidsIn(ns)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  const deadline = Date.now() + 5000
  while (names.some((ns) => pidsIn(ns).length > 0) && Date.now() < deadline)
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50)
  for (const ns of names) {
    const left = pidsIn(ns)
    if (left.length > 0) problems.push(`${ns}: processes ${left.join(', ')} still alive`)
    const r = spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' })
    if (r.status !== 0 && !/No such file/.test(r.stderr)) problems.push(`ip netns del ${ns}: ${r.stderr.trim()}`)
  }
  return problems
}

/** Namespaces of earlier runs whose process is gone (killed before their teardown). */
function removeLeftovers(): void {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  const stale = (r.stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => {
      const m = NAME.exec(n)
      return m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]))
    })
  if (stale.length > 0) removeNamespaces(stale)
}

export interface NetworkOptions {
  /** Third octet of 10.77.<n>.0/24 (default: chosen from the pid and a counter). */
  subnet?: number
}

export class Network {
  readonly id: string
  readonly dir: string
  readonly subnet: string
  readonly bridgeNs: string
  readonly nodes = new Map<string, NetNode>()
  private readonly namespaces: string[] = []
  private readonly procs: NetProc[] = []
  private destroyed = false
  private readonly onExit = () => {
    this.destroySync()
  }

  private constructor(options: NetworkOptions) {
    const n = ++networks
    this.id = `${PREFIX}${process.pid}x${n}`
    this.subnet = `10.77.${options.subnet ?? 1 + ((process.pid * 7 + n) % 250)}`
    this.bridgeNs = `${this.id}-br`
    this.dir = mkdtempSync(join(tmpdir(), 'gpumesh-netns-'))
    // Last resort if the process exits without destroy() (an uncaught error).
    process.once('exit', this.onExit)
  }

  /** Creates the bridge namespace and one namespace per node name. Throws (after cleaning up) when it cannot. */
  static async create(names: string[], options: NetworkOptions = {}): Promise<Network> {
    requireNetns()
    removeLeftovers()
    const net = new Network(options)
    try {
      net.addNamespace(net.bridgeNs)
      ip(['-n', net.bridgeNs, 'link', 'set', 'lo', 'up'])
      ip(['-n', net.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge'])
      // No STP/forwarding delay: a port is forwarding as soon as it is up (heals are instant).
      ip(['-n', net.bridgeNs, 'link', 'set', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'])
      ip(['-n', net.bridgeNs, 'link', 'set', 'br0', 'up'])
      names.forEach((name, i) => {
        const node: NetNode = { name, ns: `${net.id}-${name}`, ip: `${net.subnet}.${10 + i}`, port: `p${i}` }
        net.addNamespace(node.ns)
        // The veth is created in the bridge namespace, its peer directly in the node's: the root namespace never holds either.
        ip(['-n', net.bridgeNs, 'link', 'add', node.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.ns])
        ip(['-n', net.bridgeNs, 'link', 'set', node.port, 'master', 'br0'])
        ip(['-n', net.bridgeNs, 'link', 'set', node.port, 'up'])
        ip(['-n', node.ns, 'link', 'set', 'lo', 'up'])
        ip(['-n', node.ns, 'addr', 'add', `${node.ip}/24`, 'dev', 'eth0'])
        ip(['-n', node.ns, 'link', 'set', 'eth0', 'up'])
        // No default route in here: without this one, mDNS fails silently (research §6 pitfall 12).
        ip(['-n', node.ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0'])
        net.nodes.set(name, node)
      })
    } catch (err) {
      net.destroySync()
      throw err
    }
    return net
  }

  node(name: string): NetNode {
    const n = this.nodes.get(name)
    if (n === undefined) throw new Error(`no node ${name} in this network`)
    return n
  }

  /** Unplugs the node at the bridge: its packets vanish silently, as with a pulled cable or a dead switch port. */
  async cut(name: string): Promise<void> {
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', this.node(name).port, 'down'])
  }

  async heal(name: string): Promise<void> {
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', this.node(name).port, 'up'])
  }

  /** Runs a short command in the node's namespace; its stdout. */
  async exec(name: string, command: string, args: string[]): Promise<string> {
    return (await run('ip', ['netns', 'exec', this.node(name).ns, command, ...args], { encoding: 'utf8' })).stdout
  }

  /** Addresses of the peers the node has established TCP connections with (from `ss`). */
  async tcpPeers(name: string): Promise<Set<string>> {
    const out = await this.exec(name, 'ss', ['-tnH', 'state', 'established'])
    const peers = new Set<string>()
    for (const line of out.split('\n')) {
      // Recv-Q Send-Q Local:Port Peer:Port (state filtered: no State column)
      const peer = line.trim().split(/\s+/)[3]
      if (peer !== undefined) peers.add(peer.replace(/:\d+$/, ''))
    }
    return peers
  }

  /** Starts `command args` in the node's namespace with exactly `env`; output to <dir>/<label>.log. */
  spawn(name: string, label: string, command: string, args: string[], env: Record<string, string>): NetProc {
    const node = this.node(name)
    const logFile = join(this.dir, `${label}.log`)
    const fd = openSync(logFile, 'a')
    const child = spawn('ip', ['netns', 'exec', node.ns, command, ...args], { env, stdio: ['ignore', fd, fd] })
    closeSync(fd)
    if (child.pid === undefined) throw new Error(`cannot start ${label} in ${node.ns}`)
    const pid = child.pid
    const exited = new Promise<number | null>((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode)
      child.once('exit', (code) => resolve(code))
    })
    let done = false
    void exited.then(() => {
      done = true
    })
    const proc: NetProc = {
      name: label,
      node,
      child,
      pid,
      logFile,
      output: () => {
        try {
          return readFileSync(logFile, 'utf8')
        } catch {
          return ''
        }
      },
      exited,
      alive: () => !done,
      stop: async (graceMs = 5000) => {
        if (done) return
        try {
          process.kill(pid, 'SIGTERM')
        } catch {}
        const timer = setTimeout(() => {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {}
        }, graceMs)
        await exited
        clearTimeout(timer)
      }
    }
    this.procs.push(proc)
    return proc
  }

  /** The last lines of every process's log, for a failing test's diagnosis. */
  logTails(lines = 40): string {
    return this.procs
      .map(
        (p) =>
          `--- ${p.name} (${p.node.ns}, pid ${p.pid}${p.alive() ? '' : ', exited'})\n${p.output().split('\n').slice(-lines).join('\n')}`
      )
      .join('\n')
  }

  /** Stops the processes it started (SIGTERM, then SIGKILL), then kills whatever is left in the namespaces and deletes them. */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    await Promise.all(
      this.procs.map(async (p) => {
        await p.stop(5000)
      })
    )
    const problems = this.destroySync()
    if (problems.length > 0) throw new Error(`network ${this.id} not fully removed: ${problems.join('; ')}`)
  }

  private destroySync(): string[] {
    if (this.destroyed) return []
    this.destroyed = true
    process.removeListener('exit', this.onExit)
    const problems = removeNamespaces([...this.namespaces].reverse())
    rmSync(this.dir, { recursive: true, force: true })
    return problems
  }

  private addNamespace(ns: string): void {
    ip(['netns', 'add', ns])
    this.namespaces.push(ns)
  }
}

/** A network whose every trace goes at the end of `t` (also when it fails, after printing the processes' logs). */
export async function networkFor(t: Test, names: string[], options: NetworkOptions = {}): Promise<Network> {
  const net = await Network.create(names, options)
  t.teardown(async () => {
    // stderr: the test has ended by now, tap takes no more comments.
    if (!t.passing()) process.stderr.write(`# network ${net.id}: the processes' logs (last lines)\n${net.logTails()}\n`)
    await net.destroy()
  })
  return net
}

export interface ApiResponse {
  status: number
  body: any
}

export interface EventMessage {
  id: number
  type: string
  subject: { kind: string; id: string }
  data: Record<string, unknown>
  at: string
}

/** The admin API over a Unix socket (the proxy into a coordinator's namespace) or plain http://host:port. */
export class ApiClient {
  private readonly where: { socketPath: string } | { host: string; port: number }

  /** `target`: a Unix socket path, or http://host:port. */
  constructor(
    readonly target: string,
    readonly token: string
  ) {
    if (target.startsWith('/')) {
      this.where = { socketPath: target }
      return
    }
    const url = new URL(target)
    this.where = { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) }
  }

  async call(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<ApiResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    return await new Promise((resolve, reject) => {
      const req = request(
        {
          ...this.where,
          method,
          path,
          agent: false,
          timeout: timeoutMs,
          headers: {
            host: 'coordinator',
            authorization: `Bearer ${this.token}`,
            ...(payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) })
          }
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => {
            text += d
          })
          res.on('end', () => {
            let parsed: unknown = text
            try {
              parsed = JSON.parse(text)
            } catch {}
            resolve({ status: res.statusCode ?? 0, body: parsed })
          })
          res.on('error', reject)
        }
      )
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)))
      req.on('error', reject)
      req.end(payload)
    })
  }

  /** GET that must succeed (2xx); its body. */
  async get(path: string): Promise<any> {
    const r = await this.call('GET', path)
    if (r.status < 200 || r.status > 299) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body
  }

  /** Follows GET /v1/events (from now on, or after `after`); each event to `onEvent` with performance.now() at its arrival. */
  events(onEvent: (e: EventMessage, at: number) => void, after?: number): { ready: Promise<void>; close: () => void } {
    let req: ReturnType<typeof request> | null = null
    let closed = false
    const ready = new Promise<void>((resolve, reject) => {
      req = request(
        {
          ...this.where,
          method: 'GET',
          path: after === undefined ? '/v1/events' : `/v1/events?after=${after}`,
          agent: false,
          headers: { host: 'coordinator', authorization: `Bearer ${this.token}`, accept: 'text/event-stream' }
        },
        (res) => {
          if (res.statusCode !== 200) {
            reject(new Error(`GET /v1/events: ${String(res.statusCode)}`))
            res.resume()
            return
          }
          const parser = new SseParser()
          res.setEncoding('utf8')
          let first = true
          res.on('data', (chunk: string) => {
            const at = performance.now()
            // The server opens the stream with a comment line: from then on, nothing is missed.
            if (first) {
              first = false
              resolve()
            }
            for (const m of parser.push(chunk)) {
              if (m.event === '' || m.data === '') continue
              try {
                onEvent(JSON.parse(m.data) as EventMessage, at)
              } catch {}
            }
          })
          res.on('error', () => {})
        }
      )
      req.on('error', (err) => {
        if (!closed) reject(err)
      })
      req.end()
    })
    return {
      ready,
      close: () => {
        closed = true
        ;(req as ReturnType<typeof request> | null)?.destroy()
      }
    }
  }
}

// A TCP proxy from a Unix socket to host:port, run inside a namespace (CommonJS for `node -e`).
const PROXY = `
const net = require('node:net'); const fs = require('node:fs');
const [sock, host, port] = process.argv.slice(1);
try { fs.unlinkSync(sock) } catch {}
net.createServer((c) => {
  const u = net.connect(Number(port), host);
  const end = () => { c.destroy(); u.destroy() };
  c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
  c.pipe(u); u.pipe(c);
}).listen(sock, () => { console.log('proxy listening on ' + sock) });
process.on('SIGTERM', () => process.exit(0));
`

export const NET_ADMIN_TOKEN = 'gmt_netns-admin-token-0123456789abcdef'

export interface NetCoordinator {
  proc: NetProc
  node: NetNode
  api: ApiClient
  stateDir: string
  clusterKeyFile: string
  peerId: string
  /** Where agents dial it, ending in /p2p/<peer id>. */
  multiaddrs: string[]
  stop: () => Promise<void>
}

export interface NetCoordinatorOptions {
  databaseUrl: string
  heartbeatMs?: number
  /** More environment (e.g. GPUMESH_LOG_LEVEL). */
  env?: Record<string, string>
  /** How long start-up may take (default 60 s). */
  timeoutMs?: number
}

/** eventually(), failing at once (with its output) when `proc` exits meanwhile. */
async function until<T>(
  check: () => T | undefined | Promise<T | undefined>,
  ms: number,
  what: string,
  proc: NetProc
): Promise<T> {
  return await eventually(
    async () => {
      const v = await check()
      if (v === undefined && !proc.alive())
        throw new Error(`${proc.name} exited while waiting for ${what}:\n${proc.output().slice(-3000)}`)
      return v
    },
    ms,
    what
  ).catch((err: Error) => {
    throw err.message.startsWith('timed out')
      ? new Error(`${err.message}; ${proc.name} said:\n${proc.output().slice(-3000)}`)
      : err
  })
}

/** `gpumesh-coordinator` in the node's namespace (libp2p on <ip>:7471, API on <ip>:7470), and a proxy to its API. */
export async function startNetCoordinator(
  net: Network,
  name: string,
  o: NetCoordinatorOptions
): Promise<NetCoordinator> {
  const node = net.node(name)
  // The namespaces cannot reach a TCP database of the root namespace; a Unix socket is a file, shared by all.
  if (!/[?&]host=%2F|[?&]host=\//.test(o.databaseUrl)) {
    throw new Error(
      `the coordinator in a network namespace needs PostgreSQL over a Unix socket (host=/path in the URL); ${o.databaseUrl.replace(/:[^:@/]*@/, ':***@')} is TCP, which the namespace cannot reach. Unset TEST_DATABASE_URL for these tests.`
    )
  }
  const stateDir = join(net.dir, `${name}-state`)
  const proc = net.spawn(
    name,
    name,
    process.execPath,
    [COORDINATOR],
    cleanEnv({
      GPUMESH_STATE_DIR: stateDir,
      GPUMESH_LISTEN: `/ip4/${node.ip}/tcp/7471`,
      GPUMESH_API_LISTEN: `${node.ip}:7470`,
      DATABASE_URL: o.databaseUrl,
      GPUMESH_ADMIN_TOKEN: NET_ADMIN_TOKEN,
      GPUMESH_LEADER_RETRY_MS: '200',
      ...(o.heartbeatMs === undefined ? {} : { GPUMESH_HEARTBEAT_MS: String(o.heartbeatMs) }),
      ...o.env
    })
  )
  const info = await until(
    () => {
      try {
        return JSON.parse(readFileSync(join(stateDir, 'coordinator.json'), 'utf8')) as {
          peerId: string
          multiaddrs: string[]
          api: string
        }
      } catch {
        return undefined
      }
    },
    o.timeoutMs ?? 60_000,
    'coordinator.json',
    proc
  )
  const socketPath = join(net.dir, `${name}-api.sock`)
  const proxy = net.spawn(
    name,
    `${name}-api-proxy`,
    process.execPath,
    ['-e', PROXY, socketPath, node.ip, '7470'],
    cleanEnv()
  )
  const api = new ApiClient(socketPath, NET_ADMIN_TOKEN)
  await until(
    async () =>
      (await api.call('GET', '/livez', undefined, 2000).catch(() => null))?.status === 200 ? true : undefined,
    10_000,
    'the API through the proxy',
    proxy
  )
  return {
    proc,
    node,
    api,
    stateDir,
    clusterKeyFile: join(stateDir, 'cluster.key'),
    peerId: info.peerId,
    multiaddrs: info.multiaddrs,
    stop: async () => {
      await proc.stop()
      await proxy.stop()
    }
  }
}

export interface NetAgent {
  proc: NetProc
  node: NetNode
  name: string
  stateDir: string
  /** A placement's stdout so far ('' before it exists). */
  placementLog: (placementId: string) => string
  /** A placement's record (placement.json), or null. */
  placementRecord: (placementId: string) => { state: string; reason: string | null; pid: number | null } | null
  stop: () => Promise<void>
}

export interface NetAgentOptions {
  /** Fixture machine (share/machines/<machine>) replayed by the nvidia-smi double. */
  machine: string
  coordinator: NetCoordinator
  joinToken?: string
  /** Registered name (default: the node's name). */
  nodeName?: string
  env?: Record<string, string>
}

/** `gpumesh-agent run` in the node's namespace, listening on <ip>:7472, mDNS on. */
export function startNetAgent(net: Network, name: string, o: NetAgentOptions): NetAgent {
  const node = net.node(name)
  const stateDir = join(net.dir, `${name}-state`)
  const proc = net.spawn(
    name,
    name,
    process.execPath,
    AGENT_RUN,
    cleanEnv({
      GPUMESH_STATE_DIR: stateDir,
      GPUMESH_LISTEN: `/ip4/${node.ip}/tcp/7472`,
      GPUMESH_COORDINATOR: o.coordinator.multiaddrs.join(','),
      GPUMESH_CLUSTER_KEY_FILE: o.coordinator.clusterKeyFile,
      GPUMESH_NODE_NAME: o.nodeName ?? name,
      GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE,
      GPUMESH_SMI_FIXTURE: join(MACHINES, o.machine),
      ...(o.joinToken === undefined ? {} : { GPUMESH_JOIN_TOKEN: o.joinToken }),
      ...o.env
    })
  )
  const placementDir = (id: string) => join(stateDir, 'placements', id)
  return {
    proc,
    node,
    name: o.nodeName ?? name,
    stateDir,
    placementLog: (id) => {
      try {
        return readFileSync(join(placementDir(id), 'stdout.log'), 'utf8')
      } catch {
        return ''
      }
    },
    placementRecord: (id) => {
      try {
        return JSON.parse(readFileSync(join(placementDir(id), 'placement.json'), 'utf8'))
      } catch {
        return null
      }
    },
    stop: async () => {
      await proc.stop()
    }
  }
}
