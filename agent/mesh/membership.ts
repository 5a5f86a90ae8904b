// Who else is in the cluster and in this host's pool, from gossip: every
// agent announces itself on the cluster topic and its pool's topic every few
// seconds; members not heard from for a while are forgotten. mDNS peers are
// dialled (and redialled after a partition heals: libp2p does neither).
import type { Message } from '@libp2p/gossipsub'
import type { Logger } from '../../common/log.js'
import type { MeshNode } from '../../common/mesh/node.js'
import { Announcement, CLUSTER_TOPIC, CONTROL_VERSION, poolTopic, type Announcement as Member } from '../../protocol/control.js'
import { isValid } from '../../protocol/validate.js'

// Every member receives every announcement: the period bounds gossip traffic on large clusters.
const ANNOUNCE_MS = 10_000
const FORGET_MS = 35_000

export class Membership {
  private readonly members = new Map<string, Member & { seen: number }>()
  private timer: NodeJS.Timeout | undefined
  private pool: string

  constructor (private readonly node: MeshNode, private readonly self: { name: string, pool: string, gpus: number }, private readonly log: Logger) {
    this.pool = self.pool
  }

  start (): void {
    const pubsub = this.node.services.pubsub
    pubsub.subscribe(CLUSTER_TOPIC)
    pubsub.subscribe(poolTopic(this.pool))
    pubsub.addEventListener('message', this.onMessage)
    const mdns = this.node.services.mdns as EventTarget | undefined
    mdns?.addEventListener('peer', this.onPeer)
    this.node.addEventListener('peer:discovery', this.onPeer)
    void this.announce()
    this.timer = setInterval(() => { void this.announce() }, ANNOUNCE_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.node.services.pubsub.removeEventListener('message', this.onMessage)
    ;(this.node.services.mdns as EventTarget | undefined)?.removeEventListener('peer', this.onPeer)
    this.node.removeEventListener('peer:discovery', this.onPeer)
  }

  /** A re-detect moved the host to another pool. */
  setPool (pool: string): void {
    if (pool === this.pool) return
    this.node.services.pubsub.unsubscribe(poolTopic(this.pool))
    this.pool = pool
    this.self.pool = pool
    this.node.services.pubsub.subscribe(poolTopic(pool))
  }

  /** Members heard from recently, by pool (this host excluded). */
  view (pool?: string): Member[] {
    const now = Date.now()
    const out: Member[] = []
    for (const [id, m] of this.members) {
      if (now - m.seen > FORGET_MS) { this.members.delete(id); continue }
      if (pool === undefined || m.pool === pool) out.push({ v: m.v, peerId: m.peerId, name: m.name, pool: m.pool, gpus: m.gpus, at: m.at })
    }
    return out
  }

  private async announce (): Promise<void> {
    const data = new TextEncoder().encode(JSON.stringify({ v: CONTROL_VERSION, peerId: this.node.peerId.toString(), ...this.self, at: Date.now() }))
    for (const topic of [CLUSTER_TOPIC, poolTopic(this.pool)]) {
      await this.node.services.pubsub.publish(topic, data).catch((err: Error) => this.log.debug({ err: err.message, topic }, 'announce failed'))
    }
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== CLUSTER_TOPIC && !msg.topic.startsWith('gpumesh/pool/')) return
    let value: unknown
    try { value = JSON.parse(new TextDecoder().decode(msg.data)) } catch { return }
    // Gossip is signed by the sender; an announcement must speak for its signer only.
    if (!isValid(Announcement, value) || (msg.type === 'signed' && msg.from.toString() !== value.peerId)) return
    this.members.set(value.peerId, { ...value, seen: Date.now() })
  }

  private readonly onPeer = (evt: Event): void => {
    const peer = (evt as CustomEvent<{ id: { toString: () => string, equals: (o: unknown) => boolean } }>).detail
    if (peer?.id === undefined || this.node.getConnections(peer.id as never).length > 0) return
    // Both sides hear each other at once; only the smaller id dials, to avoid duplicate connections.
    if (peer.id.toString() < this.node.peerId.toString()) return
    this.node.dial(peer.id as never).catch(() => {})
  }
}
