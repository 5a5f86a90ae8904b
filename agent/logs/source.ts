// One output stream of a placement (stdout or stderr) as its files hold it:
// `<name>.log` and the one previous file `<name>.log.1` it was rotated into
// (agent/runtime/process-driver.ts). The two are read as one text: rotation
// cuts at a byte count, so a line may begin in the previous file and end in
// the current one.
//
// Following reads what was appended since the last read. A rotation renames
// the current file (the open handle keeps reading it to its end) and a new
// one appears under the name; the source then moves to the new file.
import type { FileHandle } from 'node:fs/promises'
import { open, stat } from 'node:fs/promises'

const CHUNK = 64 * 1024
const NEWLINE = 0x0a

/** Takes some bytes onwards; resolves once the receiver can take more. */
export type Emit = (chunk: Uint8Array) => Promise<void>

interface Segment {
  fh: FileHandle
  size: number
}

async function openIfThere(file: string): Promise<{ fh: FileHandle; size: number; ino: number } | null> {
  let fh: FileHandle
  try {
    fh = await open(file, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  const st = await fh.stat()
  return { fh, size: st.size, ino: st.ino }
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(length)
  const { bytesRead } = await fh.read(buffer, 0, length, position)
  return buffer.subarray(0, bytesRead)
}

/**
 * Where the last `lines` lines of the segments (read as one text) begin:
 * the segment and the position in it. A newline that ends the text ends
 * its last line; it does not begin another.
 */
export async function tailStart(segments: Segment[], lines: number): Promise<{ segment: number; position: number }> {
  if (lines === 0) return { segment: segments.length, position: 0 }
  let found = 0
  let last = true
  for (let s = segments.length - 1; s >= 0; s--) {
    const { fh, size } = segments[s] as Segment
    let end = size
    while (end > 0) {
      const start = Math.max(0, end - CHUNK)
      const chunk = await readAt(fh, start, end - start)
      for (let i = chunk.length - 1; i >= 0; i--) {
        const isNewline = chunk[i] === NEWLINE
        if (isNewline && !last && ++found === lines) return { segment: s, position: start + i + 1 }
        last = false
      }
      end = start
    }
  }
  return { segment: 0, position: 0 }
}

/** Sends bytes [from, to) of a file, chunk by chunk, each once the receiver takes it. */
async function send(fh: FileHandle, from: number, to: number, emit: Emit): Promise<number> {
  let at = from
  while (at < to) {
    const chunk = await readAt(fh, at, Math.min(CHUNK, to - at))
    if (chunk.length === 0) break // truncated under us
    at += chunk.length
    await emit(chunk)
  }
  return at
}

export class LogSource {
  private fh: FileHandle | null = null
  private ino = -1
  private offset = 0

  /** `file`: the current file's path (stdout.log); the previous one is `${file}.1`. */
  constructor(private readonly file: string) {}

  /** Sends what the files hold now (the last `tail` lines, or all of it) and stays at the end of the current file. */
  async start(tail: number | null, emit: Emit): Promise<void> {
    const previous = await openIfThere(`${this.file}.1`)
    try {
      const current = await openIfThere(this.file)
      if (current !== null) {
        this.fh = current.fh
        this.ino = current.ino
        this.offset = current.size
      }
      const segments = [previous, current].filter((s): s is NonNullable<typeof s> => s !== null)
      const from = tail === null ? { segment: 0, position: 0 } : await tailStart(segments, tail)
      for (let s = from.segment; s < segments.length; s++) {
        const seg = segments[s] as Segment
        await send(seg.fh, s === from.segment ? from.position : 0, seg.size, emit)
      }
    } finally {
      await previous?.fh.close()
    }
  }

  /** Sends what was written since the last read, moving on to a new file after a rotation; the bytes sent. */
  async more(emit: Emit): Promise<number> {
    if (this.fh === null) {
      const current = await openIfThere(this.file)
      if (current === null) return 0
      this.fh = current.fh
      this.ino = current.ino
      this.offset = 0
    }
    let sent = await this.drain(this.fh, emit)
    const now = await stat(this.file).catch(() => null)
    if (now !== null && now.ino !== this.ino) {
      // Rotated: what reached the old file before the rename is read first (drain above), then the new file.
      sent += await this.drain(this.fh, emit)
      await this.fh.close()
      this.fh = null
      sent += await this.more(emit)
    }
    return sent
  }

  async close(): Promise<void> {
    await this.fh?.close()
    this.fh = null
  }

  private async drain(fh: FileHandle, emit: Emit): Promise<number> {
    const before = this.offset
    for (;;) {
      const size = (await fh.stat()).size
      if (size <= this.offset) break
      this.offset = await send(fh, this.offset, size, emit)
    }
    return this.offset - before
  }
}
