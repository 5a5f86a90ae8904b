// The coordinator's side of the mesh: a libp2p node with the cluster key
// (peers without it cannot connect), a stable identity, the control protocol
// handler, the sessions it holds, and the dispatcher and failure detector
// that serve them. A revoked peer is never dialled; when it dials in, it is
// told ERR_REVOKED on its control stream and cut off, so that its agent
// stops (exit 78) instead of redialling forever.
import { join } from 'node:path'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { Loop } from '../../common/daemon/loop.js'
import type { Logger } from '../../common/log.js'
import { createClusterKey, readClusterKey } from '../../common/mesh/cluster-key.js'
import { loadOrCreateIdentity } from '../../common/mesh/identity.js'
import { createMeshNode, type MeshNode } from '../../common/mesh/node.js'
import { FrameChannel } from '../../common/mesh/frames.js'
import { AgentFrame, CLUSTER_TOPIC, CONTROL_PROTOCOL, CoordinatorFrame, poolTopic } from '../../protocol/control.js'
import type { Notifier } from '../events/notifier.js'
import type { Pool } from '../store/db.js'
import { touchHosts } from '../store/hosts.js'
import { HealthRecorder } from '../telemetry/health-recorder.js'
import { LiveGpus } from '../telemetry/live-gpus.js'
import { Dispatcher } from './dispatcher.js'
import { REVOKED_MESSAGE } from './enroll.js'
import { Liveness } from './liveness.js'
import type { ClearHealthResult } from '../../protocol/control.js'
import { AgentSession, AgentUnanswered } from './session.js'

export interface MeshServerOptions {
  stateDir: string
  listen: string[]
  /** swarm.key to use; unset = <state>/cluster.key, created on first start. */
  clusterKeyFile?: string
  heartbeatMs?: number
  suspectAfterMs?: number
  probeTimeoutMs?: number
  /** How long a host whose agent closed its connection is waited for before it may be declared down. */
  agentGraceMs?: number
  /** Where the agents' GPU telemetry deltas are folded into tables; one per coordinator process. */
  liveGpus?: LiveGpus
}

const TOUCH_EVERY_MS = 5000
/** How long a revoked peer's connection is left open to read its ERR_REVOKED. */
const REVOKED_LINGER_MS = 5000
const HELLO_TIMEOUT_MS = 4000

export class MeshServer {
  readonly sessions = new Map<string, AgentSession>()
  private readonly denied = new Set<string>()
  private node!: MeshNode
  private dispatcher!: Dispatcher
  private liveness!: Liveness
  private touch: Loop | undefined
  readonly heartbeatMs: number
  readonly liveGpus: LiveGpus
  /** Writes the GPU health the agents report to PostgreSQL. */
  readonly health: HealthRecorder

  constructor(
    private readonly pool: Pool,
    private readonly notifier: Notifier,
    private readonly log: Logger,
    private readonly o: MeshServerOptions
  ) {
    this.heartbeatMs = o.heartbeatMs ?? 1000
    this.liveGpus = o.liveGpus ?? new LiveGpus()
    this.health = new HealthRecorder(pool, this.liveGpus, log)
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
      // Inbound ones get through, to be told (see the control handler); unknown peers do as well.
      gater: {
        denyOutboundEncryptedConnection: refused,
        denyDialPeer: refused
      }
    })
    this.node.addEventListener('connection:open', ({ detail: connection }) => {
      if (refused(connection.remotePeer))
        setTimeout(() => {
          connection.abort(new Error('revoked peer'))
        }, REVOKED_LINGER_MS).unref()
    })
    this.liveness = new Liveness(this.pool, () => [...this.sessions.values()], this.log, {
      heartbeatMs: this.heartbeatMs,
      ...(this.o.suspectAfterMs === undefined ? {} : { suspectAfterMs: this.o.suspectAfterMs }),
      ...(this.o.probeTimeoutMs === undefined ? {} : { probeTimeoutMs: this.o.probeTimeoutMs }),
      ...(this.o.agentGraceMs === undefined ? {} : { agentGraceMs: this.o.agentGraceMs })
    })
    await this.node.handle(
      CONTROL_PROTOCOL,
      (stream, connection) => {
        if (refused(connection.remotePeer)) {
          void this.tellRevoked(stream, connection)
          return
        }
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
              void before.close('ERR_REPLACED', 'a newer session of this host took over')
          },
          unregister: (s) => {
            if (this.sessions.get(s.hostId) === s) this.sessions.delete(s.hostId)
          },
          addresses: (peerId) => this.addressesOf(peerId),
          liveGpus: this.liveGpus,
          reconcileHealth: (hostId) => this.health.reconcile(hostId)
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
      (peerId, hostId) => {
        void this.revoke(peerId, hostId)
      },
      this.log
    )
    await this.dispatcher.start()
    this.health.start()
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
    await this.health.stop()
    await this.dispatcher?.stop()
    await this.node?.stop()
  }

  /** Asks the host's agent to clear a GPU's health; AgentUnanswered when its session is not here or it does not answer. */
  async clearHealth(hostId: string, gpu: number): Promise<ClearHealthResult> {
    const session = this.sessions.get(hostId)
    if (session === undefined)
      throw new AgentUnanswered(
        'the host is not connected to this coordinator (its agent is down or reconnecting, or connected to another coordinator)'
      )
    return await session.clearHealth(gpu)
  }

  /** A new stream to a peer this node is connected to (session attaches). */
  async dialProtocol(
    peerId: string,
    protocol: string,
    signal: AbortSignal,
    /** Streams of this protocol open at once on the connection (libp2p's default is 64). */
    maxOutboundStreams?: number
  ): Promise<{ stream: Stream; connection: Connection }> {
    const connection = await this.node.dial(peerIdFromString(peerId), { signal })
    return {
      stream: await connection.newStream(protocol, {
        signal,
        ...(maxOutboundStreams === undefined ? {} : { maxOutboundStreams })
      }),
      connection
    }
  }

  /** The agent's listen addresses, as it told us over identify. */
  private async addressesOf(peerId: string): Promise<string[]> {
    const peer = await this.node.peerStore.get(peerIdFromString(peerId))
    return peer.addresses.map((a) => a.multiaddr.toString())
  }

  /** A revoked peer is told so, and its connections close: its agent stops its work and exits. */
  private async revoke(peerId: string, hostId: string): Promise<void> {
    this.denied.add(peerId)
    this.liveness.forget(hostId)
    this.liveGpus.forget(hostId)
    const session = this.sessions.get(hostId)
    if (session?.peerId === peerId) await session.close('ERR_REVOKED', REVOKED_MESSAGE)
    await this.cutOff(peerId)
  }

  /** A revoked peer dialled in (an agent that was away when it was revoked, or restarted). */
  private async tellRevoked(stream: Stream, connection: Connection): Promise<void> {
    const channel = new FrameChannel(stream, AgentFrame, CoordinatorFrame)
    // After its hello (whatever it says), as any refusal: an answer that beats the dialler's
    // protocol negotiation would fail that, and its agent would only dial again.
    await channel.receive(AbortSignal.timeout(HELLO_TIMEOUT_MS)).catch(() => null)
    await channel.send({ v: 1, type: 'error', code: 'ERR_REVOKED', message: REVOKED_MESSAGE }).catch(() => {})
    this.log.info({ peer: connection.remotePeer.toString() }, 'revoked peer told so and cut off')
    await channel.close().catch(() => {})
    await this.cutOff(connection.remotePeer.toString())
  }

  private async cutOff(peerId: string): Promise<void> {
    for (const c of this.node.getConnections()) if (c.remotePeer.toString() === peerId) await c.close().catch(() => {})
  }
}
