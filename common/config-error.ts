// The one error for "the operator must fix the configuration": every binary
// maps it to exit 78 (EX_CONFIG), which systemd's RestartPreventExitStatus
// names, so a unit does not restart into the same mistake forever.
import { EXIT_CONFIG } from './cli.js'

export class ConfigError extends Error {
  readonly code: string

  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ConfigError'
    this.code = options.code ?? 'ERR_CONFIG'
  }
}

export function isConfigError(err: unknown): err is ConfigError {
  return err instanceof ConfigError
}

/** The exit status for an error that ended a start: 78 for configuration, else `otherwise`. */
export function exitCodeFor(err: unknown, otherwise = 1): number {
  return isConfigError(err) ? EXIT_CONFIG : otherwise
}
