// Who else is in the cluster and in this host's pool, from gossip: every
// agent announces itself on the cluster topic and its pool's topic every 30 s,
// and soon after a new peer subscribes to one of them (so views converge in
// about a second, not a period); members not heard from for three periods are
// forgotten. mDNS peers are dialled (and redialled after a partition heals:
// libp2p does neither).
import type { Message, SubscriptionChangeData } from '@libp2p/gossipsub'
import { Loop } from '../../common/daemon/loop.js'
import type { Startable } from '../../common/daemon/startable.js'
import type { Logger } from '../../common/log.js'
import type { MeshNode } from '../../common/mesh/node.js'
import {
  Announcement,
  CLUSTER_TOPIC,
  CONTROL_VERSION,
  poolTopic,
  type Announcement as Member
} from '../../protocol/control.js'
import { isValid } from '../../protocol/validate.js'

// Every member receives every cluster announcement: the period bounds gossip traffic (and an
// idle agent's CPU: each message is verified, handed on and answered by yamux) on large clusters.
const ANNOUNCE_MS = 30_000
const FORGET_MS = 95_000
/** Newcomers arrive in bursts (a rack booting): one announcement answers them all. */
const WELCOME_DELAY_MS = 500

export class Membership implements Startable {
  private readonly members = new Map<string, Member & { seen: number }>()
  private readonly announcing: Loop
  private welcome: NodeJS.Timeout | undefined
  private pool: string

  constructor(
    private readonly node: MeshNode,
    private readonly self: { name: string; pool: string; gpus: number },
    private readonly log: Logger
  ) {
    this.pool = self.pool
    this.announcing = new Loop(
      async () => {
        await this.announce()
      },
      { name: 'membership announcement', everyMs: ANNOUNCE_MS, log }
    )
  }

  start(): void {
    const pubsub = this.node.services.pubsub
    pubsub.subscribe(CLUSTER_TOPIC)
    pubsub.subscribe(poolTopic(this.pool))
    pubsub.addEventListener('message', this.onMessage)
    pubsub.addEventListener('subscription-change', this.onSubscription)
    const mdns = this.node.services.mdns as EventTarget | undefined
    mdns?.addEventListener('peer', this.onPeer)
    this.node.addEventListener('peer:discovery', this.onPeer)
    this.announcing.start()
  }

  async stop(): Promise<void> {
    await this.announcing.stop()
    clearTimeout(this.welcome)
    this.node.services.pubsub.removeEventListener('message', this.onMessage)
    this.node.services.pubsub.removeEventListener('subscription-change', this.onSubscription)
    ;(this.node.services.mdns as EventTarget | undefined)?.removeEventListener('peer', this.onPeer)
    this.node.removeEventListener('peer:discovery', this.onPeer)
  }

  /** A re-detect moved the host to another pool. */
  setPool(pool: string): void {
    if (pool === this.pool) return
    this.node.services.pubsub.unsubscribe(poolTopic(this.pool))
    this.pool = pool
    this.self.pool = pool
    this.node.services.pubsub.subscribe(poolTopic(pool))
  }

  /** Members heard from recently, by pool (this host excluded). */
  view(pool?: string): Member[] {
    const now = Date.now()
    const out: Member[] = []
    for (const [id, m] of this.members) {
      if (now - m.seen > FORGET_MS) {
        this.members.delete(id)
        continue
      }
      if (pool === undefined || m.pool === pool)
        out.push({ v: m.v, peerId: m.peerId, name: m.name, pool: m.pool, gpus: m.gpus, at: m.at })
    }
    return out
  }

  private async announce(): Promise<void> {
    const data = new TextEncoder().encode(
      JSON.stringify({ v: CONTROL_VERSION, peerId: this.node.peerId.toString(), ...this.self, at: Date.now() })
    )
    for (const topic of [CLUSTER_TOPIC, poolTopic(this.pool)]) {
      await this.node.services.pubsub
        .publish(topic, data)
        .catch((err: Error) => this.log.debug({ err: err.message, topic }, 'announce failed'))
    }
  }

  private readonly onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== CLUSTER_TOPIC && !msg.topic.startsWith('gpumesh/pool/')) return
    let value: unknown
    try {
      value = JSON.parse(new TextDecoder().decode(msg.data))
    } catch {
      return
    }
    // Gossip is signed by the sender; an announcement must speak for its signer only.
    if (!isValid(Announcement, value) || (msg.type === 'signed' && msg.from.toString() !== value.peerId)) return
    this.members.set(value.peerId, { ...value, seen: Date.now() })
  }

  private readonly onSubscription = (evt: CustomEvent<SubscriptionChangeData>): void => {
    const ours = [CLUSTER_TOPIC, poolTopic(this.pool)]
    if (this.welcome !== undefined || !evt.detail.subscriptions.some((s) => s.subscribe && ours.includes(s.topic)))
      return
    this.welcome = setTimeout(() => {
      this.welcome = undefined
      void this.announce()
    }, WELCOME_DELAY_MS)
  }

  private readonly onPeer = (evt: Event): void => {
    const peer = (evt as CustomEvent<{ id: { toString: () => string; equals: (o: unknown) => boolean } }>).detail
    if (peer?.id === undefined || this.node.getConnections(peer.id as never).length > 0) return
    // Both sides hear each other at once; only the smaller id dials, to avoid duplicate connections.
    if (peer.id.toString() < this.node.peerId.toString()) return
    this.node.dial(peer.id as never).catch(() => {})
  }
}
