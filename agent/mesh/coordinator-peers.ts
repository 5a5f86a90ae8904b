// Who may open the agent's coordinator-only protocols (session attach, logs):
// the peers named by the /p2p/ ids of GPUMESH_COORDINATOR.

/** The peer id at the end of a multiaddr (`.../p2p/<id>`), or null. */
export function peerIdOf(addr: string): string | null {
  return /\/p2p\/([^/]+)\/?$/.exec(addr)?.[1] ?? null
}

/** The peer ids of the coordinator multiaddrs an agent was given. */
export function coordinatorPeers(coordinators: string[]): ReadonlySet<string> {
  return new Set(coordinators.map(peerIdOf).filter((p): p is string => p !== null))
}
