// Admin clears survive an agent restart: per GPU bus, the kernel sequence
// number up to which XIDs no longer fail it (and the uncorrected ECC count
// accepted then), in <state>/gpu-health.json. Sequence numbers start again
// at each boot, so the marks hold only for the boot they were made in.
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ClearMark } from './tracker.js'

export class ClearMarks {
  private constructor(
    private readonly file: string,
    private readonly boot: string,
    readonly marks: Map<string, ClearMark>
  ) {}

  /** This boot's marks; a file from another boot, or one that does not read, holds none (a clear is never assumed). */
  static async load(stateDir: string, boot: string): Promise<ClearMarks> {
    const file = join(stateDir, 'gpu-health.json')
    const marks = new Map<string, ClearMark>()
    try {
      const saved = JSON.parse(await readFile(file, 'utf8')) as {
        bootId?: unknown
        cleared?: Record<string, ClearMark>
      }
      if (saved.bootId === boot && typeof saved.cleared === 'object' && saved.cleared !== null)
        for (const [bus, m] of Object.entries(saved.cleared))
          if (Number.isInteger(m?.seq) && Number.isInteger(m?.eccUncorrected)) marks.set(bus, m)
    } catch {}
    return new ClearMarks(file, boot, marks)
  }

  async save(bus: string, mark: ClearMark): Promise<void> {
    this.marks.set(bus, mark)
    const tmp = `${this.file}.tmp`
    await writeFile(
      tmp,
      `${JSON.stringify({ bootId: this.boot, cleared: Object.fromEntries(this.marks) }, null, 2)}\n`,
      {
        mode: 0o600
      }
    )
    await rename(tmp, this.file)
  }
}
