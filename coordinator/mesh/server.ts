// The coordinator's side of the mesh: a libp2p node with the cluster key
// (peers without it cannot connect), a stable identity, a gater that refuses
// revoked peers, the control protocol handler, the sessions it holds, and
// the dispatcher and failure detector that serve them.
import { join } from 'node:path'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { Loop } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import { createClusterKey, readClusterKey } from '../../common/mesh/cluster-key.js'
import { loadOrCreateIdentity } from '../../common/mesh/identity.js'
import { createMeshNode, type MeshNode } from '../../common/mesh/node.js'
import { CLUSTER_TOPIC, CONTROL_PROTOCOL, poolTopic } from '../../protocol/control.js'
import type { Notifier } from '../events/notifier.js'
import type { Pool } from '../store/db.js'
import { touchHosts } from '../store/hosts.js'
import { Dispatcher } from './dispatcher.js'
import { Liveness } from './liveness.js'
import { AgentSession } from './session.js'

export interface MeshServerOptions {
  stateDir: string
  listen: string[]
  /** swarm.key to use; unset = <state>/cluster.key, created on first start. */
  clusterKeyFile?: string
  heartbeatMs?: number
  suspectAfterMs?: number
  probeTimeoutMs?: number
}

const TOUCH_EVERY_MS = 5000

export class MeshServer {
  readonly sessions = new Map<string, AgentSession>()
  private readonly denied = new Set<string>()
  private node!: MeshNode
  private dispatcher!: Dispatcher
  private liveness!: Liveness
  private touch: Loop | undefined
  readonly heartbeatMs: number

  constructor(
    private readonly pool: Pool,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    private readonly o: MeshServerOptions
  ) {
    this.heartbeatMs = o.heartbeatMs ?? 1000
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** Multiaddrs agents can dial, ending in /p2p/<peer id>. */
  multiaddrs(): string[] {
    return this.node.getMultiaddrs().map(String)
  }

  async start(): Promise<void> {
    const keyFile = this.o.clusterKeyFile ?? join(this.o.stateDir, 'cluster.key')
    const clusterKey =
      this.o.clusterKeyFile === undefined ? await createClusterKey(keyFile) : await readClusterKey(keyFile)
    const { rows } = await this.pool.query<{ peer_id: string }>(
      'select peer_id from hosts where revoked_at is not null'
    )
    for (const r of rows) this.denied.add(r.peer_id)
    const refused = (peer: PeerId) => this.denied.has(peer.toString())
    this.node = await createMeshNode({
      privateKey: await loadOrCreateIdentity(join(this.o.stateDir, 'peer.key')),
      listen: this.o.listen,
      clusterKey,
      role: 'coordinator',
      gater: {
        denyInboundEncryptedConnection: refused,
        denyOutboundEncryptedConnection: refused,
        denyDialPeer: refused
      }
    })
    this.liveness = new Liveness(this.pool, () => [...this.sessions.values()], this.log, {
      heartbeatMs: this.heartbeatMs,
      ...(this.o.suspectAfterMs === undefined ? {} : { suspectAfterMs: this.o.suspectAfterMs }),
      ...(this.o.probeTimeoutMs === undefined ? {} : { probeTimeoutMs: this.o.probeTimeoutMs })
    })
    await this.node.handle(
      CONTROL_PROTOCOL,
      (stream, connection) => {
        const session = new AgentSession(stream, connection, {
          pool: this.pool,
          log: this.log,
          liveness: this.liveness,
          heartbeatMs: this.heartbeatMs,
          register: (s) => {
            // Subscribed, the coordinator relays pool gossip between agents that only reach each other through it.
            this.node.services.pubsub.subscribe(poolTopic(s.pool))
            const before = this.sessions.get(s.hostId)
            this.sessions.set(s.hostId, s)
            if (before !== undefined && before !== s)
              before.close('ERR_REPLACED', 'a newer session of this host took over')
          },
          unregister: (s) => {
            if (this.sessions.get(s.hostId) === s) this.sessions.delete(s.hostId)
          },
          addresses: (peerId) => this.addressesOf(peerId)
        })
        void session.run()
      },
      { maxInboundStreams: 4 }
    )
    this.node.services.pubsub.subscribe(CLUSTER_TOPIC)
    this.dispatcher = new Dispatcher(
      this.pool,
      this.notifier,
      (hostId) => this.sessions.get(hostId),
      (peerId) => {
        void this.revoke(peerId)
      },
      this.log
    )
    await this.dispatcher.start()
    this.liveness.start()
    this.touch = new Loop(
      async () => {
        await touchHosts(this.pool, [...this.sessions.keys()]).catch((err: Error) =>
          this.log.warn({ err: err.message }, 'cannot record heartbeats')
        )
      },
      { name: 'heartbeat recording', everyMs: TOUCH_EVERY_MS, immediate: false, log: this.log }
    )
    this.touch.start()
    this.log.info({ peerId: this.peerId, multiaddrs: this.multiaddrs() }, 'mesh listening')
  }

  async stop(): Promise<void> {
    await this.touch?.stop()
    await this.liveness?.stop()
    await this.dispatcher?.stop()
    await this.node?.stop()
  }

  /** A new stream to a peer this node is connected to (session attaches). */
  async dialProtocol(
    peerId: string,
    protocol: string,
    signal: AbortSignal
  ): Promise<{ stream: Stream; connection: Connection }> {
    const connection = await this.node.dial(peerIdFromString(peerId), { signal })
    return { stream: await connection.newStream(protocol, { signal }), connection }
  }

  /** The agent's listen addresses, as it told us over identify. */
  private async addressesOf(peerId: string): Promise<string[]> {
    const peer = await this.node.peerStore.get(peerIdFromString(peerId))
    return peer.addresses.map((a) => a.multiaddr.toString())
  }

  /** A revoked peer may not connect again; its connections close now. */
  private async revoke(peerId: string): Promise<void> {
    this.denied.add(peerId)
    for (const c of this.node.getConnections()) if (c.remotePeer.toString() === peerId) await c.close().catch(() => {})
  }
}
