// Row remapping (A100 and later), read about once a minute with
// `nvidia-smi --query-remapped-rows=... --format=csv,noheader,nounits`:
// it changes only on an uncorrectable memory error, and a pending remap
// needs a GPU reset to take effect. GPUs without row remapping (before
// Ampere) answer with nothing useful; then the values stay null.
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import { nvidiaSmi, type SmiRunner } from '../detect/nvidia/run.js'
import { FieldList, unknownField } from './field-list.js'
import { cell } from './gpu-sample.js'
import { busKey } from './xid.js'

export const REMAPPED_ROWS_EVERY_MS = 60_000

export interface RemappedRows {
  /** busKey() of the GPU. */
  bus: string
  correctable: number | null
  uncorrectable: number | null
  pending: boolean | null
  failure: boolean | null
}

const FIELDS = [
  'gpu_bus_id',
  'remapped_rows.correctable',
  'remapped_rows.uncorrectable',
  'remapped_rows.pending',
  'remapped_rows.failure'
]

export function parseRemappedRows(output: string, fields: readonly string[]): RemappedRows[] {
  const at = (f: string) => fields.indexOf(f)
  const rows: RemappedRows[] = []
  for (const line of output.split(/\r?\n/)) {
    const cells = line.split(',').map((c) => c.trim())
    if (cells.length !== fields.length) continue
    const bus = busKey(cells[at('gpu_bus_id')] ?? '')
    if (bus === null) continue
    const get = (f: string, kind: 'int' | 'flag') => (at(f) < 0 ? null : cell(cells[at(f)], kind))
    rows.push({
      bus,
      correctable: get('remapped_rows.correctable', 'int') as number | null,
      uncorrectable: get('remapped_rows.uncorrectable', 'int') as number | null,
      pending: get('remapped_rows.pending', 'flag') as boolean | null,
      failure: get('remapped_rows.failure', 'flag') as boolean | null
    })
  }
  return rows
}

export interface RemappedRowsOptions {
  binary: string
  env?: NodeJS.ProcessEnv
  everyMs?: number
  timeoutMs?: number
  onRows: (rows: RemappedRows[]) => void
  onWarning: (warning: string) => void
  log?: Logger
}

export class RemappedRowsPoller implements Startable {
  private readonly fields = new FieldList(FIELDS, 'row remapping')
  private readonly call: SmiRunner
  private readonly loop: Loop
  private failing = false

  constructor(private readonly o: RemappedRowsOptions) {
    this.call = nvidiaSmi({
      binary: o.binary,
      timeoutMs: o.timeoutMs ?? 10_000,
      ...(o.env === undefined ? {} : { env: o.env })
    })
    this.loop = new Loop(async () => await this.tick(), {
      name: 'row remapping',
      everyMs: o.everyMs ?? REMAPPED_ROWS_EVERY_MS,
      ...(o.log === undefined ? {} : { log: o.log })
    })
  }

  start(): void {
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  private async tick(): Promise<number | undefined> {
    if (!this.fields.fields.includes('gpu_bus_id')) return undefined
    const fields = [...this.fields.fields]
    try {
      const out = await this.call([`--query-remapped-rows=${fields.join(',')}`, '--format=csv,noheader,nounits'])
      this.failing = false
      this.o.onRows(parseRemappedRows(out, fields))
      return undefined
    } catch (err) {
      const message = (err as Error).message
      const refused = unknownField(message)
      if (refused !== null && this.fields.refuse(refused)) {
        this.o.onWarning(this.fields.warnings.at(-1) as string)
        return 0
      }
      // Said once per spell of failures: a GPU without row remapping fails every minute.
      if (!this.failing) this.o.log?.warn({ err: message }, 'row remapping not readable')
      this.failing = true
      return undefined
    }
  }
}
