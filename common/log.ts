// pino JSON lines. Daemons log to stdout (journald); commands that print a
// result on stdout log to stderr so `--json` output stays clean.
import { pino, type Logger } from 'pino'

export type { Logger }

export function createLogger (name: string, options: { level?: string, stream?: 'stdout' | 'stderr' } = {}): Logger {
  return pino({
    name,
    level: options.level ?? process.env.GPUMESH_LOG_LEVEL ?? 'info',
    // Secrets never reach a log line, even when passed in an object by mistake.
    redact: { paths: ['token', '*.token', 'joinToken', '*.joinToken', 'clusterKey', '*.clusterKey', 'password', '*.password', 'authorization', '*.authorization', 'headers.authorization'], censor: '[redacted]' }
  }, pino.destination({ fd: options.stream === 'stderr' ? 2 : 1, sync: true }))
}
