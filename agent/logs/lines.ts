// `both` streams interleave by arrival, a whole line at a time: each
// stream's bytes wait here until a newline ends them.

const NEWLINE = 0x0a
/** A "line" longer than this (a progress bar redrawn with \r) goes out unfinished rather than wait in memory. */
const MAX_PARTIAL = 64 * 1024

export class LineJoiner {
  private partial: Uint8Array[] = []
  private partialBytes = 0

  /** The complete lines that `chunk` finishes (with what was held), or null; the unfinished rest is held. */
  push(chunk: Uint8Array): Uint8Array | null {
    const end = chunk.lastIndexOf(NEWLINE)
    if (end < 0) {
      this.hold(chunk)
      return this.partialBytes > MAX_PARTIAL ? this.flush() : null
    }
    const out = Buffer.concat([...this.partial, chunk.subarray(0, end + 1)])
    this.partial = []
    this.partialBytes = 0
    this.hold(chunk.subarray(end + 1))
    return out
  }

  /** What is held (an unfinished last line), or null. */
  flush(): Uint8Array | null {
    if (this.partialBytes === 0) return null
    const out = Buffer.concat(this.partial)
    this.partial = []
    this.partialBytes = 0
    return out
  }

  private hold(bytes: Uint8Array): void {
    if (bytes.length === 0) return
    this.partial.push(Buffer.from(bytes)) // the read buffer is not ours to keep
    this.partialBytes += bytes.length
  }
}
