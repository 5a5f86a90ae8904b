// What an endpoint's scaling and rolling update should do next, decided from
// what the database holds (nothing here does I/O, so the leader may restart
// between any two steps). One action at a time per endpoint:
//   scale-down  more replicas than wanted: remove unready ones first, then the newest
//   roll        a step is one new replica (the surge, placed by the scheduler),
//               ready (for settleMs, so that every coordinator's gateway sends
//               it calls), then one old one drained and stopped; ready
//               replicas never drop below what was ready before the roll
//   stop        the step's new replica failed, or is not ready in time: it is
//               removed and the roll stops, the old replicas keep serving
//
// Replica indices: the scheduler gives a new replica the lowest index no
// active replica holds (scheduler/place.ts), so indices are labels, not
// positions: after a scale-down or a roll step the holes are filled first,
// and a roll's surge takes whichever index is free, `replicas` at the start.

export interface ActiveReplica {
  id: string
  replica: number
  generation: number
  ready: boolean
  createdAt: number
}

export interface RollView {
  /** The generation it rolls to. */
  generation: number
  readyBefore: number
  stepStartedAt: number
  /** How long the step's new replica may take to become ready (its serve.startupSeconds). */
  startupMs: number
  /** Since when the step's new replicas have all been ready (the loop notes it); null until noted. */
  readySince: number | null
  /** How long they must have been ready before an old replica goes: every coordinator's gateway hears of them. */
  settleMs: number
  /** A replica of the new generation that ended badly during this step (`replica 3 exited with code 1`). */
  failed: { replica: number; why: string } | null
}

export interface EndpointView {
  now: number
  /** spec.replicas */
  replicas: number
  /** Extra replicas asked of the scheduler (1 while rolling). */
  surge: number
  /** The scheduler is asked to place (workload state pending). */
  pending: boolean
  /** Active placements (assigned, starting, running, stopping). */
  active: ActiveReplica[]
  /** The roll in progress; null when none. */
  roll: RollView | null
}

export type Action =
  | { kind: 'none' }
  /** Drain (when ready) and stop one replica; `rolled`: an old one replaced by a ready new one. */
  | { kind: 'remove'; replica: ActiveReplica; why: 'scale-down' | 'rolled' }
  /** Ask the scheduler for the step's new replica (state pending, a new step clock). */
  | { kind: 'surge' }
  /** Note that the step's new replicas are all ready now (the settle clock starts). */
  | { kind: 'settle' }
  | { kind: 'complete' }
  /** Remove the unready new replicas and stop the roll with `reason`. */
  | { kind: 'stop'; remove: ActiveReplica[]; reason: string }

const NONE: Action = { kind: 'none' }

export function nextAction(v: EndpointView): Action {
  return v.roll === null ? scaleDown(v, v.replicas + v.surge) : roll(v, v.roll)
}

function scaleDown(v: EndpointView, wanted: number): Action {
  if (v.active.length <= wanted) return NONE
  const newestFirst = [...v.active].sort((a, b) => b.createdAt - a.createdAt || b.replica - a.replica)
  const victim = newestFirst.find((p) => !p.ready) ?? (newestFirst[0] as ActiveReplica)
  return { kind: 'remove', replica: victim, why: 'scale-down' }
}

function roll(v: EndpointView, r: RollView): Action {
  const old = v.active.filter((p) => p.generation < r.generation)
  const fresh = v.active.filter((p) => p.generation >= r.generation)
  const unready = fresh.filter((p) => !p.ready)
  if (r.failed !== null)
    return {
      kind: 'stop',
      remove: unready,
      reason: `rollout stopped: replica ${r.failed.replica} of generation ${r.generation} not ready: ${r.failed.why}`
    }
  if (old.length === 0) return { kind: 'complete' }
  const waiting = unready.length > 0 || v.active.length < v.replicas + 1
  if (waiting && v.now - r.stepStartedAt > r.startupMs) {
    const which = unready[0] === undefined ? 'a new replica (not placed)' : `replica ${unready[0].replica}`
    return {
      kind: 'stop',
      remove: unready,
      reason: `rollout stopped: ${which} of generation ${r.generation} not ready after ${Math.round(r.startupMs / 1000)} s`
    }
  }
  if (v.active.length > v.replicas + 1) return scaleDown(v, v.replicas + 1)
  if (unready.length > 0) return NONE
  if (v.active.length < v.replicas + 1) return v.pending ? NONE : { kind: 'surge' }
  // The step's new replica is ready; once the gateways have had time to send it calls, one old replica
  // goes, an unready one first.
  if (r.readySince === null) return { kind: 'settle' }
  if (v.now - r.readySince < r.settleMs) return NONE
  const floor = Math.min(r.readyBefore, v.replicas)
  const ready = v.active.filter((p) => p.ready).length
  const oldestFirst = [...old].sort((a, b) => a.generation - b.generation || a.createdAt - b.createdAt)
  const victim = oldestFirst.find((p) => !p.ready) ?? (ready - 1 >= floor ? oldestFirst[0] : undefined)
  return victim === undefined ? NONE : { kind: 'remove', replica: victim, why: 'rolled' }
}
