// One libp2p node factory for agents and coordinators: TCP, Noise, Yamux,
// identify, ping, gossipsub, optional mDNS, a private-network key, a
// connection monitor tuned to notice a silent peer within seconds.
import '../polyfill.js'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify, type Identify } from '@libp2p/identify'
import type { ConnectionGater, PrivateKey } from '@libp2p/interface'
import { mdns, type MulticastDNSComponents } from '@libp2p/mdns'
import { noise } from '@libp2p/noise'
import { ping, type Ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { createLibp2p, type Libp2p } from 'libp2p'
import { assertPromiseWithResolvers } from '../polyfill.js'
import { coalescingProtector } from './coalesce-writes.js'
import { lazyWindowUpdates } from './yamux-window.js'

export type MeshServices = {
  identify: Identify
  ping: Ping
  pubsub: GossipSub
} & Record<string, unknown>

export type MeshNode = Libp2p<MeshServices>

export interface MeshOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. /ip4/10.0.0.5/tcp/7472. */
  listen: string[]
  /** swarm.key bytes: peers without it cannot connect. */
  clusterKey: Uint8Array
  /** Multiaddrs (ending in /p2p/<id>) to dial at start; redialled by the caller's loop afterwards. */
  bootstrap?: string[]
  /** Discover peers on the LAN by multicast DNS. */
  mdns?: boolean
  mdnsIntervalMs?: number
  gater?: ConnectionGater
  /** Coordinators accept many agents at once (a reconnect storm after a restart). */
  role: 'agent' | 'coordinator'
  /** Connection monitor ping interval: the failure detector's resolution. */
  pingIntervalMs?: number
}

export async function createMeshNode(o: MeshOptions): Promise<MeshNode> {
  assertPromiseWithResolvers()
  lazyWindowUpdates()
  const coordinator = o.role === 'coordinator'
  // Liveness is the control session's job (heartbeats answered by acks, probes by pool peers):
  // these pings only retire connections that died quietly, so they can be rare. Each one opens a
  // stream on both sides, a dozen encrypted frames: at a few seconds they were most of an idle
  // agent's CPU.
  const pingMs = o.pingIntervalMs ?? 30_000
  const services: Record<string, unknown> = {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  }
  // As a service, so its raw 'peer' events (every answer, not only the first) reach us.
  // Every query is answered by every peer on the LAN (n² packets a round). A starting node's
  // first query is answered by itself too, so everyone learns of it at once: the period only
  // bounds rediscovery after a partition.
  if (o.mdns === true)
    services.mdns = mdns({ interval: o.mdnsIntervalMs ?? 30_000 }) as unknown as (
      components: MulticastDNSComponents
    ) => unknown
  const node = await createLibp2p({
    privateKey: o.privateKey,
    addresses: {
      listen: o.listen,
      // 0.0.0.0 listeners would announce loopback to the LAN; keep it only when it is all there is.
      announceFilter: (addrs) => {
        const reachable = addrs.filter(
          (a) => !a.toString().startsWith('/ip4/127.') && !a.toString().startsWith('/ip6/::1/')
        )
        return reachable.length > 0 ? reachable : addrs
      }
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // Yamux keep-alive pings close nothing when unanswered (see above for what does).
    streamMuxers: [yamux({ enableKeepAlive: false })],
    // Coalesced: a turn's frames leave in one TCP write (coalesce-writes.ts).
    connectionProtector: coalescingProtector(preSharedKey({ psk: o.clusterKey })),
    ...(o.gater === undefined ? {} : { connectionGater: o.gater }),
    peerDiscovery:
      o.bootstrap === undefined || o.bootstrap.length === 0 ? [] : [bootstrap({ list: o.bootstrap, timeout: 100 })],
    connectionManager: coordinator
      ? { maxConnections: 5000, inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 1000 }
      : { maxConnections: 300, inboundConnectionThreshold: 50, maxIncomingPendingConnections: 50 },
    connectionMonitor: {
      pingInterval: pingMs,
      pingTimeout: { minTimeout: Math.min(pingMs, 1500), maxTimeout: Math.min(pingMs, 10_000) }
    },
    services: services as never
  })
  return node as unknown as MeshNode
}
