// The agent's GPU telemetry source: ONE long-lived
// `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits -lms <ms>`
// process (a process start per sample would cost more than the sampling),
// read line by line and cut into one block of samples per period. When it
// exits it is started again with backoff; a field the driver refuses is
// dropped (or renamed) and the process restarted at once; where loop mode
// does not work (the process leaves after one block, twice in a row) the
// sampler falls back to one call per period.
import { type ChildProcess, spawn } from 'node:child_process'
import { backoff } from '../../common/daemon/backoff.js'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import { nvidiaSmi, type SmiRunner } from '../detect/nvidia/run.js'
import { FieldList, unknownField } from './field-list.js'
import { type GpuSample, OLDER_NAME, SAMPLE_FIELDS, parseSampleLine } from './gpu-sample.js'

export const DEFAULT_TELEMETRY_PERIOD_MS = 5000

export interface GpuSamplerOptions {
  /** The nvidia-smi to run. */
  binary: string
  env?: NodeJS.ProcessEnv
  periodMs?: number
  /** How many GPUs a whole block has (the host's facts); lets a block end without waiting for quiet. */
  expectedGpus?: () => number
  /** Deadline of one call in per-call mode. */
  callTimeoutMs?: number
  onBlock: (samples: GpuSample[]) => void
  onWarning: (warning: string) => void
  log?: Logger
}

/** Output kept from a run for its error message: enough for nvidia-smi's one-line complaints. */
const KEEP_OUTPUT = 4096

export class GpuSampler implements Startable {
  private readonly fields = new FieldList(
    SAMPLE_FIELDS.map((f) => f.field),
    'GPU telemetry',
    OLDER_NAME
  )
  private readonly loop: Loop
  private readonly periodMs: number
  private readonly call: SmiRunner
  private child: ChildProcess | null = null
  private mode: 'loop' | 'per-call' = 'loop'
  private attempt = 0
  private shortRuns = 0
  private largestBlock = 0
  private warned = 0

  constructor(private readonly o: GpuSamplerOptions) {
    this.periodMs = o.periodMs ?? DEFAULT_TELEMETRY_PERIOD_MS
    this.call = nvidiaSmi({
      binary: o.binary,
      timeoutMs: o.callTimeoutMs ?? Math.max(10_000, 2 * this.periodMs),
      ...(o.env === undefined ? {} : { env: o.env })
    })
    this.loop = new Loop(async (signal) => await this.tick(signal), {
      name: 'GPU telemetry',
      everyMs: this.periodMs,
      ...(o.log === undefined ? {} : { log: o.log })
    })
  }

  start(): void {
    this.loop.start()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
  }

  /** The pid of the nvidia-smi loop now running, if any. */
  get pid(): number | null {
    return this.child?.pid ?? null
  }

  get sampling(): 'loop' | 'per-call' {
    return this.mode
  }

  /** The fields asked for now (after drops and renames). */
  get asked(): readonly string[] {
    return this.fields.fields
  }

  private async tick(signal: AbortSignal): Promise<number | undefined> {
    if (this.mode === 'per-call') return (await this.callOnce()) === 'refused' ? 0 : undefined
    const run = await this.runLoop(signal)
    if (signal.aborted) return 0
    const refused = unknownField(run.output)
    if (refused !== null && this.refuse(refused)) return 0
    if (run.blocks >= 2) {
      this.attempt = 0
      this.shortRuns = 0
    } else if (++this.shortRuns >= 2 && (await this.callOnce()) === 'ok') {
      this.mode = 'per-call'
      this.warn(`nvidia-smi -lms does not keep running here (${run.ended}); sampling with one call per period`)
      return undefined
    }
    const delay = backoff(this.attempt++, { baseMs: 500, capMs: 30_000 })
    this.o.log?.warn(
      { ended: run.ended, output: run.output.slice(-200), retryMs: Math.round(delay) },
      'GPU telemetry process ended; restarting'
    )
    return delay
  }

  private refuse(field: string): boolean {
    if (!this.fields.refuse(field)) return false
    for (const w of this.fields.warnings.slice(this.warned)) this.warn(w)
    this.warned = this.fields.warnings.length
    return true
  }

  private warn(warning: string): void {
    this.o.log?.warn(warning)
    this.o.onWarning(warning)
  }

  private async callOnce(): Promise<'ok' | 'refused' | 'failed'> {
    const fields = [...this.fields.fields]
    try {
      const out = await this.call([`--query-gpu=${fields.join(',')}`, '--format=csv,noheader,nounits'])
      const at = Date.now()
      const samples = out
        .split(/\r?\n/)
        .map((l) => parseSampleLine(l, fields, at))
        .filter((s): s is GpuSample => s !== null)
      if (samples.length > 0) this.emit(samples)
      return 'ok'
    } catch (err) {
      const refused = unknownField((err as Error).message)
      if (refused !== null && this.refuse(refused)) return 'refused'
      this.o.log?.warn({ err: (err as Error).message }, 'GPU telemetry call failed')
      return 'failed'
    }
  }

  private emit(samples: GpuSample[]): void {
    this.largestBlock = Math.max(this.largestBlock, samples.length)
    this.o.onBlock(samples)
  }

  /** Runs one nvidia-smi loop until it exits or `signal` aborts; how many blocks it gave and what else it said. */
  private async runLoop(signal: AbortSignal): Promise<{ blocks: number; output: string; ended: string }> {
    const fields = [...this.fields.fields]
    const child = spawn(
      this.o.binary,
      [`--query-gpu=${fields.join(',')}`, '--format=csv,noheader,nounits', '-lms', String(this.periodMs)],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...(this.o.env ?? process.env), LC_ALL: 'C' } }
    )
    this.child = child
    let blocks = 0
    let output = ''
    const keep = (text: string) => {
      output = (output + text).slice(-KEEP_OUTPUT)
    }
    // A block ends when an index comes again, when it holds every GPU, or after a quiet spell.
    const quietMs = Math.min(1000, Math.max(100, this.periodMs / 5))
    let pending: GpuSample[] = []
    let timer: NodeJS.Timeout | undefined
    const flush = () => {
      clearTimeout(timer)
      if (pending.length === 0) return
      blocks++
      const block = pending
      pending = []
      this.emit(block)
    }
    const expected = () => Math.max(this.o.expectedGpus?.() ?? 0, this.largestBlock)
    let partial = ''
    const line = (text: string) => {
      const s = parseSampleLine(text, fields, Date.now())
      if (s === null) {
        if (text.trim() !== '') keep(`${text}\n`)
        return
      }
      if (pending.some((p) => p.index === s.index)) flush()
      pending.push(s)
      const whole = expected()
      if (whole > 0 && pending.length >= whole) flush()
      else {
        clearTimeout(timer)
        timer = setTimeout(flush, quietMs)
      }
    }
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) line(l)
      if (partial.length > KEEP_OUTPUT) partial = ''
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', keep)
    const stop = () => {
      child.kill('SIGTERM')
      // A process stuck in the driver may ignore SIGTERM.
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      }, 2000).unref()
    }
    signal.addEventListener('abort', stop, { once: true })
    const ended = await new Promise<string>((resolve) => {
      child.on('error', (err) => resolve(`cannot run ${this.o.binary}: ${err.message}`))
      child.on('close', (code, sig) => resolve(code === null ? `killed by ${sig ?? 'a signal'}` : `exit ${code}`))
    })
    signal.removeEventListener('abort', stop)
    if (partial !== '') line(partial)
    flush()
    this.child = null
    return { blocks, output, ended }
  }
}
