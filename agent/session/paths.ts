// Where a session's pty holder listens, and how the runtime starts it.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SessionSettings } from '../../protocol/session.js'

/** In the placement's folder (mode 0750 under the agent's 0700 state folder): only the agent's user reaches it. */
export const SOCKET_FILE = 'session.sock'

/** sun_path holds 108 bytes, the terminating NUL included. */
export const MAX_SOCKET_PATH = 107

export const socketPath = (placementDir: string) => join(placementDir, SOCKET_FILE)

/** The compiled holder, next to this module in dist/. */
export const HOLDER = fileURLToPath(new URL('./holder.js', import.meta.url))

/** argv (after node) that runs `command` in a pty under the holder, as the terminal of `placementId`. */
export function holderArgs(placementId: string, settings: SessionSettings, command: string[]): string[] {
  return [
    HOLDER,
    '--placement',
    placementId,
    '--idle',
    String(settings.idleTimeoutSeconds ?? 0),
    '--max',
    String(settings.maxDurationSeconds ?? 0),
    '--',
    ...command
  ]
}
