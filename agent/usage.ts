// Per-GPU utilisation and memory for heartbeats, sampled from nvidia-smi
// every few seconds (not every heartbeat: a query costs a process start).
import { Loop } from '../common/daemon/loop.js'
import type { Startable } from '../common/daemon/startable.js'
import type { GpuUsage } from '../protocol/control.js'
import type { SmiRunner } from './detect/nvidia/run.js'

const FIELDS = ['index', 'utilization.gpu', 'memory.used']

export class UsageSampler implements Startable {
  private last: GpuUsage[] = []
  private readonly loop: Loop

  constructor(
    private readonly smi: SmiRunner | null,
    everyMs = 5000
  ) {
    this.loop = new Loop(
      async () => {
        await this.sample()
      },
      { name: 'GPU usage sampling', everyMs }
    )
  }

  start(): void {
    if (this.smi !== null) this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  current(): GpuUsage[] {
    return this.last
  }

  private async sample(): Promise<void> {
    try {
      const output = await (this.smi as SmiRunner)([`--query-gpu=${FIELDS.join(',')}`, '--format=csv,nounits'])
      this.last = parseUsage(output)
    } catch {
      // No numbers this time; heartbeats go on with the last ones.
    }
  }
}

/** Reads the columns by header, so any capture with them (and nounits or not) works. */
export function parseUsage(output: string): GpuUsage[] {
  const lines = output.split(/\r?\n/).filter((l) => l.trim() !== '')
  const header = (lines[0] ?? '').split(',').map((h) => h.trim().replace(/\s*\[.*\]$/, ''))
  const col = (name: string) => header.indexOf(name)
  const num = (v: string | undefined) => {
    const n = Number((v ?? '').trim().replace(/\s*(%|MiB)$/, ''))
    return v === undefined || v.trim() === '' || Number.isNaN(n) ? null : n
  }
  if (col('utilization.gpu') < 0 && col('memory.used') < 0) return []
  // The index column is optional in captures; rows are in index order.
  return lines.slice(1).map((line, i) => {
    const cells = line.split(',')
    const index = col('index') < 0 ? i : Number(cells[col('index')]?.trim())
    const util = num(cells[col('utilization.gpu')])
    const mem = num(cells[col('memory.used')])
    return {
      index: Number.isInteger(index) ? index : i,
      utilizationPct: util === null ? null : Math.min(100, Math.max(0, util)),
      memoryUsedMiB: mem === null ? null : Math.round(mem)
    }
  })
}
