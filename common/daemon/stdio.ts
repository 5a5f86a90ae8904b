// A process whose stdout or stderr goes away (`gpumesh up | tee` stopped with
// Ctrl-C: tee dies first) must still finish what it is doing, above all a
// shutdown. Node reports a write to a closed pipe as an 'error' event on the
// stream, which nothing would handle: the process would die half-way.

let surviving = false

const LOST = new Set(['EPIPE', 'EBADF', 'ERR_STREAM_DESTROYED'])

/** Whether the error says the other end of stdout/stderr is gone. */
export function isLostOutput(err: unknown): boolean {
  return LOST.has((err as NodeJS.ErrnoException | null)?.code ?? '')
}

/**
 * From now on, losing stdout or stderr is not fatal: later writes to it are
 * dropped and `lost` is told once per stream (e.g. to say so in a log file).
 */
export function surviveLostOutput(lost: (stream: 'stdout' | 'stderr', err: Error) => void): void {
  if (surviving) return
  surviving = true
  for (const [name, stream] of [
    ['stdout', process.stdout],
    ['stderr', process.stderr]
  ] as const) {
    let told = false
    stream.on('error', (err: Error) => {
      if (told) return
      told = true
      lost(name, err)
    })
  }
}

/** Whether surviveLostOutput() is in force (other handlers must then leave the process alone). */
export function survivingLostOutput(): boolean {
  return surviving
}

/** Writes `text` unless the stream is already gone; never throws. */
export function writeIfOpen(stream: NodeJS.WriteStream, text: string): void {
  if (stream.destroyed || stream.writableEnded) return
  try {
    stream.write(text)
  } catch {}
}
