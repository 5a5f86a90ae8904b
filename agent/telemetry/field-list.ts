// The fields a query asks for, minus those this driver's nvidia-smi does not
// know. One unknown name fails the whole call (`Field "x" is not a valid
// field to query.`, exit 2), so each is found from that message, replaced by
// its older name where it had one, or dropped; the host is told once.

const UNKNOWN_FIELD = /Field "([^"]+)" is not a valid field to query/

/** The field nvidia-smi refused in `output`, or null when it refused none. */
export function unknownField(output: string): string | null {
  return UNKNOWN_FIELD.exec(output)?.[1] ?? null
}

export class FieldList {
  private list: string[]
  /** What was dropped or renamed, each said once (the host's warnings). */
  readonly warnings: string[] = []

  constructor(
    fields: readonly string[],
    private readonly what: string,
    private readonly olderName: Readonly<Record<string, string>> = {}
  ) {
    this.list = [...fields]
  }

  get fields(): readonly string[] {
    return this.list
  }

  get arg(): string {
    return this.list.join(',')
  }

  /**
   * Takes the refused field out (or swaps in its older name); false when it
   * is not one of ours (then retrying would not help).
   */
  refuse(field: string): boolean {
    const at = this.list.indexOf(field)
    if (at < 0) return false
    const older = this.olderName[field]
    if (older !== undefined && !this.list.includes(older)) {
      this.list[at] = older
      this.warnings.push(`nvidia-smi does not know ${field} (${this.what}); using its older name ${older}`)
    } else {
      this.list.splice(at, 1)
      this.warnings.push(`nvidia-smi does not know ${field} (${this.what}); sampling without it`)
    }
    return true
  }
}
