// systemd integration for Type=notify units: READY=1 once the daemon really
// serves, WATCHDOG=1 at half the WatchdogSec period but only while the
// daemon reports itself healthy (a stuck daemon stops pinging and systemd
// restarts it), STATUS= lines, STOPPING=1 on shutdown. Messages go through
// systemd-notify (the unit sets NotifyAccess=all: the sender is a child), one
// at a time so that they arrive in the order sent; without NOTIFY_SOCKET
// nothing is sent.
import { spawn } from 'node:child_process'

export interface Notifier {
  ready: (status: string) => void
  /** The unit's status line (`systemctl status`). */
  status: (text: string) => void
  stopping: () => void
  /** Starts watchdog checks, each followed by a ping only if `healthy()` says so; the next check waits for the last. */
  watchdog: (healthy: () => boolean | Promise<boolean>) => void
  close: () => void
}

/** `env`: the daemon's environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), passed by its main. */
export function systemdNotifier(env: NodeJS.ProcessEnv, binary = 'systemd-notify'): Notifier {
  const socket = env.NOTIFY_SOCKET
  let timer: NodeJS.Timeout | undefined
  let closed = false
  let sent: Promise<void> = Promise.resolve()
  const send = (...args: string[]) => {
    if (socket === undefined || socket === '') return
    sent = sent.then(
      async () =>
        await new Promise<void>((resolve) => {
          const child = spawn(binary, args, { stdio: 'ignore', env: { ...env } })
          child.on('error', () => resolve()) // no systemd-notify: nothing to tell
          child.on('exit', () => resolve())
        })
    )
  }
  const close = () => {
    closed = true
    clearTimeout(timer)
  }
  return {
    ready: (status) => {
      send('--ready', `--status=${status}`)
    },
    status: (text) => {
      send(`STATUS=${text}`)
    },
    stopping: () => {
      close()
      send('STOPPING=1')
    },
    watchdog: (healthy) => {
      const usec = Number(env.WATCHDOG_USEC)
      if (!Number.isFinite(usec) || usec <= 0) return
      const pid = Number(env.WATCHDOG_PID)
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) return
      const every = Math.max(100, usec / 2000)
      const check = async () => {
        const ok = await Promise.resolve()
          .then(healthy)
          .catch(() => false)
        if (closed) return
        if (ok) send('WATCHDOG=1')
        // After a failed check, look again soon: a dependency back within the period must ping before systemd's deadline.
        schedule(ok ? every : Math.max(100, every / 10))
      }
      const schedule = (ms: number) => {
        timer = setTimeout(() => void check(), ms)
        timer.unref()
      }
      schedule(every)
    },
    close
  }
}
