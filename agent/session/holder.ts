// The pty holder: the process of a session placement. The runtime starts it
// under its wrapper like any placement (`node holder.js --idle S --max S --
// command...`, in the placement's folder, with the placement's environment),
// so a session outlives an agent restart, is re-adopted by pid, and its exit
// code reaches the coordinator the usual way.
//
// It runs the command in one pseudo-terminal and listens on session.sock in
// its folder. Every connection there (one per `gpumesh attach`, relayed by
// the agent) speaks protocol/session.ts frames: `open`, then terminal input
// and `resize`; it gets `ready`, the last SCROLLBACK bytes of output, then
// the output as it comes (the same bytes to every attach), and `exit` when
// the command ends. Closing a connection detaches; the terminal goes on.
//
// Flow control: the terminal is paused while any attach has more than
// HIGH_WATER bytes unsent (a program writing faster than its slowest reader
// blocks, as on a real terminal); an attach that stays behind for STALL_MS
// is dropped with ERR_SLOW_CLIENT so it cannot hold the others forever.
// Memory is bounded either way. The output is also appended to stdout.log.
//
// The session ends when its command exits, or with a hangup (SIGHUP to every
// process of the terminal's session, SIGKILL after HANGUP_GRACE_MS) when the
// placement is stopped (SIGTERM), after idleTimeoutSeconds without input or
// output, or after maxDurationSeconds. It exits with the command's status.
import { chmodSync, readdirSync, rmSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { constants as osConstants } from 'node:os'
import pty from '@lydell/node-pty'
import {
  encodeControl,
  encodeData,
  FrameDecoder,
  Open,
  Resize,
  SESSION_VERSION,
  type SessionFrameError,
  TAG_DATA,
  type EndReason,
  type FromHost
} from '../../protocol/session.js'
import { isValid, schemaErrors } from '../../protocol/validate.js'
import { readProcStat } from '../runtime/proc.js'
import { SOCKET_FILE } from './paths.js'

const SCROLLBACK = 64 * 1024
const HIGH_WATER = 256 * 1024
const LOW_WATER = 64 * 1024
const STALL_MS = 10_000
const HANGUP_GRACE_MS = 500
/** Input queued for the terminal beyond this pauses the attach it comes from. */
const INPUT_HIGH_WATER = 1024 * 1024
/** Output gathered into one frame at most (well under MAX_SESSION_FRAME). */
const MAX_BATCH = 128 * 1024

interface Options {
  placementId: string
  idleSeconds: number
  maxSeconds: number
  command: string[]
}

function parseArgs(argv: string[]): Options {
  const sep = argv.indexOf('--')
  const flags = argv.slice(0, sep < 0 ? argv.length : sep)
  const command = sep < 0 ? [] : argv.slice(sep + 1)
  const num = (name: string) => {
    const i = flags.indexOf(name)
    const v = i < 0 ? '0' : (flags[i + 1] ?? '')
    if (!/^\d+$/.test(v)) throw new Error(`${name} must be a whole number of seconds, not ${JSON.stringify(v)}`)
    return Number(v)
  }
  if (command.length === 0) throw new Error('usage: holder.js --placement ID [--idle S] [--max S] -- command [args...]')
  const p = flags.indexOf('--placement')
  return {
    placementId: p < 0 ? '' : (flags[p + 1] ?? ''),
    idleSeconds: num('--idle'),
    maxSeconds: num('--max'),
    command
  }
}

interface Attachment {
  socket: Socket
  decoder: FrameDecoder
  open: boolean
  behindSince: number | null
}

function main(o: Options): void {
  const placementId = o.placementId
  const attachments = new Set<Attachment>()
  const scrollback: Buffer[] = []
  let scrollbackBytes = 0
  let lastActivity = Date.now()
  let ending: EndReason | null = null
  let exited = false
  let paused = false

  const [file, ...args] = o.command as [string, ...string[]]
  const term = pty.spawn(file, args, {
    name: process.env.TERM ?? 'xterm-256color',
    cols: 80,
    rows: 24,
    cwd: process.cwd(),
    env: process.env as Record<string, string>,
    encoding: null // raw bytes: a UTF-8 character split across reads stays intact end to end
  })
  // node-pty's master side; its write queue is the terminal's input backlog.
  const master = (term as unknown as { _socket?: Socket })._socket

  const send = (a: Attachment, frame: FromHost) => {
    if (!a.socket.destroyed) a.socket.write(encodeControl(frame))
  }

  const updatePause = () => {
    const behind = [...attachments].some((a) => a.behindSince !== null)
    if (behind && !paused) {
      term.pause()
      paused = true
    }
    if (!behind && paused) {
      term.resume()
      paused = false
    }
  }

  const detach = (a: Attachment) => {
    if (!attachments.delete(a)) return
    updatePause()
  }

  // Reads of a pty return at most a few KiB: what arrives in one turn of the
  // event loop leaves as one frame (fewer, larger messages on every hop; no
  // added wait, since the flush runs as soon as the loop has read what is there).
  let pending: Buffer[] = []
  let pendingBytes = 0
  term.onData((chunk) => {
    const buf = chunk as unknown as Buffer
    lastActivity = Date.now()
    if (pending.length === 0) setImmediate(flush)
    pending.push(buf)
    pendingBytes += buf.length
    if (pendingBytes >= MAX_BATCH) flush()
  })

  const flush = () => {
    if (pending.length === 0) return
    const buf = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending)
    pending = []
    pendingBytes = 0
    process.stdout.write(buf) // stdout.log (a file: written synchronously)
    scrollback.push(buf)
    scrollbackBytes += buf.length
    while (scrollback.length > 1 && scrollbackBytes - (scrollback[0]?.length ?? 0) >= SCROLLBACK)
      scrollbackBytes -= (scrollback.shift() as Buffer).length
    const frame = encodeData(buf)
    for (const a of attachments) {
      if (!a.open) continue
      a.socket.write(frame)
      if (a.socket.writableLength > HIGH_WATER && a.behindSince === null) a.behindSince = Date.now()
    }
    updatePause()
  }

  term.onExit(({ exitCode, signal }) => {
    flush()
    exited = true
    const name =
      signal === undefined || signal === 0
        ? null
        : (Object.entries(osConstants.signals).find(([, n]) => n === signal)?.[0] ?? `SIG${signal}`)
    const code = name === null ? exitCode : 128 + (signal as number)
    const frame: FromHost = {
      v: SESSION_VERSION,
      type: 'exit',
      code: Math.min(255, Math.max(0, code)),
      signal: name,
      reason: ending ?? 'exited'
    }
    process.exitCode = frame.code // also when the loop empties before the goodbyes below are out
    clearInterval(timer)
    server.close()
    rmSync(SOCKET_FILE, { force: true })
    const closing = [...attachments].map(async (a) => {
      send(a, frame)
      a.socket.end()
      await new Promise<void>((resolve) => {
        a.socket.once('close', () => resolve())
        setTimeout(resolve, 2000)
      })
    })
    void Promise.all(closing).then(() => process.exit(frame.code))
  })

  /** A hangup, as when a terminal's line drops: SIGHUP to its session, SIGKILL to what is left. */
  const end = (reason: EndReason) => {
    if (ending !== null || exited) return
    ending = reason
    const session = term.pid
    const members = () => {
      const out: number[] = []
      for (const e of readProcEntries()) {
        const s = readProcStat(e)
        if (s !== null && s.session === session && s.state !== 'Z') out.push(e)
      }
      return out
    }
    for (const pid of members())
      try {
        process.kill(pid, 'SIGHUP')
      } catch {}
    term.resume() // a paused terminal could not even print its way out
    paused = false
    setTimeout(() => {
      for (const pid of members())
        try {
          process.kill(pid, 'SIGKILL')
        } catch {}
    }, HANGUP_GRACE_MS).unref()
  }
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const) process.on(sig, () => end('stopped'))

  const startedAt = Date.now()
  // Checked here rather than with one long setTimeout: timers overflow past 24.8 days, maxDurationSeconds goes to 30.
  const timer = setInterval(
    () => {
      const now = Date.now()
      if (o.idleSeconds > 0 && now - lastActivity >= o.idleSeconds * 1000) end('idle-timeout')
      if (o.maxSeconds > 0 && now - startedAt >= o.maxSeconds * 1000) end('max-duration')
      for (const a of attachments) {
        if (a.behindSince !== null && now - a.behindSince > STALL_MS) {
          // Dropped: what it has queued (bounded) still drains if it ever reads.
          detach(a)
          send(a, {
            v: SESSION_VERSION,
            type: 'error',
            code: 'ERR_SLOW_CLIENT',
            message: `this attach read nothing for ${STALL_MS / 1000} s while the terminal had output for it`
          })
          a.socket.end()
          setTimeout(() => a.socket.destroy(), 30_000).unref()
        }
      }
    },
    o.idleSeconds > 0 ? Math.min(1000, Math.max(100, o.idleSeconds * 250)) : 1000
  )

  const onFrames = (a: Attachment, chunk: Buffer) => {
    let frames
    try {
      frames = a.decoder.push(chunk)
    } catch (err) {
      refuse(a, (err as SessionFrameError).message)
      return
    }
    for (const f of frames) {
      if (!a.open) {
        if (f.tag !== 1 || !isValid(Open, f.value)) {
          refuse(
            a,
            `the first frame must be open: ${f.tag === TAG_DATA ? 'got terminal data' : schemaErrors(Open, f.value, 3).join('; ')}`
          )
          return
        }
        if (f.value.placementId !== placementId) {
          refuse(a, `this is the terminal of placement ${placementId}, not ${f.value.placementId}`)
          return
        }
        a.open = true
        lastActivity = Date.now()
        term.resize(f.value.cols, f.value.rows)
        send(a, { v: SESSION_VERSION, type: 'ready', attached: [...attachments].filter((x) => x.open).length })
        if (scrollbackBytes > 0) a.socket.write(encodeData(Buffer.concat(scrollback)))
        continue
      }
      if (f.tag === TAG_DATA) {
        lastActivity = Date.now()
        term.write(f.data as unknown as string)
        if (master !== undefined && master.writableLength > INPUT_HIGH_WATER) {
          a.socket.pause()
          master.once('drain', () => a.socket.resume())
        }
      } else if (isValid(Resize, f.value)) {
        term.resize(f.value.cols, f.value.rows)
      } else {
        refuse(a, `unexpected control frame: ${schemaErrors(Resize, f.value, 3).join('; ')}`)
        return
      }
    }
  }

  const refuse = (a: Attachment, message: string) => {
    detach(a)
    send(a, { v: SESSION_VERSION, type: 'error', code: 'ERR_FRAME', message })
    a.socket.end()
  }

  // stdout.log is a copy: a full disk must not take the terminal down with it.
  process.stdout.on('error', () => {})
  rmSync(SOCKET_FILE, { force: true }) // a stale one from a holder that was killed
  const server = createServer((socket) => {
    if (exited) {
      socket.destroy()
      return
    }
    const a: Attachment = { socket, decoder: new FrameDecoder(), open: false, behindSince: null }
    attachments.add(a)
    socket.on('data', (chunk) => onFrames(a, chunk))
    socket.on('drain', () => {
      if (a.behindSince !== null && socket.writableLength <= LOW_WATER) {
        a.behindSince = null
        updatePause()
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => detach(a))
  })
  server.on('error', (err) => {
    process.stderr.write(`gpumesh session holder: cannot listen on ${SOCKET_FILE}: ${err.message}\n`)
    end('stopped')
  })
  server.listen(SOCKET_FILE, () => {
    try {
      chmodSync(SOCKET_FILE, 0o600)
    } catch {}
  })
}

/** Pids in /proc. */
function readProcEntries(): number[] {
  try {
    return readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .map(Number)
  } catch {
    return []
  }
}

try {
  main(parseArgs(process.argv.slice(2)))
} catch (err) {
  process.stderr.write(`gpumesh session holder: ${(err as Error).message}\n`)
  process.exit(127)
}
