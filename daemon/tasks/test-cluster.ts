// Fixtures for the scheduler and bid tests: heartbeats of fake nodes and an in-memory
// gossip network (publish reaches every other subscriber, send reaches one handler), so
// the leader loop and the bid exchange run without libp2p.
import type { Heartbeat } from '../../protocol/heartbeat.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import type { MemberView, MemberState } from '../membership/membership.ts';
import { sampleBody } from '../membership/test-fixtures.ts';
import type { GossipHandler, MessageHandler } from '../p2p/host.ts';

export interface FakeNode {
  id: string;
  models: string[];
  loaded?: string[];
  tokensPerSecond?: Record<string, number>;
  concurrency?: number;
  state?: MemberState;
}

export function heartbeatOf(node: FakeNode): Heartbeat {
  const body = sampleBody(node.id);
  return {
    ...body,
    kind: 'heartbeat', protocolVersion: PROTOCOL_VERSION, sequence: 1, sentAt: 1, instanceId: `i-${node.id}`, nodeId: node.id, leaving: false,
    ollama: {
      ...body.ollama,
      installed: node.models.map((name) => ({ name, sizeBytes: 4_000_000_000 })),
      loaded: (node.loaded ?? []).map((name) => ({ name, sizeBytes: 4_000_000_000, vramBytes: 4_000_000_000, expiresAt: null })),
      tokensPerSecond: node.tokensPerSecond ?? {},
    },
    load: { running: 0, queued: 0, concurrencyLimit: node.concurrency ?? 2 },
    agents: [],
  };
}

export function memberOf(node: FakeNode, self = false): MemberView {
  return { nodeId: node.id, state: node.state ?? 'alive', self, lastSeenMs: Date.now(), heartbeat: heartbeatOf(node), clockOffsetMs: 0 };
}

/** Gossip and one-way messages between in-process fake hosts. */
export class FakeNetwork {
  private readonly topics = new Map<string, Map<string, GossipHandler>>();
  private readonly inboxes = new Map<string, Map<string, MessageHandler>>();
  published = 0;

  host(id: string) {
    return {
      publish: async (topic: string, bytes: Uint8Array): Promise<number> => {
        const subscribers = [...(this.topics.get(topic) ?? new Map<string, GossipHandler>())].filter(([peer]) => peer !== id);
        if (subscribers.length === 0) throw new Error('NoPeersSubscribedToTopic');
        this.published += 1;
        // Delivered on a later turn, as over a socket.
        setTimeout(() => { for (const [, handler] of subscribers) handler(id, bytes); }, 1);
        return subscribers.length;
      },
      subscribe: (topic: string, handler: GossipHandler) => {
        let subscribers = this.topics.get(topic);
        if (subscribers === undefined) this.topics.set(topic, (subscribers = new Map()));
        subscribers.set(id, handler);
        return () => { subscribers.delete(id); };
      },
      handleMessages: async (protocol: string, handler: MessageHandler) => {
        let inbox = this.inboxes.get(protocol);
        if (inbox === undefined) this.inboxes.set(protocol, (inbox = new Map()));
        inbox.set(id, handler);
      },
      send: (to: string, protocol: string, bytes: Uint8Array) => {
        const handler = this.inboxes.get(protocol)?.get(to);
        if (handler !== undefined) setTimeout(() => void handler(id, bytes), 1);
      },
    };
  }
}
