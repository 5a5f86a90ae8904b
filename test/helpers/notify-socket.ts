// A real sd_notify receiver: an AF_UNIX datagram socket (what systemd gives
// a Type=notify service as $NOTIFY_SOCKET), served by python3 because Node
// has no Unix datagram sockets. Each message arrives as one line, its
// newline-separated assignments joined by '|', after the receiver's clock
// (ms) at its arrival.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

const RECEIVER = `
import os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
print('listening', flush=True)
while True:
    data = s.recv(65536)
    print('%.1f %s' % (time.time() * 1000, data.decode('utf-8', 'replace').strip().replace('\\n', '|')), flush=True)
`

export interface NotifySocket {
  path: string
  /** Messages so far, in order. */
  messages: () => string[]
  /** Messages so far with when each arrived (ms, the receiver's clock). */
  received: () => Array<{ at: number; message: string }>
  /** Resolves with the first message (from now on, or already received) that matches. */
  next: (pattern: RegExp, ms?: number) => Promise<string>
}

export async function notifySocket(t: Test): Promise<NotifySocket> {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-notify-'))
  const path = join(dir, 'notify.sock')
  const child = spawn('python3', ['-c', RECEIVER, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const lines: string[] = []
  const waiters = new Set<() => void>()
  let buffered = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buffered += d
    const parts = buffered.split('\n')
    buffered = parts.pop() ?? ''
    lines.push(...parts)
    for (const w of waiters) w()
  })
  await new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`python3 is needed for the NOTIFY_SOCKET receiver: ${err.message}`)))
    child.once('exit', (code) => reject(new Error(`the NOTIFY_SOCKET receiver exited ${String(code)}`)))
    const check = () => {
      if (lines.includes('listening')) {
        waiters.delete(check)
        resolve()
      }
    }
    waiters.add(check)
  })
  const received = () =>
    lines
      .filter((l) => l !== 'listening')
      .map((l) => {
        const space = l.indexOf(' ')
        return { at: Number(l.slice(0, space)), message: l.slice(space + 1) }
      })
  const messages = () => received().map((r) => r.message)
  return {
    path,
    messages,
    received,
    next: async (pattern, ms = 30_000) =>
      await new Promise<string>((resolve, reject) => {
        const check = () => {
          const found = messages().find((m) => pattern.test(m))
          if (found !== undefined) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(found)
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no notify message like ${String(pattern)} in ${ms} ms; got ${JSON.stringify(messages())}`))
        }, ms)
        waiters.add(check)
        check()
      })
  }
}
