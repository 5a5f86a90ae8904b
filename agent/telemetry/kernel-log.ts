// Follows the kernel's messages: /dev/kmsg (or GPUMESH_KMSG). Records are
// `<priority>,<sequence>,<usec since boot>,<flags>[,...];<message>`. On start
// it reads everything the kernel still holds (this boot), then new records as
// they come. A character device (/dev/kmsg) gives one record per read and
// EAGAIN when there is no more (opened non-blocking: a blocking read would
// hold one of libuv's four threads forever); a regular file holds one record
// per line and is followed like `tail -f` (from the start again when it
// shrinks or is replaced). Both are polled once a second (default): an XID
// reaches the health table within a second, at a cost bench/telemetry shows
// (a 250 ms poll cost ~0.3 % of a core more on the 2-core bench machine).
import { constants } from 'node:fs'
import { type FileHandle, open, stat } from 'node:fs/promises'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'

export const DEFAULT_KMSG = '/dev/kmsg'

export interface KernelRecord {
  seq: number
  /** Microseconds since boot. */
  usec: number
  message: string
}

/** One record, or null for a continuation line (` KEY=value`) or anything else. */
export function parseKernelRecord(line: string): KernelRecord | null {
  const semi = line.indexOf(';')
  if (semi < 0 || line.startsWith(' ')) return null
  const head = line.slice(0, semi).split(',')
  if (head.length < 3 || !head.slice(0, 3).every((h) => /^\d+$/.test(h))) return null
  return { seq: Number(head[1]), usec: Number(head[2]), message: line.slice(semi + 1).replace(/\n$/, '') }
}

export interface KernelLogOptions {
  path?: string
  pollMs?: number
  onRecord: (record: KernelRecord) => void
  onWarning?: (warning: string) => void
  log?: Logger
}

const RECORD_MAX = 8192

export class KernelLog implements Startable {
  private readonly path: string
  private readonly loop: Loop
  private handle: FileHandle | null = null
  private device = false
  private ino = -1
  private offset = 0
  private partial = ''
  private unreadable: string | null = null
  private readonly buffer = Buffer.alloc(RECORD_MAX)
  /** The highest sequence number read so far (0: none). */
  lastSeq = 0

  constructor(private readonly o: KernelLogOptions) {
    this.path = o.path ?? DEFAULT_KMSG
    this.loop = new Loop(async () => await this.poll(), {
      name: 'kernel messages',
      everyMs: o.pollMs ?? 1000,
      immediate: false,
      ...(o.log === undefined ? {} : { log: o.log })
    })
  }

  /** Reads what the kernel holds now (so the caller sees this boot's history before start() returns), then follows. */
  async start(): Promise<void> {
    await this.poll()
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
    await this.handle?.close()
    this.handle = null
  }

  private async poll(): Promise<void> {
    try {
      await this.reopenIfReplaced()
      if (this.handle === null) return
      if (this.device) await this.readRecords(this.handle)
      else await this.readLines(this.handle)
      this.unreadable = null
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message
      if (this.unreadable !== why) {
        // Said once per cause: without kernel messages no XID is seen, and the operator should know.
        this.o.onWarning?.(`kernel messages (${this.path}) not readable: ${why}; XIDs are not seen`)
        this.o.log?.warn({ path: this.path, err: why }, 'kernel messages not readable')
      }
      this.unreadable = why
      await this.handle?.close().catch(() => {})
      this.handle = null
    }
  }

  private async reopenIfReplaced(): Promise<void> {
    if (this.handle !== null && this.device) return
    const s = await stat(this.path)
    if (this.handle !== null && s.ino === this.ino && s.size >= this.offset) return
    await this.handle?.close()
    this.handle = null
    this.device = s.isCharacterDevice()
    this.handle = await open(this.path, this.device ? constants.O_RDONLY | constants.O_NONBLOCK : constants.O_RDONLY)
    this.ino = s.ino
    this.offset = 0
    this.partial = ''
  }

  private async readRecords(h: FileHandle): Promise<void> {
    for (;;) {
      let n: number
      try {
        ;({ bytesRead: n } = await h.read(this.buffer, 0, RECORD_MAX, null))
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EAGAIN') return
        // Records were overwritten before we read them; the next read goes on after the gap.
        if (code === 'EPIPE') continue
        throw err
      }
      if (n === 0) return
      this.record(this.buffer.toString('utf8', 0, n))
    }
  }

  private async readLines(h: FileHandle): Promise<void> {
    for (;;) {
      const { bytesRead } = await h.read(this.buffer, 0, RECORD_MAX, this.offset)
      if (bytesRead === 0) return
      this.offset += bytesRead
      const lines = (this.partial + this.buffer.toString('utf8', 0, bytesRead)).split('\n')
      this.partial = (lines.pop() ?? '').slice(-RECORD_MAX)
      for (const l of lines) this.record(l)
    }
  }

  private record(text: string): void {
    const r = parseKernelRecord(text)
    if (r === null) return
    this.lastSeq = Math.max(this.lastSeq, r.seq)
    this.o.onRecord(r)
  }
}
