// systemd integration for Type=notify units: READY=1 once the daemon really
// serves, WATCHDOG=1 at half the WatchdogSec period but only while the
// daemon reports itself healthy (a stuck daemon stops pinging and systemd
// restarts it), STOPPING=1 on shutdown. Messages go through systemd-notify
// (the unit sets NotifyAccess=all: the sender is a child); without
// NOTIFY_SOCKET nothing is sent.
import { spawn } from 'node:child_process'

export interface Notifier {
  ready: (status: string) => void
  stopping: () => void
  /** Starts watchdog pings, each sent only if `healthy()` says so. */
  watchdog: (healthy: () => boolean) => void
  close: () => void
}

/** `env`: the daemon's environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID), passed by its main. */
export function systemdNotifier(env: NodeJS.ProcessEnv, binary = 'systemd-notify'): Notifier {
  const socket = env.NOTIFY_SOCKET
  let timer: NodeJS.Timeout | undefined
  const send = (...args: string[]) => {
    if (socket === undefined || socket === '') return
    const child = spawn(binary, args, { stdio: 'ignore', env: { ...env } })
    child.on('error', () => {}) // no systemd-notify: nothing to tell
  }
  return {
    ready: (status) => {
      send('--ready', `--status=${status}`)
    },
    stopping: () => {
      clearInterval(timer)
      send('STOPPING=1')
    },
    watchdog: (healthy) => {
      const usec = Number(env.WATCHDOG_USEC)
      if (!Number.isFinite(usec) || usec <= 0) return
      const pid = Number(env.WATCHDOG_PID)
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) return
      timer = setInterval(
        () => {
          if (healthy()) send('WATCHDOG=1')
        },
        Math.max(100, usec / 2000)
      )
      timer.unref()
    },
    close: () => {
      clearInterval(timer)
    }
  }
}
