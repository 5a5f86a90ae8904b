// gpumesh attach <workload>: this terminal joined to a session's terminal
// through the coordinator (like `kubectl exec -it`). Raw mode while attached
// (every key goes to the session, Ctrl-C included), window size changes
// forwarded, the terminal restored on every way out. Ctrl-] detaches and
// leaves the session running. When stdin is not a terminal (a pipe), its
// bytes are sent as they are and its end as Ctrl-D, so
// `printf 'make\n' | gpumesh attach dev` types one line and ends the shell.
//
// Exit status: the session command's own when it ended (128+n for signal n);
// 0 after a detach; 1 when the attach was refused (the API said no: printed as
// for other commands); 255 when the attach ended without the session's exit
// status (host lost, client too slow, coordinator shutdown), like ssh.
import type { Command } from 'commander'
import type { Problem, Workload } from '../../protocol/api.js'
import type { ServerMessage } from '../../protocol/session.js'
import { CliError, ProblemError, networkReason } from '../client.js'
import { contextOf, positiveInt, redact, resolveToken } from '../config.js'
import { resolveId } from '../resolve.js'
import { sleep } from '../../common/daemon/sleep.js'

export const EXIT_LOST = 255
/** protocol/session.ts SESSION_CLOSE.EXITED; the module itself (and ws) load only when attaching: every other command starts faster. */
const CLOSE_EXITED = 1000
const DETACH_KEY = 0x1d // Ctrl-]
const EOT = Buffer.from([0x04]) // Ctrl-D: end of input for the shell on the other side

interface AttachOptions {
  wait: number
}

export function attachCommands(program: Command): void {
  program
    .command('attach <workload>')
    .description('attach this terminal to a session (id or name); Ctrl-] detaches and leaves it running')
    .option('--wait <seconds>', 'how long to wait for a starting session to run', positiveInt, 60)
    .action(async (ref: string, o: AttachOptions, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      const id = await resolveId<Workload>(client, 'workload', '/v1/workloads', ref, (w) => w.name)
      await waitRunning(() => client.get<Workload>(`/v1/workloads/${id}`), o.wait * 1000)
      const code = await attachTerminal(flags.api, resolveToken(flags.token), id)
      process.exitCode = code
    })
}

/** Polls until the session's placement runs; a session that ended or cannot be placed is an error. */
async function waitRunning(get: () => Promise<Workload>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const w = await get()
    if (w.kind !== 'session')
      throw new CliError(
        `${w.name} is ${w.kind === 'endpoint' ? 'an endpoint' : 'a recipe'}; only sessions can be attached`
      )
    if (w.placements.some((p) => p.state === 'running')) return
    if (w.state === 'completed' || w.state === 'failed' || w.state === 'deleted')
      throw new CliError(`session ${w.name} is ${w.state}${w.reason === null ? '' : ` (${w.reason})`}`)
    if (Date.now() > deadline)
      throw new CliError(
        `session ${w.name} is not running after ${Math.round(ms / 1000)} s (${w.state}${w.reason === null ? '' : `: ${w.reason}`})`
      )
    await sleep(250)
  }
}

/** Runs one attach to the end; resolves with the exit status for this process. */
export async function attachTerminal(api: string, token: string, workloadId: string): Promise<number> {
  const stdin = process.stdin
  const stdout = process.stdout
  const tty = stdin.isTTY === true
  const size = () => ({ cols: stdout.columns ?? 80, rows: stdout.rows ?? 24 })
  const url = `${api.replace(/^http/, 'ws')}/v1/workloads/${workloadId}/attach?cols=${size().cols}&rows=${size().rows}`
  const { default: WebSocket } = await import('ws')
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } })

  let exit: Extract<ServerMessage, { type: 'exit' }> | null = null
  let detached = false
  let restored = false
  const restore = () => {
    if (restored) return
    restored = true
    if (tty) {
      try {
        stdin.setRawMode(false)
      } catch {}
    }
    stdin.pause()
  }
  process.once('exit', restore)

  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('unexpected-response', (_req, res) => {
      let text = ''
      res.on('data', (d: Buffer) => {
        text += d.toString()
      })
      res.on('end', () => {
        let body: unknown
        try {
          body = JSON.parse(text)
        } catch {}
        const p = body as Problem | undefined
        reject(
          typeof p?.code === 'string'
            ? new ProblemError(p)
            : new CliError(`the coordinator refused the attach: HTTP ${String(res.statusCode)}`)
        )
      })
    })
    ws.once('error', (err) => reject(new CliError(`cannot attach through ${api}: ${networkReason(err)}`)))
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  // Before the open settles: the first messages can come in the same read as the upgrade's answer.
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      // Output waits for a slow stdout (a pipe into less): the coordinator then pauses the session.
      if (!stdout.write(data as Buffer)) {
        ws.pause()
        stdout.once('drain', () => ws.resume())
      }
      return
    }
    let m: ServerMessage
    try {
      m = JSON.parse(String(data)) as ServerMessage
    } catch {
      return
    }
    if (m.type === 'exit') exit = m
  })
  await opened
  ws.on('error', () => {}) // the close that follows says what happened

  if (tty) stdin.setRawMode(true)
  stdin.on('data', (chunk: Buffer) => {
    if (tty && chunk.includes(DETACH_KEY)) {
      detached = true
      ws.close(1000, 'detached')
      return
    }
    if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true })
  })
  stdin.on('end', () => {
    if (!tty && ws.readyState === ws.OPEN) ws.send(EOT, { binary: true })
  })
  stdin.resume()
  const onResize = () => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'resize', ...size() }))
  }
  stdout.on('resize', onResize)
  const signals = ['SIGTERM', 'SIGHUP'] as const
  const onSignal = () => {
    detached = true
    ws.close(1000, 'detached')
  }
  for (const s of signals) process.on(s, onSignal)

  const end = await closed
  stdout.off('resize', onResize)
  for (const s of signals) process.off(s, onSignal)
  restore()
  const e = exit as Extract<ServerMessage, { type: 'exit' }> | null
  if (e !== null) {
    if (e.reason !== 'exited') process.stderr.write(redact(`gpumesh: ${end.reason}\n`))
    return e.code
  }
  if (detached) {
    if (tty) process.stderr.write('\r\ngpumesh: detached; the session goes on\r\n')
    return 0
  }
  const why = end.reason === '' ? `closed with code ${end.code}` : end.reason
  process.stderr.write(redact(`${tty ? '\r\n' : ''}error: attach ended: ${why} [${end.code}]\n`))
  return end.code === CLOSE_EXITED ? 0 : EXIT_LOST
}
