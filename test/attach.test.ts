// Session attach end to end, every part real: a coordinator on embedded
// PostgreSQL, agents over libp2p on 127.0.0.1, the pty holder, WebSocket
// clients and the gpumesh CLI. Each session is `sh` in a pseudo-terminal.
import { request as httpsRequest } from 'node:https'
import { connect } from 'node:net'
import { join } from 'node:path'
import { execa } from 'execa'
import type { FastifyRequest } from 'fastify'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { STALL_MS } from '../coordinator/attach/bridge.js'
import { secureEnough } from '../coordinator/attach/route.js'
import type { Multiaddr } from '@multiformats/multiaddr'
import { encodeControl, FrameDecoder, SESSION_CLOSE, SESSION_PROTOCOL, WS_SUBPROTOCOL } from '../protocol/session.js'
import { ADMIN_TOKEN, eventually, type TestCoordinator } from './helpers/coordinator.js'
import { startTestCoordinator } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { bareNode, clusterKeyOf, joinedAgents, startTestAgent, type TestAgent } from './helpers/mesh.js'
import { Mismatches } from './helpers/mismatches.js'
import { endAtTeardown } from './helpers/process.js'
import { selfSignedCert } from './helpers/tls.js'
import { attach, attachRefused } from './helpers/ws.js'

const POOL = 'h100-80gb-8x-nvlink'
const shell = { driver: 'process', command: ['sh'], env: { PS1: '$ ' } }

async function running(c: TestCoordinator, id: string): Promise<any> {
  return await eventually(
    async () => {
      const w = (await c.call('GET', `/v1/workloads/${id}`)).body
      return w.placements?.[0]?.state === 'running' ? w : undefined
    },
    15_000,
    'the session to run'
  )
}

async function session(t: Test, c: TestCoordinator, name: string, extra: Record<string, unknown> = {}): Promise<any> {
  const r = await c.call('POST', '/v1/workloads', { name, kind: 'session', pool: POOL, gpus: 2, run: shell, ...extra })
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`)
  const w = await running(c, r.body.id as string)
  endAtTeardown(t, w.placements[0].id as string)
  return w
}

/** An endpoint (not attachable): created, not waited for. */
async function endpoint(c: TestCoordinator, name: string): Promise<{ status: number; body: any }> {
  return await c.call('POST', '/v1/workloads', {
    name,
    kind: 'endpoint',
    replicas: 1,
    gpus: 1,
    pools: [POOL],
    run: { driver: 'process', command: ['sleep', '60'] }
  })
}

async function cluster(t: Test): Promise<{ c: TestCoordinator; a: TestAgent }> {
  const c = await startTestCoordinator(t)
  const [a] = (await joinedAgents(t, c, 'h100-8x-nv18-nics', ['node-a'])) as [TestAgent]
  return { c, a }
}

t.test('attach: GPU environment, resize, two clients, detach and re-attach, exit code', async (t) => {
  const { c, a } = await cluster(t)
  const w = await session(t, c, 'dev')
  const gpus = (w.placements[0].gpus as number[]).join(',')

  const one = await attach(c, w.id, { cols: 90, rows: 30 })
  t.match(one.messages[0], {
    type: 'attached',
    workload: w.id,
    placement: w.placements[0].id,
    host: 'node-a',
    attached: 1
  })
  one.type('echo "gpus=[$CUDA_VISIBLE_DEVICES]"\n')
  await one.waitFor(new RegExp(`gpus=\\[${gpus}\\]`))
  t.pass(`CUDA_VISIBLE_DEVICES=${gpus} in the terminal`)

  one.type('stty size\n')
  // The tty echoes typed-ahead input before the prompt: the answer follows a newline or the prompt.
  await one.waitFor(/(?:\n|\$ )30 90\r\n/)
  t.pass('the terminal has the size given at attach')
  // The resize travels in order with the terminal input (one stream to the holder): the next stty sees it.
  one.resize(132, 41)
  const mark = one.output().length
  one.type('stty size\n')
  await one.waitFor(/(?:\n|\$ )41 132\r\n/, 10_000, mark)
  t.pass('resize reaches the pty')

  const two = await attach(c, w.id)
  t.equal((two.messages[0] as any).attached, 2, 'the second client sees two attaches')
  const at1 = one.output().length
  const at2 = two.output().length
  one.type('echo "both-$((40+2))"\n')
  await one.waitFor(/both-42/, 10_000, at1)
  await two.waitFor(/both-42/, 10_000, at2)
  t.pass('both clients see the output of input typed in one')
  const at2b = two.output().length
  const at1b = one.output().length
  two.type('echo "from-$((2*2))-two"\n')
  await one.waitFor(/from-4-two/, 10_000, at1b)
  await two.waitFor(/from-4-two/, 10_000, at2b)
  t.pass('input from either client reaches the terminal')

  // Detach both: the session goes on.
  one.ws.close()
  two.ws.close()
  await Promise.all([one.closed, two.closed])
  // Proof that both detaches reached the terminal: an attach that finds itself alone there
  // (closing a probe that did not is a detach too, so probe again until one does).
  let three = await attach(c, w.id)
  for (let i = 0; i < 50 && (three.messages[0] as any).attached !== 1; i++) {
    three.ws.close()
    await three.closed
    three = await attach(c, w.id)
  }
  t.equal((three.messages[0] as any).attached, 1, 'the terminal saw both clients go')
  t.equal(
    (await c.call('GET', `/v1/workloads/${w.id as string}`)).body.placements[0].state,
    'running',
    'detached, the session still runs'
  )
  await three.waitFor(/from-4-two/)
  t.pass('a new attach gets the scrollback')
  const at3 = three.output().length
  three.type('echo "still-$((1+1))"\n')
  await three.waitFor(/still-2/, 10_000, at3)
  three.type('exit 3\n')
  const closed = await three.closed
  t.same(closed, { code: SESSION_CLOSE.EXITED, reason: 'exited with code 3' })
  t.match(three.messages.at(-1), { type: 'exit', code: 3, reason: 'exited', signal: null })
  const done = await eventually(
    async () => {
      const x = (await c.call('GET', `/v1/workloads/${w.id as string}`)).body
      return x.state === 'failed' ? x : undefined
    },
    10_000,
    'the workload to end'
  )
  t.match(done.placements[0], { state: 'exited', exitCode: 3 })

  // Another member of the mesh (it has the cluster key) may not open a terminal: only the coordinator may.
  const other = await bareNode(t, clusterKeyOf(c))
  const stream = await other.dialProtocol(a.node.getMultiaddrs()[0] as Multiaddr, SESSION_PROTOCOL)
  stream.send(encodeControl({ v: 1, type: 'open', placementId: w.placements[0].id, cols: 80, rows: 24 }))
  const decoder = new FrameDecoder()
  const answer = await new Promise<unknown>((resolve) => {
    stream.addEventListener('message', (e) => {
      const f = decoder.push(e.data instanceof Uint8Array ? e.data : e.data.subarray())[0]
      if (f !== undefined && f.tag === 1) resolve(f.value)
    })
  })
  t.match(
    answer,
    { type: 'error', code: 'ERR_FORBIDDEN' },
    'a session stream from a peer that is not the coordinator is refused'
  )
})

t.test('refusals, bad messages, deletion and the idle timeout', async (t) => {
  const { c } = await cluster(t)
  const w = await session(t, c, 'dev')

  const none = await attachRefused(c, w.id, { token: null })
  t.match(none, { status: 401, body: { code: 'UNAUTHORIZED' } }, 'no token: 401')
  const viewer = (await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'watcher' })).body.token as string
  t.match(await attachRefused(c, w.id, { token: viewer }), { status: 403, body: { code: 'FORBIDDEN' } }, 'viewer: 403')
  t.match(await attachRefused(c, w.id, { token: 'gmt_nope' }), { status: 401 }, 'unknown token: 401')
  // The server closes a refused upgrade's connection itself (a client that keeps it must not hold the coordinator).
  const raw = await new Promise<string>((resolve, reject) => {
    const { port } = new URL(c.api)
    const s = connect(Number(port), '127.0.0.1', () => {
      s.write(
        `GET /v1/workloads/${w.id as string}/attach HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`
      )
    })
    let text = ''
    s.on('data', (d) => {
      text += d.toString()
    })
    s.on('end', () => resolve(text))
    s.on('error', reject)
    setTimeout(() => {
      s.destroy()
      reject(new Error(`the server kept the refused connection open: ${text}`))
    }, 15_000)
  })
  t.match(raw, /^HTTP\/1\.1 401/, 'a raw upgrade without a token: 401, then the server closes the connection')
  t.match(
    await attachRefused(c, '00000000-0000-4000-8000-000000000000'),
    { status: 404, body: { code: 'NOT_FOUND' } },
    'unknown workload: 404'
  )
  const ep = await endpoint(c, 'serve')
  t.match(
    await attachRefused(c, ep.body.id),
    { status: 409, body: { code: 'NOT_ATTACHABLE', detail: /only sessions/ } },
    'an endpoint: 409'
  )
  t.match(
    await c.call('GET', `/v1/workloads/${w.id as string}/attach`),
    { status: 400, body: { code: 'VALIDATION', detail: /WebSocket/ } },
    'plain GET: 400'
  )

  // A browser's way: the token as a subprotocol, next to gpumesh.v1 (which the server selects).
  const operator = (await c.call('POST', '/v1/tokens', { role: 'operator', name: 'dev' })).body.token as string
  const browser = await attach(c, w.id, { token: null, protocols: [WS_SUBPROTOCOL, `bearer.${operator}`] })
  t.equal(browser.ws.protocol, WS_SUBPROTOCOL, 'the server selects gpumesh.v1, never the token')
  browser.ws.close()

  const garbage: Array<[string, (x: Awaited<ReturnType<typeof attach>>) => void, number, RegExp]> = [
    ['bad JSON', (x) => x.ws.send('{"type":'), SESSION_CLOSE.BAD_MESSAGE, /JSON/],
    [
      'unknown type',
      (x) => x.ws.send(JSON.stringify({ type: 'reboot' })),
      SESSION_CLOSE.BAD_MESSAGE,
      /unknown message type "reboot"/
    ],
    [
      'bad resize',
      (x) => x.ws.send(JSON.stringify({ type: 'resize', cols: 0, rows: 10 })),
      SESSION_CLOSE.BAD_MESSAGE,
      /bad message/
    ],
    ['oversize', (x) => x.ws.send(Buffer.alloc(70_000, 0x61), { binary: true }), SESSION_CLOSE.TOO_BIG, /.*/]
  ]
  const m = new Mismatches()
  for (const [what, send, code, reason] of garbage) {
    const x = await attach(c, w.id)
    send(x)
    const closed = await x.closed
    m.check(
      what,
      `closed with ${code}, reason ${String(reason)} (${closed.reason})`,
      [closed.code, reason.test(closed.reason)],
      [code, true]
    )
  }
  t.same(m.list, [], 'each kind of garbage closes the attach with its code and reason')
  const after = await attach(c, w.id)
  const at = after.output().length
  after.type('echo "alive-$((3*3))"\n')
  await after.waitFor(/alive-9/, 10_000, at)
  t.pass('after the garbage, the coordinator and the session still serve')

  // Deleting the workload ends every attach with a reason.
  const second = await attach(c, w.id)
  t.equal((await c.call('DELETE', `/v1/workloads/${w.id as string}`)).status, 200)
  const ends = await Promise.all(
    [after, second].map(async (x) => {
      const closed = await x.closed
      const last = x.messages.at(-1) as { type?: string; reason?: string } | undefined
      return {
        code: closed.code,
        stopped: /session stopped/.test(closed.reason),
        last: { type: last?.type, reason: last?.reason }
      }
    })
  )
  t.same(
    ends,
    [after, second].map(() => ({
      code: SESSION_CLOSE.STOPPED,
      stopped: true,
      last: { type: 'exit', reason: 'stopped' }
    })),
    'both attaches end: stopped, with an exit message'
  )

  // Idle timeout: no input and no output for 2 s.
  const idle = await session(t, c, 'idle', { idleTimeoutSeconds: 2 })
  const x = await attach(c, idle.id)
  const closed = await x.closed
  t.equal(closed.code, SESSION_CLOSE.IDLE_TIMEOUT, `idle: ${closed.reason}`)
  t.match(x.messages.at(-1), { type: 'exit', reason: 'idle-timeout' })
  await eventually(
    async () =>
      (await c.call('GET', `/v1/workloads/${idle.id as string}`)).body.state === 'failed' ? true : undefined,
    10_000,
    'the idle session to end'
  )

  // Maximum duration: ended 2 s after it started, busy or not.
  const short = await session(t, c, 'short', { maxDurationSeconds: 2 })
  const y = await attach(c, short.id)
  const typing = setInterval(() => {
    y.type('echo busy\n')
  }, 200)
  const ended = await y.closed
  clearInterval(typing)
  t.equal(ended.code, SESSION_CLOSE.MAX_DURATION, `max duration: ${ended.reason}`)
  t.match(y.messages.at(-1), { type: 'exit', reason: 'max-duration' })
})

t.test('the agent dies mid-session: a clear close; the session survives and is attached again', async (t) => {
  const { c, a } = await cluster(t)
  const w = await session(t, c, 'dev')
  const x = await attach(c, w.id)
  x.type('echo "before-$((5+5))"\n')
  await x.waitFor(/before-10/)
  await a.crash()
  const closed = await x.closed
  t.equal(closed.code, SESSION_CLOSE.HOST_LOST)
  t.match(closed.reason, /lost the connection to host node-a/)

  const again = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', { stateDir: a.stateDir })
  await eventually(async () => (again.control.hostId !== null ? true : undefined), 10_000, 'the agent to come back')
  await running(c, w.id)
  const y = await eventually(
    async () => await attach(c, w.id).catch(() => undefined),
    10_000,
    'attach after the restart'
  )
  await y.waitFor(/before-10/)
  t.pass('the same terminal, re-adopted by the restarted agent (its scrollback is there)')
  y.type('exit 0\n')
  t.equal((await y.closed).code, SESSION_CLOSE.EXITED)
})

t.test('gpumesh attach: piped stdin, a real terminal (raw mode, resize, detach), refusals', async (t) => {
  const { c } = await cluster(t)
  await session(t, c, 'dev')
  const cli = join(ROOT, 'dist/cli/main.js')
  const env = { GPUMESH_API: c.api, GPUMESH_TOKEN: ADMIN_TOKEN }

  const piped = await execa(process.execPath, [cli, 'attach', 'dev'], {
    env,
    input: 'echo "cli-$((6*7))"\nexit 7\n',
    reject: false,
    timeout: 30_000
  })
  t.equal(piped.exitCode, 7, 'exits with the remote exit code')
  t.match(piped.stdout, /cli-42/)

  const ep = await endpoint(c, 'serve')
  t.ok(ep.status === 201)
  const refused = await execa(process.execPath, [cli, 'attach', 'serve'], { env, reject: false, timeout: 30_000 })
  t.equal(refused.exitCode, 1)
  t.match(refused.stderr, /error: serve is an endpoint; only sessions can be attached/)
  const viewer = (await c.call('POST', '/v1/tokens', { role: 'viewer', name: 'watcher' })).body.token as string
  const forbidden = await execa(process.execPath, [cli, 'attach', 'dev2'], {
    env: { ...env, GPUMESH_TOKEN: viewer },
    reject: false,
    timeout: 30_000
  })
  t.equal(forbidden.exitCode, 1)
  t.match(forbidden.stderr, /error: /)

  // In a real terminal: raw mode, the window size, SIGWINCH, Ctrl-] to detach.
  const w2 = await session(t, c, 'dev2')
  const { default: pty } = await import('@lydell/node-pty')
  // The CLI as a person runs it: without the test runner's NODE_OPTIONS (its loaders).
  const plain = Object.fromEntries(
    Object.entries(process.env).filter(([k, v]) => v !== undefined && k !== 'NODE_OPTIONS' && !k.startsWith('TAP'))
  ) as Record<string, string>
  const term = pty.spawn(process.execPath, [cli, 'attach', 'dev2'], { cols: 100, rows: 30, env: { ...plain, ...env } })
  let screen = ''
  term.onData((d) => {
    screen += d
  })
  let exitCode: number | null = null
  const exited = new Promise<number>((resolve) =>
    term.onExit((e) => {
      exitCode = e.exitCode
      resolve(e.exitCode)
    })
  )
  const see = async (re: RegExp, from: number): Promise<void> => {
    try {
      await eventually(async () => (re.test(screen.slice(from)) ? true : undefined), 30_000, String(re))
    } catch (err) {
      throw new Error(
        `${(err as Error).message} on the screen: ${JSON.stringify(screen.slice(-300))} (the CLI ${exitCode === null ? 'runs' : `exited ${String(exitCode)}`})`
      )
    }
  }
  /** The session's terminal size, as `stty size` prints it there. */
  const sttySize = async (): Promise<string> => {
    const mark = screen.length
    term.write('stty size\r')
    await see(/\n\d+ \d+\r*\n/, mark)
    return /\n(\d+ \d+)\r*\n/.exec(screen.slice(mark))?.[1] ?? ''
  }
  await see(/\$ /, 0) // the prompt, from the scrollback
  t.equal(await sttySize(), '30 100', 'the window size at attach')
  // SIGWINCH reaches the CLI on its own path, not in order with what is typed: ask until the new size shows.
  term.resize(120, 40)
  const sizes: string[] = []
  while (sizes.at(-1) !== '40 120' && sizes.length < 100) sizes.push(await sttySize())
  t.equal(sizes.at(-1), '40 120', `the window's change reaches the session (sizes seen: ${sizes.join(', ')})`)
  term.write('\x1d')
  t.equal(await exited, 0, 'Ctrl-] detaches with status 0')
  t.match(screen, /detached; the session goes on/)
  t.equal(
    (await c.call('GET', `/v1/workloads/${w2.id as string}`)).body.placements[0].state,
    'running',
    'the session runs on'
  )
})

t.test('a client that stops reading is dropped with a reason; the session goes on', async (t) => {
  const { c } = await cluster(t)
  const w = await session(t, c, 'dev')
  const slow = await attach(c, w.id)
  slow.ws.pause() // reads nothing more: its output piles up on the way, up to the bounded buffers, then the terminal waits
  // Far more than the kernel's socket buffers hold (several MB each way on loopback): the client must fall behind.
  const total = 64_000_000
  slow.type(`head -c ${total} /dev/zero | tr "\\0" x; echo; echo "end-$((1+2))"\n`)
  // The drop is seen from outside: a probe attach counts the attaches to the session; it is alone once the slow one is gone.
  await eventually(
    async () => {
      const probe = await attach(c, w.id)
      const count = (probe.messages[0] as any).attached as number
      probe.ws.close()
      await probe.closed
      return count === 1
    },
    STALL_MS * 4,
    'the stalled client to be dropped'
  )
  slow.ws.resume() // it reads again: what was queued for it (bounded), then why it was dropped
  const closed = await slow.closed
  t.equal(closed.code, SESSION_CLOSE.SLOW_CLIENT, `the stalled client was dropped: ${closed.reason}`)
  t.ok(
    slow.output().length < total / 2,
    `it got only what was queued for it when it stalled (${slow.output().length} bytes)`
  )
  const next = await attach(c, w.id)
  await next.waitFor(/end-3/, 30_000)
  t.pass('the terminal went on: a new attach sees the end of the output')
})

t.test('TLS: the API and attach over https/wss; plain ws only from loopback unless allowed', async (t) => {
  const { certFile: cert, keyFile: key, ca } = await selfSignedCert(t)
  const c: TestCoordinator = await startTestCoordinator(t, { tls: { certFile: cert, keyFile: key } })
  t.match(c.api, /^https:\/\/127\.0\.0\.1:\d+$/, 'the API is served over https')
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> =>
    await new Promise((resolve, reject) => {
      const req = httpsRequest(
        c.api + path,
        { method, ca, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' } },
        (res) => {
          let text = ''
          res.on('data', (d: Buffer) => {
            text += d.toString()
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
        }
      )
      req.on('error', reject)
      req.end(body === undefined ? undefined : JSON.stringify(body))
    })
  const token = (await call('POST', '/v1/join-tokens', {})).body.token as string
  const a = await startTestAgent(t, c, 'h100-8x-nv18-nics', 'node-a', { joinToken: token })
  await eventually(async () => (a.control.hostId !== null ? true : undefined), 10_000, 'the agent to join')
  const created = await call('POST', '/v1/workloads', { name: 'dev', kind: 'session', pool: POOL, gpus: 1, run: shell })
  t.equal(created.status, 201)
  const w = await eventually(
    async () => {
      const x = (await call('GET', `/v1/workloads/${created.body.id as string}`)).body
      return x.placements?.[0]?.state === 'running' ? x : undefined
    },
    15_000,
    'the session to run'
  )
  endAtTeardown(t, w.placements[0].id as string)

  const ws = new WebSocket(`${c.api.replace(/^https/, 'wss')}/v1/workloads/${w.id as string}/attach`, {
    ca,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  let out = ''
  ws.on('message', (d, isBinary) => {
    if (isBinary) out += d.toString()
  })
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  ws.send(Buffer.from('echo "tls-$((7*6))"\n'), { binary: true })
  await eventually(async () => (/tls-42/.test(out) ? true : undefined), 10_000, 'the echo over wss')
  t.pass('attach over wss')
  ws.close()
  const plain = new WebSocket(`${c.api.replace(/^https/, 'ws')}/v1/workloads/${w.id as string}/attach`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
  })
  await t.rejects(
    new Promise((resolve, reject) => {
      plain.once('open', resolve)
      plain.once('error', reject)
      plain.once('unexpected-response', () => reject(new Error('HTTP answer')))
    }),
    'plain ws to the TLS port fails'
  )

  // Who may use plain ws: a client on this machine, or anyone once the operator allows it.
  const req = (remoteAddress: string) => ({ socket: { remoteAddress } }) as unknown as FastifyRequest
  t.equal(
    secureEnough(req('10.1.2.3'), { tls: false, allowInsecure: false }),
    false,
    'plain ws from another machine: refused'
  )
  t.equal(secureEnough(req('127.0.0.1'), { tls: false, allowInsecure: false }), true, 'from loopback: served')
  t.equal(secureEnough(req('::ffff:127.0.0.1'), { tls: false, allowInsecure: false }), true)
  t.equal(secureEnough(req('::1'), { tls: false, allowInsecure: false }), true)
  t.equal(secureEnough(req('10.1.2.3'), { tls: true, allowInsecure: false }), true, 'over TLS: served')
  t.equal(secureEnough(req('10.1.2.3'), { tls: false, allowInsecure: true }), true, 'GPUMESH_ALLOW_INSECURE=1: served')
})
