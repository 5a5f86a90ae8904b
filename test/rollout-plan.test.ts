// What an endpoint's scale-down and rolling update do next (coordinator/rollout/plan.ts),
// case by case: the order replicas are removed in, the ready floor of a roll,
// and when a roll stops. The end-to-end behaviour is in rollout.test.ts.
import t from 'tap'
import { type ActiveReplica, type EndpointView, nextAction, type RollView } from '../coordinator/rollout/plan.js'
import { Mismatches } from './helpers/mismatches.js'

/** `a1r`: replica a, generation 1, ready; `b2`: replica b, generation 2, not ready. Created in list order. */
const replicas = (...specs: string[]): ActiveReplica[] =>
  specs.map((s, i) => ({
    id: s.slice(0, 1),
    replica: i,
    generation: Number(s.slice(1, 2)),
    ready: s.endsWith('r'),
    createdAt: 1000 + i
  }))

const roll = (r: Partial<RollView> = {}): RollView => ({
  generation: 2,
  readyBefore: 2,
  stepStartedAt: 0,
  startupMs: 10_000,
  readySince: 0,
  settleMs: 3000,
  failed: null,
  ...r
})

const view = (v: Partial<EndpointView>): EndpointView => ({
  now: 5000,
  replicas: 2,
  surge: 0,
  pending: false,
  active: [],
  roll: null,
  ...v
})

/** The action in short: `remove b (scale-down)`, `stop [c]: <reason>`, `surge`, `none`. */
function short(v: EndpointView): string {
  const a = nextAction(v)
  if (a.kind === 'remove') return `remove ${a.replica.id} (${a.why})`
  if (a.kind === 'stop') return `stop [${a.remove.map((p) => p.id).join(',')}]: ${a.reason}`
  return a.kind
}

t.test('scale-down and rolling-update decisions', async (t) => {
  const cases: Array<[string, EndpointView, string]> = [
    ['as many as wanted: nothing', view({ active: replicas('a1r', 'b1r') }), 'none'],
    [
      'one too many, all ready: the newest goes',
      view({ active: replicas('a1r', 'b1r', 'c1r') }),
      'remove c (scale-down)'
    ],
    [
      'one too many, one unready: the unready one goes, newest or not',
      view({ active: replicas('a1r', 'b1', 'c1r') }),
      'remove b (scale-down)'
    ],
    ['a surge counts as wanted', view({ surge: 1, active: replicas('a1r', 'b1r', 'c1r') }), 'none'],
    [
      'roll begins: no new replica yet, the scheduler is asked',
      view({ pending: true, active: replicas('a1r', 'b1r'), roll: roll() }),
      'none'
    ],
    [
      'roll: a step with no new replica asked for asks again',
      view({ active: replicas('a1r', 'b1r'), roll: roll() }),
      'surge'
    ],
    [
      'roll: the new replica is not ready yet',
      view({ surge: 1, active: replicas('a1r', 'b1r', 'c2'), roll: roll() }),
      'none'
    ],
    [
      'roll: the new replica is ready, the oldest old one goes',
      view({ surge: 1, active: replicas('a1r', 'b1r', 'c2r'), roll: roll() }),
      'remove a (rolled)'
    ],
    [
      'roll: the new replica is ready: the moment is noted',
      view({ surge: 1, active: replicas('a1r', 'b1r', 'c2r'), roll: roll({ readySince: null }) }),
      'settle'
    ],
    [
      'roll: the new replica is ready, but not for long enough for the gateways: wait',
      view({ now: 5000, surge: 1, active: replicas('a1r', 'b1r', 'c2r'), roll: roll({ readySince: 4000 }) }),
      'none'
    ],
    [
      'roll: an unready old one goes before a ready one',
      view({ surge: 1, active: replicas('a1r', 'b1', 'c2r'), roll: roll({ readyBefore: 1 }) }),
      'remove b (rolled)'
    ],
    [
      'roll: never below the ready count before the roll',
      view({ surge: 1, replicas: 3, active: replicas('a1r', 'b1r', 'c1', 'd2r'), roll: roll({ readyBefore: 3 }) }),
      'remove c (rolled)'
    ],
    [
      'roll: no old replica left: completed',
      view({ surge: 1, active: replicas('b2r', 'c2r'), roll: roll() }),
      'complete'
    ],
    [
      'roll: the new replica is not ready after its startup time: it goes, the roll stops',
      view({ now: 20_000, surge: 1, active: replicas('a1r', 'b1r', 'c2'), roll: roll() }),
      'stop [c]: rollout stopped: replica 2 of generation 2 not ready after 10 s'
    ],
    [
      'roll: no room for the new replica within the startup time: the roll stops',
      view({ now: 20_000, pending: true, surge: 1, active: replicas('a1r', 'b1r'), roll: roll() }),
      'stop []: rollout stopped: a new replica (not placed) of generation 2 not ready after 10 s'
    ],
    [
      'roll: the new replica exited: the roll stops at once',
      view({
        pending: true,
        surge: 1,
        active: replicas('a1r', 'b1r'),
        roll: roll({ failed: { replica: 2, why: 'it exited with code 1' } })
      }),
      'stop []: rollout stopped: replica 2 of generation 2 not ready: it exited with code 1'
    ],
    [
      'roll and scale-down together: down to replicas + 1 first',
      view({ replicas: 1, surge: 1, active: replicas('a1r', 'b1r', 'c2r'), roll: roll({ readyBefore: 1 }) }),
      'remove c (scale-down)'
    ]
  ]
  const m = new Mismatches()
  for (const [name, v, want] of cases) m.check(name, 'action', short(v), want)
  t.same(m.list, [])
})
