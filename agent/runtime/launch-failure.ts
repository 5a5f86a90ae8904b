// A docker placement whose container never ran ends with docker's own exit
// codes: 125 (the client or daemon failed: no such image, pull denied, bad
// option), 126 (the container's command cannot be invoked), 127 (not found).
// That is a launch failure, reported as `failed` with docker's words, not an
// exit of a workload that ran.
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { STDERR_FILE } from './state.js'

const DOCKER_LAUNCH: Record<number, string> = {
  125: 'docker could not start the container',
  126: "the container's command cannot be invoked",
  127: "the container's command was not found"
}

/** The reason a docker placement that ended with `exitCode` never ran, or null when it ran. */
export async function dockerLaunchFailure(exitCode: number, dir: string | null): Promise<string | null> {
  const what = DOCKER_LAUNCH[exitCode]
  if (what === undefined) return null
  const said = dir === null ? '' : await lastLine(join(dir, STDERR_FILE))
  return `launch failed: ${what} (exit ${exitCode})${said === '' ? '' : `: ${said}`}`
}

/** The last non-empty line of the file's last 4 KiB, at most 300 characters; '' when there is none. */
async function lastLine(file: string): Promise<string> {
  let fh: Awaited<ReturnType<typeof open>> | undefined
  try {
    fh = await open(file, 'r')
    const { size } = await fh.stat()
    const length = Math.min(size, 4096)
    const buf = Buffer.alloc(length)
    await fh.read(buf, 0, length, size - length)
    const lines = buf
      .toString('utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
    return (lines[lines.length - 1] ?? '').slice(0, 300)
  } catch {
    return ''
  } finally {
    await fh?.close()
  }
}
