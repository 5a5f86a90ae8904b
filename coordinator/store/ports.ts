// Host ports for endpoint replicas (SERVE_PORTS): a port of the range that no
// live placement on the host holds, from a random point of the range on, not
// the lowest: hosts that share one machine (`gpumesh up --simulate`, tests
// running side by side) would otherwise all hand out the same ports, and a
// port something else took fails the replica at launch on every attempt
// (agent/serve/port-check.ts); at random, its next placement gets another.
// Chosen inside the transaction that inserts the placements; the unique index
// placements_one_port refuses a port another coordinator took meanwhile (the
// batch is then retried as stale).
import { SERVE_PORTS } from '../../protocol/control.js'
import type { Client } from './db.js'
import { ACTIVE_PLACEMENT_STATES } from './sql.js'

/** One port per entry of `hosts` (a host may appear several times), or null where `hosts[i]` is null. */
export async function allocatePorts(
  c: Client,
  hosts: Array<string | null>,
  random: () => number = Math.random
): Promise<Array<number | null>> {
  const wanted = [...new Set(hosts.filter((h): h is string => h !== null))]
  if (wanted.length === 0) return hosts.map(() => null)
  const { rows } = await c.query<{ host_id: string; port: number }>(
    'select host_id, port from placements where host_id = any($1::uuid[]) and port is not null and state = any($2::text[])',
    [wanted, ACTIVE_PLACEMENT_STATES]
  )
  const used = new Map<string, Set<number>>()
  for (const r of rows) (used.get(r.host_id) ?? used.set(r.host_id, new Set()).get(r.host_id))?.add(r.port)
  return hosts.map((h) => {
    if (h === null) return null
    const taken = used.get(h) ?? used.set(h, new Set()).get(h) ?? new Set<number>()
    const size = SERVE_PORTS.last - SERVE_PORTS.first + 1
    const from = Math.floor(random() * size)
    for (let i = 0; i < size; i++) {
      const p = SERVE_PORTS.first + ((from + i) % size)
      if (!taken.has(p)) {
        taken.add(p)
        return p
      }
    }
    // Unreachable: every replica holds a GPU, and no host has 2,768 GPUs.
    throw new Error(`host ${h} has no free port left in ${SERVE_PORTS.first}-${SERVE_PORTS.last}`)
  })
}
