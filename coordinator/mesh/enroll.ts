// An agent's hello: a known peer id is its own credential; an unknown one
// must bring a valid join token (uses left, unexpired, of the right pool). A
// host whose GPUs changed since it registered is quarantined, not shrunk. A
// new agent process on a known host is an event of its own, with how much of
// the host's work it found still running.
import type { HostFacts } from '../../protocol/host-facts.js'
import type { Hello } from '../../protocol/control.js'
import { appendEvents, type NewEvent } from '../store/outbox.js'
import { transaction, type Client, type Pool } from '../store/db.js'
import { upsertHost } from '../store/hosts.js'
import { quarantine } from '../store/lifecycle.js'
import { ACTIVE_PLACEMENT_STATES } from '../store/sql.js'
import { joinTokenUsed, takeJoinTokenUse } from '../store/tokens.js'
import { CodedError } from '../../common/coded-error.js'

export class EnrollError extends CodedError<
  'ERR_REVOKED' | 'ERR_UNKNOWN_PEER' | 'ERR_JOIN_TOKEN' | 'ERR_POOL_MISMATCH'
> {}

export const REVOKED_MESSAGE =
  'this host was revoked (DELETE /v1/hosts/:id); enroll it again under a new identity (an empty state directory) with a new join token'

export interface Enrolled {
  hostId: string
  epoch: number
}

/** GPU identity that must not change under a registered host: how many, which models. */
export function gpuSignature(facts: HostFacts): string {
  return `${facts.gpus.length}:${facts.gpus
    .map((g) => g.name ?? '?')
    .sort()
    .join(',')}`
}

export async function enroll(pool: Pool, peerId: string, hello: Hello, address: string | null): Promise<Enrolled> {
  return await transaction(pool, async (c) => {
    const { rows } = await c.query<{ id: string; facts: HostFacts; revoked_at: Date | null; state: string }>(
      'select id, facts, revoked_at, state from hosts where peer_id = $1 for update',
      [peerId]
    )
    const known = rows[0]
    if (known?.revoked_at != null) throw new EnrollError('ERR_REVOKED', REVOKED_MESSAGE)
    const events: NewEvent[] = []
    if (known === undefined) {
      if (hello.joinToken === undefined)
        throw new EnrollError(
          'ERR_UNKNOWN_PEER',
          'unknown peer: the first hello must carry a join token (GPUMESH_JOIN_TOKEN)'
        )
      const token = await takeJoinTokenUse(c, hello.joinToken, peerId)
      if (token === null) throw new EnrollError('ERR_JOIN_TOKEN', 'the join token is unknown, expired or used up')
      if (token.poolKey !== null && token.poolKey !== hello.facts.pool.key) {
        throw new EnrollError(
          'ERR_POOL_MISMATCH',
          `the join token is for pool ${token.poolKey}; this host is ${hello.facts.pool.key}`
        )
      }
      const up = await upsertHost(c, { peerId, facts: hello.facts, name: hello.name, address })
      events.push(...up.events, await joinTokenUsed(c, token, up.id, peerId))
      await appendEvents(c, events)
      return { hostId: up.id, epoch: up.epoch }
    }
    const changed = gpuSignature(known.facts) !== gpuSignature(hello.facts)
    const up = await upsertHost(c, { peerId, facts: hello.facts, name: hello.name, address })
    events.push(...up.events)
    if (hello.restarted === true) events.push(await agentRestarted(c, up.id, known.state, hello))
    if (changed)
      events.push(
        ...(await quarantine(
          c,
          up.id,
          `GPUs changed from ${gpuSignature(known.facts)} to ${gpuSignature(hello.facts)}`
        ))
      )
    await appendEvents(c, events)
    return { hostId: up.id, epoch: up.epoch }
  })
}

/** `kept`: placements the new agent re-adopted that are still this host's, i.e. were not placed elsewhere meanwhile. */
async function agentRestarted(c: Client, hostId: string, state: string, hello: Hello): Promise<NewEvent> {
  const live = hello.running.filter((p) => p.state === 'running' || p.state === 'starting').map((p) => p.placementId)
  const { rows } = await c.query<{ n: number }>(
    'select count(*)::int as n from placements where host_id = $1 and id = any($2::uuid[]) and state = any($3::text[])',
    [hostId, live, ACTIVE_PLACEMENT_STATES]
  )
  return {
    type: 'host.agent-restarted',
    subjectKind: 'host',
    subjectId: hostId,
    data: { name: hello.name, from: state, running: live.length, kept: rows[0]?.n ?? 0 }
  }
}

/** Re-detected facts from a connected agent: stored; changed GPUs quarantine the host. */
export async function updateFacts(pool: Pool, hostId: string, facts: HostFacts): Promise<void> {
  await transaction(pool, async (c) => {
    const { rows } = await c.query<{ facts: HostFacts }>('select facts from hosts where id = $1 for update', [hostId])
    const before = rows[0]?.facts
    if (before === undefined) return
    await c.query('update hosts set facts = $2, updated_at = now() where id = $1', [hostId, JSON.stringify(facts)])
    const events: NewEvent[] = [
      {
        type: 'host.facts-changed',
        subjectKind: 'host',
        subjectId: hostId,
        data: { pool: facts.pool.key, gpus: facts.gpus.length }
      }
    ]
    if (gpuSignature(before) !== gpuSignature(facts))
      events.push(
        ...(await quarantine(c, hostId, `GPUs changed from ${gpuSignature(before)} to ${gpuSignature(facts)}`))
      )
    await appendEvents(c, events)
  })
}
