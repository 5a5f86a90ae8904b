// pino JSON lines. Daemons log to stdout (journald); commands that print a
// result on stdout log to stderr so `--json` output stays clean. Under
// systemd (the binaries pass `journal` when JOURNAL_STREAM is set) each line
// starts with a syslog priority prefix such as <3>, so `journalctl -p err` works.
import { pino, type Logger } from 'pino'

export type { Logger }

/** pino level -> syslog priority (fatal crit, error err, warn warning, info, debug). */
const PRIORITY: Record<number, number> = { 60: 2, 50: 3, 40: 4, 30: 6, 20: 7, 10: 7 }

export function journalPrefix(line: string): string {
  const level = Number(/"level":(\d+)/.exec(line)?.[1])
  return `<${PRIORITY[level] ?? 6}>${line}`
}

export interface LoggerOptions {
  /** pino level (the binaries: GPUMESH_LOG_LEVEL); default info. */
  level?: string
  stream?: 'stdout' | 'stderr'
  file?: string
  /** Lines go to journald (JOURNAL_STREAM is set): prefix their syslog priority. */
  journal?: boolean
}

/** What the binaries read from their environment for logging. */
export function loggerSettings(env: NodeJS.ProcessEnv): { level?: string; journal: boolean } {
  const level = env.GPUMESH_LOG_LEVEL
  return {
    ...(level === undefined || level === '' ? {} : { level }),
    journal: env.JOURNAL_STREAM !== undefined && env.JOURNAL_STREAM !== ''
  }
}

export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  const journal = options.journal === true
  return pino(
    {
      name,
      level: options.level ?? 'info',
      // Secrets never reach a log line, even when passed in an object by mistake.
      redact: {
        paths: [
          'token',
          '*.token',
          'joinToken',
          '*.joinToken',
          'clusterKey',
          '*.clusterKey',
          'password',
          '*.password',
          'authorization',
          '*.authorization',
          'headers.authorization'
        ],
        censor: '[redacted]'
      },
      ...(journal && options.file === undefined ? { hooks: { streamWrite: journalPrefix } } : {})
    },
    options.file !== undefined
      ? pino.destination({ dest: options.file, append: true, mkdir: true, sync: true })
      : pino.destination({ fd: options.stream === 'stderr' ? 2 : 1, sync: true })
  )
}
