// GPU telemetry as a coordinator receives it, without an agent process: a
// raw control session (L40S facts, one GPU) whose first heartbeat carries a
// telemetry delta, kept alive by heartbeats; and reading series back from
// the coordinator's /metrics.
import type { Test } from 'tap'
import type { GpuTelemetry, TelemetryDelta } from '../../protocol/telemetry.js'
import type { TestCoordinator } from './coordinator.js'
import { bareNode, clusterKeyOf, joinToken, sayHello } from './mesh.js'

/** A healthy GPU table entry, with `over` laid on it. */
export function gpuTelemetry(index: number, over: Partial<GpuTelemetry> = {}): GpuTelemetry {
  return {
    index,
    uuid: `GPU-raw-${index}`,
    pciBusId: `00000000:${(0x18 + index).toString(16)}:00.0`,
    health: { state: 'healthy', reasons: [], since: '2026-01-01T00:00:00.000Z' },
    usage: { utilizationPct: 10, memoryUsedMiB: 1024, temperatureC: 40, powerW: 100, at: '2026-01-01T00:00:00.000Z' },
    xids: { last: null, counts: {} },
    ...over
  }
}

export interface RawTelemetryHost {
  hostId: string
  /** Sends another delta with the next heartbeat. */
  report: (delta: TelemetryDelta) => void
  /** Ends the control session (the agent went away). */
  close: () => Promise<void>
}

/** A host `name` whose agent is played by the test: it joins `c` and reports `first`. */
export async function rawTelemetryHost(
  t: Test,
  c: TestCoordinator,
  name: string,
  first: TelemetryDelta
): Promise<RawTelemetryHost> {
  const channel = await sayHello(await bareNode(t, clusterKeyOf(c)), c, name, await joinToken(c))
  const welcome = await channel.receive(AbortSignal.timeout(30_000))
  if (welcome?.type !== 'welcome') throw new Error(`${name} was not welcomed: ${JSON.stringify(welcome)}`)
  let seq = 0
  let next: TelemetryDelta | null = first
  const beat = () => {
    const telemetry = next
    next = null
    void channel
      .send({ v: 1, type: 'heartbeat', seq: seq++, gpus: [], ...(telemetry === null ? {} : { telemetry }) })
      .catch(() => {})
  }
  beat()
  // A silent session would soon be suspect; its acks are read and dropped.
  const timer = setInterval(beat, 250)
  void (async () => {
    while ((await channel.receive().catch(() => null)) !== null);
  })()
  const close = async () => {
    clearInterval(timer)
    await channel.close().catch(() => {})
  }
  t.teardown(close)
  return {
    hostId: welcome.hostId,
    report: (delta) => {
      next = delta
    },
    close
  }
}

export interface Series {
  labels: Record<string, string>
  value: number
}

/** The samples of one family in a text exposition (label values unescaped only for \" and \\). */
export function series(text: string, name: string): Series[] {
  const out: Series[] = []
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = (l[2] as string).replace(/\\(["\\])/g, '$1')
    out.push({ labels, value: Number(m[3]) })
  }
  return out
}

/** The value of the first sample of `name` that has `labels` (and maybe more). */
export function seriesValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  return series(text, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}

export async function scrape(c: TestCoordinator): Promise<string> {
  const r = await fetch(`${c.api}/metrics`)
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`)
  return await r.text()
}
