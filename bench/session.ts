// Interactive session figures through the whole path, on loopback: a
// WebSocket client (this process) -> gpumesh-coordinator (its own process,
// embedded PostgreSQL) -> libp2p -> gpumesh-agent (its own process) -> the
// pty holder -> the terminal, and back.
//   echo_rtt_p50_ms, echo_rtt_p99_ms  one keystroke to its echo (the terminal's
//                                     line discipline echoes it), one at a time
//   cat_mb_per_s                      `cat` of a file (100 MB by default) through
//                                     the attach, timed to the end marker
// Usage: npm run bench -- session [keystrokes=2000] [mb=100]
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { sleep } from '../common/daemon/sleep.js'
import { createLogger } from '../common/log.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../coordinator/store/embedded.js'
import { eventually } from '../test/helpers/coordinator.js'
import { AGENT_RUN, ROOT } from '../test/helpers/fixtures.js'
import { freePort } from '../test/helpers/redis.js'
import { percentile } from './stats.js'

const TOKEN = 'gmt_bench-session-token-0123456789'
const log = (m: string) => process.stderr.write(`bench session: ${m}\n`)
/** Polls `check` (its errors count as not yet) until it gives a value. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  return await eventually(async () => await check().catch(() => undefined), ms, what)
}

async function writeFile(file: string, mb: number): Promise<number> {
  const line = 'the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ\n'
  const block = Buffer.from(line.repeat(Math.ceil((1024 * 1024) / line.length))).subarray(0, 1024 * 1024 - 1)
  const chunk = Buffer.concat([block, Buffer.from('\n')])
  const out = createWriteStream(file)
  for (let i = 0; i < mb; i++)
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err == null ? resolve() : reject(err))))
  return mb * chunk.length
}

interface Attached {
  ws: WebSocket
  onData: (f: (b: Buffer) => void) => void
}

async function attach(api: string, id: string): Promise<Attached> {
  const ws = new WebSocket(`${api.replace(/^http/, 'ws')}/v1/workloads/${id}/attach?cols=200&rows=50`, {
    headers: { authorization: `Bearer ${TOKEN}` }
  })
  let sink: (b: Buffer) => void = () => {}
  await new Promise<void>((resolve, reject) => {
    ws.on('message', (data, isBinary) => {
      if (isBinary) sink(data as Buffer)
      else if ((JSON.parse(String(data)) as { type: string }).type === 'attached') resolve()
    })
    ws.once('error', reject)
    ws.once('close', (code, reason) => reject(new Error(`closed: ${code} ${reason.toString()}`)))
  })
  return {
    ws,
    onData: (f) => {
      sink = f
    }
  }
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const keystrokes = Number(args[0] ?? 2000)
  const mb = Number(args[1] ?? 100)
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-session-'))
  const children: ChildProcess[] = []
  // Sessions outlive agents by design: they are deleted (and so stopped) before the agent goes.
  const created: string[] = []
  let remove = async (_id: string): Promise<void> => {}
  // PostgreSQL in a folder of its own (as the tests do: under a root-only folder its user could not reach it).
  const pgDir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-session-pg-'))
  let db: EmbeddedDatabase | null = null
  try {
    db = await startEmbeddedPostgres(pgDir, createLogger('bench', { level: 'warn', stream: 'stderr' }))
    const port = await freePort()
    const api = `http://127.0.0.1:${port}`
    const coordState = join(dir, 'coord')
    const coordinator = spawn(process.execPath, [join(ROOT, 'dist/coordinator/main.js')], {
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        GPUMESH_STATE_DIR: coordState,
        GPUMESH_API_LISTEN: `127.0.0.1:${port}`,
        GPUMESH_ADMIN_TOKEN: TOKEN,
        GPUMESH_LEADER_RETRY_MS: '100',
        GPUMESH_LOG_LEVEL: 'warn',
        GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
        GPUMESH_STALE_HOST_SECONDS: '0'
      },
      stdio: ['ignore', 2, 2]
    })
    children.push(coordinator)
    const info = await until('the coordinator', 120_000, async () => {
      const file = join(coordState, 'coordinator.json')
      return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { multiaddrs: string[] }) : undefined
    })
    const call = async (method: string, path: string, body?: unknown): Promise<any> => {
      const headers = {
        authorization: `Bearer ${TOKEN}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' })
      }
      const r = await fetch(api + path, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      return await r.json()
    }
    remove = async (id) => {
      await call('DELETE', `/v1/workloads/${id}`)
    }
    const { token } = await call('POST', '/v1/join-tokens', {})
    const agent = spawn(process.execPath, AGENT_RUN, {
      env: {
        ...process.env,
        GPUMESH_STATE_DIR: join(dir, 'agent'),
        GPUMESH_COORDINATOR: info.multiaddrs.join(','),
        GPUMESH_CLUSTER_KEY_FILE: join(coordState, 'cluster.key'),
        GPUMESH_JOIN_TOKEN: token,
        GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
        GPUMESH_NO_MDNS: '1',
        GPUMESH_NODE_NAME: 'bench-a',
        GPUMESH_NVIDIA_SMI: join(ROOT, 'share/nvidia-smi-replay'),
        GPUMESH_SMI_FIXTURE: join(ROOT, 'share/machines/h100-8x-nv18-nics'),
        GPUMESH_LOG_LEVEL: 'warn'
      },
      stdio: ['ignore', 'ignore', 2]
    })
    children.push(agent)
    await until('the agent to join', 60_000, async () =>
      (await call('GET', '/v1/hosts')).items.length > 0 ? true : undefined
    )
    const create = async (name: string, command: string[]) => {
      const w = await call('POST', '/v1/workloads', {
        name,
        kind: 'session',
        pool: 'h100-80gb-8x-nvlink',
        gpus: 1,
        run: { driver: 'process', command, env: { PS1: '' } }
      })
      created.push(w.id as string)
      await until(`session ${name}`, 30_000, async () =>
        (await call('GET', `/v1/workloads/${w.id as string}`)).placements?.[0]?.state === 'running' ? true : undefined
      )
      return w.id as string
    }

    // Keystroke echo: the line discipline echoes each byte; `cat` consumes the lines.
    const echoId = await create('echo', ['sh', '-c', 'exec cat > /dev/null'])
    const e = await attach(api, echoId)
    await sleep(500)
    const rtts: number[] = []
    for (let i = 0; i < keystrokes + 100; i++) {
      const key = String.fromCharCode(97 + (i % 26))
      const t0 = performance.now()
      await new Promise<void>((resolve) => {
        e.onData((b) => {
          if (b.includes(key)) resolve()
        })
        e.ws.send(Buffer.from(key), { binary: true })
      })
      if (i >= 100) rtts.push(performance.now() - t0) // the first 100 warm up the path
      if (i % 64 === 63) {
        // end the line (untimed): the terminal's line buffer is finite
        await new Promise<void>((resolve) => {
          e.onData((b) => {
            if (b.includes('\n')) resolve()
          })
          e.ws.send(Buffer.from('\n'), { binary: true })
        })
      }
    }
    e.ws.close()
    rtts.sort((a, b) => a - b)

    // Throughput: cat of a file, to an end marker the typed command itself does not contain.
    const file = join(dir, 'data.txt')
    const bytes = await writeFile(file, mb)
    const catId = await create('cat', ['sh'])
    const c = await attach(api, catId)
    await sleep(300)
    let received = 0
    let tail = ''
    const t0 = performance.now()
    await new Promise<void>((resolve) => {
      c.onData((b) => {
        received += b.length
        tail = (tail + b.toString('latin1')).slice(-64)
        if (tail.includes('__DONE__')) resolve()
      })
      c.ws.send(Buffer.from(`cat ${file}; echo __DO""NE__\n`), { binary: true })
    })
    const seconds = (performance.now() - t0) / 1000
    c.ws.close()
    log(
      `${keystrokes} keystrokes; cat of ${bytes} bytes (${received} through the terminal, with CR added) in ${seconds.toFixed(2)} s`
    )
    return {
      echo_rtt_p50_ms: Number(percentile(rtts, 0.5).toFixed(3)),
      echo_rtt_p99_ms: Number(percentile(rtts, 0.99).toFixed(3)),
      cat_mb_per_s: Number((bytes / 1e6 / seconds).toFixed(1)),
      keystrokes,
      cat_mb: bytes / 1e6
    }
  } finally {
    for (const id of created) await remove(id).catch(() => {})
    if (created.length > 0) await sleep(1500) // the agent stops them (SIGTERM, hangup)
    for (const child of children.reverse()) {
      child.kill('SIGTERM')
      await new Promise((resolve) => {
        if (child.exitCode !== null) resolve(null)
        else {
          child.once('exit', resolve)
          setTimeout(resolve, 15_000)
        }
      })
    }
    await db?.stop()
    rmSync(dir, { recursive: true, force: true })
    rmSync(pgDir, { recursive: true, force: true })
  }
}
