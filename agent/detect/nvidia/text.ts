// Shared by the nvidia-smi parsers: the result shape, the error for output
// that is not what the command prints, and text clean-up.

/** A parse result plus what was skipped or damaged, for warnings[]. */
export interface Parsed<T> {
  value: T
  problems: string[]
}

/** The output is not the command's output at all (garbage, empty, wrong command). */
export class ParseError extends Error {
  static readonly code = 'ERR_NVIDIA_SMI_OUTPUT'
  readonly code = ParseError.code
  constructor(message: string) {
    super(message)
    this.name = 'ParseError'
  }
}

// CSI sequences (colours, underline) that some terminals and tools leave in.
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g

export function stripAnsi(text: string): string {
  return text.replace(ANSI, '')
}

/** "81559 MiB" / "81559MiB" / "81559" -> 81559; anything else -> null. */
export function mib(text: string | undefined | null): number | null {
  if (text == null) return null
  const m = /^\s*(\d+)\s*(MiB)?\s*$/.exec(text)
  return m === null ? null : Number(m[1])
}

/** nvidia-smi's spellings of "no value". */
export function present(text: string | undefined | null): string | null {
  if (text == null) return null
  const t = text.trim()
  // "[N/A]", "[Not Supported]", "[Requested functionality has been deprecated]"...
  return t === '' || /^N\/A$/i.test(t) || /^\[.*\]$/.test(t) ? null : t
}
