// Detection before the agent joins. A host whose nvidia-smi is installed but
// does not answer (the driver still loading at boot, persistence mode off
// on a busy host) would otherwise join as a GPU-less "cpu" host, and come
// back with its GPUs at the next re-detection: a GPU change, so the
// coordinator quarantines it until an operator looks. Asking again a few
// times first costs a known host seconds at boot, not a quarantine.
import { sleep } from '../../common/daemon/sleep.js'
import type { Logger } from '../../common/log.js'
import type { HostFacts } from '../../protocol/host-facts.js'
import type { DetectOptions } from './detect.js'
import { detectInSubprocess } from './subprocess.js'

/** No GPUs because nvidia-smi failed or did not answer, not because it said there are none. */
export function driverSilent(facts: HostFacts): boolean {
  return (
    facts.gpus.length === 0 &&
    facts.warnings.some(
      (w) => w.code === 'source.failed' && w.source.split(', ').some((s) => s.startsWith('nvidia-smi'))
    )
  )
}

export interface DetectAtStartOptions {
  /** The pauses before each new try; after the last, the agent joins with what it found. */
  pausesMs?: number[]
  detect?: (o: DetectOptions) => Promise<HostFacts>
  pause?: (ms: number) => Promise<void>
}

const PAUSES_MS = [5_000, 15_000]

export async function detectAtStart(
  o: DetectOptions,
  log: Logger,
  retry: DetectAtStartOptions = {}
): Promise<HostFacts> {
  const { pausesMs = PAUSES_MS, detect = detectInSubprocess, pause = sleep } = retry
  for (let attempt = 0; ; attempt++) {
    const facts = await detect(o)
    const wait = pausesMs[attempt]
    if (!driverSilent(facts)) return facts
    const why = facts.warnings.find((w) => w.code === 'source.failed')?.message
    if (wait === undefined) {
      log.warn({ why, tries: attempt + 1 }, 'nvidia-smi never answered: joining without GPUs')
      return facts
    }
    log.warn({ why, retryInMs: wait }, 'nvidia-smi is installed but did not answer: detecting again before joining')
    await pause(wait)
  }
}
