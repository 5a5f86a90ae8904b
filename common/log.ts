// pino JSON lines. Daemons log to stdout (journald); commands that print a
// result on stdout log to stderr so `--json` output stays clean. Under
// systemd (JOURNAL_STREAM set) each line starts with a syslog priority
// prefix such as <3>, so `journalctl -p err` works.
import { pino, type Logger } from 'pino'

export type { Logger }

/** pino level -> syslog priority (fatal crit, error err, warn warning, info, debug). */
const PRIORITY: Record<number, number> = { 60: 2, 50: 3, 40: 4, 30: 6, 20: 7, 10: 7 }

export function journalPrefix (line: string): string {
  const level = Number(/"level":(\d+)/.exec(line)?.[1])
  return `<${PRIORITY[level] ?? 6}>${line}`
}

export function createLogger (name: string, options: { level?: string, stream?: 'stdout' | 'stderr', file?: string } = {}): Logger {
  const journal = process.env.JOURNAL_STREAM !== undefined && process.env.JOURNAL_STREAM !== ''
  return pino({
    name,
    level: options.level ?? process.env.GPUMESH_LOG_LEVEL ?? 'info',
    // Secrets never reach a log line, even when passed in an object by mistake.
    redact: { paths: ['token', '*.token', 'joinToken', '*.joinToken', 'clusterKey', '*.clusterKey', 'password', '*.password', 'authorization', '*.authorization', 'headers.authorization'], censor: '[redacted]' },
    ...(journal && options.file === undefined ? { hooks: { streamWrite: journalPrefix } } : {})
  }, options.file !== undefined
    ? pino.destination({ dest: options.file, append: true, mkdir: true, sync: true })
    : pino.destination({ fd: options.stream === 'stderr' ? 2 : 1, sync: true }))
}
