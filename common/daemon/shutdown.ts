// The one shutdown block of the binaries: the first SIGTERM or SIGINT tells
// systemd STOPPING=1 and stops the daemon; a second one does not interrupt
// that stop (it would leave half of it undone). Exit follows on its own once
// nothing is left running; a failed stop sets exit status 1.
import type { Logger } from '../log.js'
import type { Notifier } from '../systemd.js'

export interface ShutdownOptions {
  stop: () => Promise<void>
  systemd?: Notifier
  /** Told about the first signal, before stopping. */
  stopping?: (signal: NodeJS.Signals) => void
  /** Told about a signal that came while stopping. */
  repeated?: (signal: NodeJS.Signals) => void
  /** Told how it ended (err undefined: stopped). */
  stopped?: (err?: Error) => void
  signals?: NodeJS.Signals[]
}

/** Installs the handlers; resolves once a signal came and the stop it started is over. */
export async function stopOnSignals(o: ShutdownOptions): Promise<void> {
  const signals = o.signals ?? ['SIGTERM', 'SIGINT']
  await new Promise<void>((resolve) => {
    let stopping = false
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        o.repeated?.(signal)
        return
      }
      stopping = true
      o.systemd?.stopping()
      o.stopping?.(signal)
      o.stop()
        .then(
          () => {
            o.stopped?.()
          },
          (err: Error) => {
            process.exitCode = 1
            o.stopped?.(err)
          }
        )
        .finally(() => {
          for (const s of signals) process.removeListener(s, onSignal)
          resolve()
        })
    }
    for (const s of signals) process.on(s, onSignal)
  })
}

/** The daemons' shutdown: log the signal, stop, log how it went. */
export async function daemonShutdown(
  log: Logger,
  systemd: Notifier,
  stop: () => Promise<void>,
  message = 'stopping'
): Promise<void> {
  await stopOnSignals({
    stop,
    systemd,
    stopping: (signal) => {
      log.info({ signal }, message)
    },
    stopped: (err) => {
      if (err === undefined) log.info('stopped')
      else log.error({ err: err.message }, 'stop failed')
    }
  })
}
