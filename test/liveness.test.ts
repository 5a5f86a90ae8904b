// The failure detector against a real PostgreSQL: what it decides in memory
// must be what the hosts table ends up saying, however its writes interleave;
// a closed connection (the agent restarting) is waited for, silence is not.
import t, { type Test } from 'tap'
import { createLogger } from '../common/log.js'
import { Liveness, type Probeable } from '../coordinator/mesh/liveness.js'
import { createPool, type Pool } from '../coordinator/store/db.js'
import { migrate } from '../coordinator/store/migrate.js'
import { addHost, eventually } from './helpers/coordinator.js'
import { freshDatabase } from './helpers/postgres.js'

async function database(t: Test): Promise<Pool> {
  const pool = createPool(await freshDatabase(t))
  t.teardown(async () => {
    await pool.end()
  })
  await migrate(pool)
  return pool
}

const session = (hostId: string): Probeable => ({
  hostId,
  peerId: `peer-of-${hostId}`,
  pool: 'p',
  name: hostId,
  lastHeartbeat: Date.now(),
  epoch: 1,
  addresses: async () => [],
  send: async () => {},
  drop: () => {}
})

t.test('a host heard from right after it went suspect ends ready in the database, not suspect', async (t) => {
  const pool = await database(t)
  const ids: string[] = []
  for (let i = 0; i < 40; i++) ids.push(await addHost(pool, 'l40s-1x', `flapping-${i}`))
  const liveness = new Liveness(pool, () => [], createLogger('liveness', { level: 'silent' }), { heartbeatMs: 1000 })
  t.teardown(async () => {
    await liveness.stop()
  })
  // A connection reset (suspect: written) and, at once, the agent's new session (ready: written):
  // two writes of one host in flight together, as in a reconnect storm.
  for (const id of ids) {
    const first = session(id)
    liveness.heard(first)
    liveness.lost(first, 'connection reset')
    liveness.heard(session(id))
  }
  t.ok(
    ids.every((id) => liveness.state(id) === 'ok'),
    'in memory every host is ok'
  )
  // Each host's two writes are done when both of its events are (a write that changes nothing adds none).
  const count = async () =>
    (await pool.query<{ n: number }>("select count(*)::int as n from events where type = 'host.state-changed'")).rows[0]
      ?.n ?? 0
  const settled = Date.now() + 10_000
  while ((await count()) < 2 * ids.length && Date.now() < settled)
    await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(await count(), 2 * ids.length, 'each host went suspect and then ready again, as events')
  const states = (
    await pool.query<{ state: string }>('select state from hosts where id = any($1::uuid[])', [ids])
  ).rows.map((r) => r.state)
  t.same(
    states.filter((s) => s !== 'ready'),
    [],
    'and the database agrees: no host left suspect'
  )
})

t.test('a closed connection gets the grace period; a host gone silent does not', async (t) => {
  const pool = await database(t)
  const restarting = await addHost(pool, 'l40s-1x', 'restarting')
  const silent = await addHost(pool, 'l40s-1x', 'silent')
  // A grace far longer than this test: whatever goes down here went down without waiting for it.
  const liveness = new Liveness(pool, () => [], createLogger('liveness', { level: 'silent' }), {
    heartbeatMs: 100,
    agentGraceMs: 60 * 60_000
  })
  t.teardown(async () => {
    await liveness.stop()
  })
  liveness.start()
  const closed = session(restarting)
  liveness.heard(closed)
  liveness.heard(session(silent))
  // The agent process exited (the host's kernel closed its connection); the other host's heartbeats just stop.
  liveness.lost(closed, 'control session ended: agent closed the session')
  const state = async (id: string) =>
    (
      await pool.query<{ state: string; state_reason: string }>('select state, state_reason from hosts where id = $1', [
        id
      ])
    ).rows[0]
  await eventually(
    async () => ((await state(silent))?.state === 'down' ? true : undefined),
    30_000,
    'the silent host down'
  )
  t.same(
    { silent: (await state(silent))?.state, restarting: await state(restarting) },
    {
      silent: 'down',
      restarting: {
        state: 'suspect',
        state_reason: 'control session ended: agent closed the session; waiting 3600 s for the agent to return'
      }
    },
    'the silent host is down; the one whose agent closed its connection is waited for, its work in place'
  )
  liveness.heard(session(restarting))
  await eventually(async () => ((await state(restarting))?.state === 'ready' ? true : undefined), 10_000, 'back')
})
