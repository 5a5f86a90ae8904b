// Paths to the repository's fixtures and test doubles, from compiled tests
// (dist/test/...) or the sources alike.
import { readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.js'

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    try {
      readFileSync(join(dir, 'package.json'))
      return dir
    } catch {}
    const up = resolve(dir, '..')
    if (up === dir) throw new Error('package.json not found above the test helpers')
    dir = up
  }
}

export const ROOT = findRoot()
export const CAPTURES = join(ROOT, 'share/nvidia-smi')
export const MACHINES = join(ROOT, 'share/machines')
export const NVIDIA_SMI_DOUBLE = join(ROOT, 'share/nvidia-smi-replay')
export const AGENT = join(ROOT, 'dist/agent/main.js')
/** Node's arguments for the agent daemon, as the installed gpumesh-agent wrapper starts it. */
export const AGENT_RUN = [...AGENT_NODE_FLAGS, AGENT, 'run']

export function capture(file: string): string {
  return readFileSync(join(CAPTURES, file), 'utf8')
}

/** The endpoint replica of the serving tests and benches (test/helpers/replica.ts): run it as a placement's command. */
export const REPLICA_COMMAND = [process.execPath, join(ROOT, 'dist/test/helpers/replica.js')]
