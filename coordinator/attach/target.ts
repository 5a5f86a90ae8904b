// Which agent holds a session: the workload's running placement, its host,
// and the control session that host has with this coordinator (its peer is
// the one the attach stream is opened to).
import { ApiError } from '../http/problem.js'
import type { Pool } from '../store/db.js'
import { getWorkload, type Scope } from '../store/workloads.js'
import type { AttachTarget } from './bridge.js'

export interface ConnectedHosts {
  /** The peer id of a host connected to this coordinator, or undefined. */
  peerOf: (hostId: string) => string | undefined
}

export async function attachTarget(
  pool: Pool,
  hosts: ConnectedHosts,
  workloadId: string,
  scope: Scope
): Promise<AttachTarget> {
  const w = await getWorkload(pool, workloadId, scope)
  if (w.state === 'deleted') throw new ApiError('NOT_FOUND', `workload ${w.name} was deleted`)
  if (w.kind !== 'session')
    throw new ApiError(
      'NOT_ATTACHABLE',
      `${w.name} is ${w.kind === 'endpoint' ? 'an endpoint' : 'a recipe'}; only sessions have a terminal to attach to`
    )
  const p = w.placements.find((x) => x.state === 'running')
  if (p === undefined) {
    const starting = w.placements.some((x) => x.state === 'starting' || x.state === 'assigned')
    throw new ApiError(
      'NOT_ATTACHABLE',
      starting
        ? `session ${w.name} is starting; try again in a moment`
        : `session ${w.name} is ${w.state}${w.reason === null ? '' : ` (${w.reason})`}, not running`
    )
  }
  const peerId = hosts.peerOf(p.hostId)
  if (peerId === undefined)
    throw new ApiError('NOT_ATTACHABLE', `host ${p.hostName} of session ${w.name} is not connected to this coordinator`)
  return { workloadId: w.id, workloadName: w.name, placementId: p.id, hostId: p.hostId, hostName: p.hostName, peerId }
}
