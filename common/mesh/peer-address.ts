// The coordinator addresses an agent dials (GPUMESH_COORDINATOR). Each must
// name the peer it expects: without /p2p/<peer id> the agent would enroll
// with, and take work from, whoever answers at that address. And each must
// use a transport this mesh has (common/mesh/node.ts: TCP), or it would be
// dialled, and fail, forever.
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { InvalidArgumentError } from 'commander'
import { multiaddrs } from '../cli.js'

const HOSTS = new Set(['ip4', 'ip6', 'dns', 'dns4', 'dns6'])

/** Why this is not an address of a peer over TCP, or null. */
export function peerAddressProblem(address: string): string | null {
  let parts: Array<{ name: string; value?: string | undefined }>
  try {
    parts = multiaddr(address).getComponents()
  } catch (err) {
    return `${address} is not a multiaddr (${(err as Error).message})`
  }
  const peer = parts.at(-1)
  if (peer?.name !== 'p2p')
    return `${address} must end in /p2p/<peer id> (the coordinator's, from its coordinator.json)`
  try {
    peerIdFromString(peer.value ?? '')
  } catch {
    return `${peer.value ?? ''} is not a peer id (in ${address})`
  }
  const [host, transport, ...rest] = parts.slice(0, -1)
  if (host === undefined || !HOSTS.has(host.name) || transport?.name !== 'tcp' || rest.length > 0)
    return `${address}: the only transport is tcp (/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/p2p/<peer id>)`
  return null
}

/** Comma-separated peer addresses (a commander option parser). */
export function peerAddresses(value: string): string[] {
  const list = multiaddrs(value)
  for (const a of list) {
    const problem = peerAddressProblem(a)
    if (problem !== null) throw new InvalidArgumentError(problem)
  }
  return list
}
