// The only code that executes nvidia-smi. Each call has a deadline and a
// size limit; what comes back must be text. Failures are typed so detection
// can say exactly what went wrong in warnings[].
import { access, constants, stat } from 'node:fs/promises'
import { delimiter, isAbsolute, join } from 'node:path'
import { spawn } from 'node:child_process'
import { CodedError } from '../../../common/coded-error.js'

export class SmiError extends CodedError<'ERR_SMI_EXIT' | 'ERR_SMI_TIMEOUT' | 'ERR_SMI_OUTPUT' | 'ERR_SMI_SPAWN'> {}

export type SmiRunner = (args: string[]) => Promise<string>

export interface SmiOptions {
  /** Resolved path of the nvidia-smi executable. */
  binary: string
  timeoutMs: number
  /** Largest output accepted; -q -x of a 72-GPU rack is a few MB. */
  maxBytes?: number
  /** The child's environment (default: this process's); LC_ALL=C is laid over it. */
  env?: NodeJS.ProcessEnv
}

/** Where nvidia-smi is: `override` if given, else the first executable on `path` (default: the PATH children get); null when absent. */
export async function findNvidiaSmi(override: string | undefined, path?: string): Promise<string | null> {
  const candidates =
    override !== undefined && override !== ''
      ? [override]
      : (path ?? process.env.PATH ?? '')
          .split(delimiter)
          .filter((d) => isAbsolute(d))
          .map((d) => join(d, 'nvidia-smi'))
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK)
      if ((await stat(c)).isFile()) return c
    } catch {}
  }
  return null
}

export function nvidiaSmi({
  binary,
  timeoutMs,
  maxBytes = 32 * 1024 * 1024,
  env = process.env
}: SmiOptions): SmiRunner {
  return async (args) =>
    await new Promise<string>((resolve, reject) => {
      // node's own child_process rather than execa: detect is a short-lived
      // command and execa alone adds ~15 MB of RSS to it.
      const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, LC_ALL: 'C' } })
      const stdout: Buffer[] = []
      const stderr: Buffer[] = []
      let size = 0
      let settled = false
      const finish = (err: SmiError | null, output?: string) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        if (err === null) resolve(output as string)
        else reject(err)
      }
      // A process stuck in the kernel (a wedged driver) ignores SIGKILL until it
      // returns, so the deadline rejects without waiting for the exit.
      const timer = setTimeout(
        () => finish(new SmiError('ERR_SMI_TIMEOUT', `no answer within ${timeoutMs} ms; killed`)),
        timeoutMs
      )
      const collect = (into: Buffer[]) => (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBytes) finish(new SmiError('ERR_SMI_OUTPUT', `output larger than ${maxBytes} bytes`))
        else into.push(chunk)
      }
      child.stdout.on('data', collect(stdout))
      child.stderr.on('data', collect(stderr))
      child.on('error', (err) => finish(new SmiError('ERR_SMI_SPAWN', `cannot run ${binary}: ${err.message}`)))
      child.on('close', (code, signal) => {
        try {
          if (code === null) throw new SmiError('ERR_SMI_EXIT', `killed by ${signal ?? 'a signal'}`)
          const out = decode(Buffer.concat(stdout))
          if (code !== 0) {
            const said = `${out}\n${decode(Buffer.concat(stderr))}`
              .split('\n')
              .map((l) => l.trim())
              .find((l) => l !== '')
            throw new SmiError('ERR_SMI_EXIT', `exit ${code}${said === undefined ? '' : `: ${said.slice(0, 160)}`}`)
          }
          if (out.trim() === '') throw new SmiError('ERR_SMI_OUTPUT', 'empty output')
          finish(null, out)
        } catch (err) {
          finish(err as SmiError)
        }
      })
    })
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
// Text output has no control bytes besides tab, newline, CR and ESC (colours).
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]/

function decode(bytes: Uint8Array): string {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    throw new SmiError('ERR_SMI_OUTPUT', `output is not text (${bytes.length} bytes of invalid UTF-8)`)
  }
  if (CONTROL.test(text))
    throw new SmiError('ERR_SMI_OUTPUT', `output is not text (${bytes.length} bytes with control characters)`)
  return text
}
