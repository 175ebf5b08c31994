// The libp2p host of a hivemesh daemon: TCP + pnet (cluster key) + noise + yamux,
// identify, gossipsub (StrictSign) and optional mDNS, with the three ways the upper
// planes talk: gossip (`publish`/`subscribe`), streamed RPC (`handle`/`request`) and
// one-way ordered messages for Raft (`send`/`handleMessages`). It also keeps the mesh
// connected: it dials bootstrap peers until connected (and again when they come back),
// dials what mDNS finds, and asks each new peer for the peers it knows (peer exchange),
// so every node ends up with a direct connection to every other: Raft needs them.
import { connect as tcpConnect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createLibp2p, type Libp2p } from 'libp2p';
import { corkedTcp } from './corked-tcp.ts';
import './yamux-window.ts';
import './xsalsa20-fix.ts';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify, type Identify } from '@libp2p/identify';
import { mdns } from '@libp2p/mdns';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { preSharedKey } from '@libp2p/pnet';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import type { PeerId, PeerInfo, PrivateKey, Stream, PeerDiscovery } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import * as limits from '../../protocol/limits.ts';
import { logger } from '../log.ts';
import {
  FrameTooLargeError, HostStoppedError, PeerUnreachableError, RequestFailedError, RequestTimeoutError,
  assertFrameSize, readFrames, readMessages, writeFragmented, writeFrame,
} from './frames.ts';

export { FrameTooLargeError, HostStoppedError, PeerUnreachableError, RequestFailedError, RequestTimeoutError } from './frames.ts';

const log = logger('p2p');

export const P2P_PORT_DEFAULT = 7421;
/** Our own mDNS service name, so hivemesh nodes do not answer every libp2p app on the LAN. */
export const MDNS_SERVICE_TAG = '_hivemesh._udp.local';
export const PEER_EXCHANGE_PROTOCOL = '/hivemesh/peer-exchange/1.0.0';

export interface P2PHostOptions {
  privateKey: PrivateKey;
  /** The pnet pre-shared key file's bytes (format of @libp2p/pnet generateKey). */
  clusterKey: Uint8Array;
  /** Interface to listen on; default 0.0.0.0. */
  listenHost?: string;
  /** TCP port; default 7421, 0 picks a free one. */
  port?: number;
  /** Host names or IPs to announce instead of the listen addresses (NAT, containers). */
  announceHosts?: string[];
  /** Multiaddrs of static peers, ideally with /p2p/<peer id>. */
  bootstrap?: string[];
  mdns: boolean;
  mdnsIntervalMs?: number;
  /** Aborting it stops the host. */
  signal?: AbortSignal;
  frameBytesMax?: number;
  /** One one-way message (send); above frameBytesMax it travels in pieces. */
  messageBytesMax?: number;
  sendQueueMessagesMax?: number;
  sendQueueBytesMax?: number;
  requestTimeoutMsDefault?: number;
  /** Ask peers for their peers and dial them (default true): keeps the mesh complete. */
  peerExchange?: boolean;
  /** How long after connecting a peer's own messages are relayed under the 'newcomers' policy. */
  newcomerRelayMs?: number;
}

export interface IdentityConflict {
  /** The peer id both processes claim (ours, for conflicts the host detects). */
  peerId: string;
  source: 'mdns' | 'dial';
  addresses: string[];
  detail: string;
}

export interface P2PHostEvents {
  'peer:connected': { peerId: string };
  'peer:disconnected': { peerId: string };
  /** A connected peer subscribed to a gossip topic: a good moment to publish to it. */
  'peer:subscribed': { peerId: string; topic: string };
  'identity-conflict': IdentityConflict;
  /** A peer keeps resetting our connections during the handshake (most often: another cluster key). */
  'handshake-failing': { address: string; failures: number; detail: string };
}

/**
 * Dial failures that mean the peer answered but would not finish the handshake (pnet,
 * noise). A dial of several addresses (as mDNS announces them) fails with an AggregateError
 * of one error per address: any of them counts, as does a cause.
 */
export function isHandshakeFailure(error: unknown, depth = 0): boolean {
  if (error === null || typeof error !== 'object' || depth > 4) return false;
  const nested = [...((error as { errors?: unknown }).errors instanceof Array ? (error as { errors: unknown[] }).errors : []), (error as { cause?: unknown }).cause];
  if (nested.some((inner) => isHandshakeFailure(inner, depth + 1))) return true;
  const text = `${(error as Error).name ?? ''} ${(error as Error).message ?? ''} ${(error as { code?: string }).code ?? ''}`;
  if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|timed? ?out|Timeout|abort|All multiaddr dials failed/i.test(text)) return false;
  return /ECONNRESET|EPIPE|reset|ended|end of|decrypt|handshake|invalid|unexpected/i.test(text);
}

/** After this many handshake failures in a row with one peer, the operator is told. */
const handshakeFailuresReported = 3;

export interface Reply {
  /** Sends one response frame; waits when the stream's buffer is full. */
  send(bytes: Uint8Array): Promise<void>;
  /** Ends the response stream; the requester's iteration completes. */
  end(): Promise<void>;
}

export interface RequestHandlerContext {
  /** Aborted when the requester goes away or the host stops. */
  signal: AbortSignal;
}

export type RequestHandler = (fromPeerId: string, request: Uint8Array, reply: Reply, context: RequestHandlerContext) => void | Promise<void>;
export type MessageHandler = (fromPeerId: string, bytes: Uint8Array) => void | Promise<void>;
export type GossipHandler = (fromPeerId: string, bytes: Uint8Array) => void;
export type RelayPolicy = 'always' | 'newcomers' | 'never';

export interface RequestOptions {
  signal?: AbortSignal;
  /** Bound on the whole request, responses included. */
  timeoutMs?: number;
}

export interface SendStats {
  peerId: string;
  protocol: string;
  queued: number;
  sent: number;
  /** Messages dropped: the oldest when the queue was full, or all queued when the peer was unreachable. */
  dropped: number;
}

// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
type Services = {
  identify: Identify;
  pubsub: GossipSub;
  mdns?: PeerDiscovery;
};

/** Gossipsub has this method; its exported interface does not list it. */
interface GossipValidationReporter {
  reportMessageValidationResult(msgId: string, propagationSource: string, acceptance: 'accept' | 'ignore' | 'reject'): void;
}

interface OutboundChannel {
  peerId: string;
  protocol: string;
  queue: Uint8Array[];
  queuedBytes: number;
  /** Bytes of queued messages over a frame (sent in pieces), bounded on their own. */
  largeBytes: number;
  stream: Stream | null;
  pumping: boolean;
  sent: number;
  dropped: number;
  backoffMs: number;
  nextDialAtMs: number;
  /** Ends the pump's wait for the next dial early (the peer just connected), or null. */
  wake: (() => void) | null;
}

interface BootstrapTarget {
  address: Multiaddr;
  /** From the address, or learned at the first successful dial. */
  peerId: string | null;
  /** The address names our own id: dial it only to find a twin (a copied data dir). */
  namesOurId: boolean;
  backoffMs: number;
  nextAttemptMs: number;
  dialing: boolean;
  /** Handshake failures since the last connection (see isHandshakeFailure). */
  handshakeFailures: number;
}

const channelsMax = limits.clusterNodesMax * 8;
/** Bound of the parsed peer id cache (members, bootstrap targets and exchanged peers). */
const parsedPeerIdsMax = limits.clusterNodesMax * 4;
const bootstrapTickMs = 250;
const conflictReportEveryMs = 60_000;
/** How long a peer exchange answer waits for connected peers that identify has not yet described. */
const peerExchangeIdentifyWaitMs = 1_000;
/** How long after connecting a peer's own messages are relayed under the 'newcomers' policy. */
const newcomerRelayMsDefault = 5_000;
/** Extra mDNS queries after start, in ms from start. */
const mdnsStartBurstMs = [100, 400, 1_000];
/** Delay of the extra mDNS query sent when a peer disconnects (a restart takes a moment). */
const mdnsAfterDisconnectMs = 1_000;

/** Creates and starts a host. */
export async function createP2PHost(options: P2PHostOptions): Promise<P2PHost> {
  const host = new P2PHost(options);
  await host.start();
  return host;
}

/** Events are CustomEvents whose `detail` is the matching P2PHostEvents entry; `on()` is the typed shortcut. */
export class P2PHost extends EventTarget {
  readonly #options: P2PHostOptions;
  readonly #frameBytesMax: number;
  readonly #messageBytesMax: number;
  readonly #gossipHandlers = new Map<string, Set<GossipHandler>>();
  readonly #relayPolicies = new Map<string, RelayPolicy>();
  /** When each connected peer connected (ms since epoch), for the 'newcomers' relay policy. */
  readonly #connectedAtMs = new Map<string, number>();
  readonly #channels = new Map<string, OutboundChannel>();
  readonly #bootstrapTargets: BootstrapTarget[];
  readonly #shutdown = new AbortController();
  readonly #dialing = new Set<string>();
  /** Handshake failures in a row per peer found by mDNS (bootstrap targets count their own). */
  readonly #handshakeFailuresByPeer = new Map<string, number>();
  readonly #conflictReportedAtMs = new Map<string, number>();
  /** Parsed peer ids by their text (parsing one costs ~10 us; isConnected runs per message batch). */
  readonly #parsedPeerIds = new Map<string, PeerId>();
  #node: Libp2p<Services> | null = null;
  #bootstrapTimer: NodeJS.Timeout | null = null;
  #peerExchangeTimer: NodeJS.Timeout | null = null;
  readonly #mdnsQueryTimers = new Set<NodeJS.Timeout>();
  #state: 'new' | 'running' | 'stopped' = 'new';
  #peerId = '';

  constructor(options: P2PHostOptions) {
    super();
    this.#options = options;
    this.#frameBytesMax = options.frameBytesMax ?? limits.p2pFrameBytesMax;
    this.#messageBytesMax = options.messageBytesMax ?? limits.p2pMessageBytesMax;
    const bootstrap = options.bootstrap ?? [];
    if (bootstrap.length > limits.bootstrapPeersMax) {
      throw new RangeError(`${bootstrap.length} bootstrap peers given; at most ${limits.bootstrapPeersMax} are allowed`);
    }
    this.#bootstrapTargets = bootstrap.map((text) => {
      let address: Multiaddr;
      try {
        address = multiaddr(text);
      } catch (error) {
        throw new RangeError(`bootstrap address "${text}" is not a multiaddr (${(error as Error).message}); expected e.g. /ip4/10.0.0.2/tcp/7421/p2p/12D3KooW...`);
      }
      if (!address.toString().includes('/tcp/')) {
        throw new RangeError(`bootstrap address "${text}" has no /tcp/ port; expected e.g. /ip4/10.0.0.2/tcp/7421/p2p/12D3KooW...`);
      }
      return { address, peerId: peerIdOf(address), namesOurId: false, backoffMs: limits.p2pRedialMsMin, nextAttemptMs: 0, dialing: false, handshakeFailures: 0 };
    });
  }

  get peerId(): string {
    return this.#peerId;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error('a P2PHost starts once');
    const options = this.#options;
    const listenHost = options.listenHost ?? '0.0.0.0';
    const port = options.port ?? P2P_PORT_DEFAULT;
    const announceHosts = options.announceHosts ?? [];
    const ownPeerId = peerIdFromPrivateKey(options.privateKey).toString();
    const services = {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign',
        // Heartbeats go out before anyone else is there; that is not an error.
        allowPublishToZeroTopicPeers: true,
        // Our own messages go straight to every subscribed peer, not only the mesh:
        // the mesh is small and it cuts the time to be seen to one hop.
        floodPublish: true,
        // Forwarding is decided per topic after delivery (subscribe's `relay` option).
        asyncValidation: true,
        emitSelf: false,
        fallbackToFloodsub: false,
        maxInboundDataLength: limits.heartbeatBytesMax * 4,
      }),
      ...(options.mdns ? { mdns: mdns({ interval: options.mdnsIntervalMs ?? limits.mdnsIntervalMsDefault, serviceTag: MDNS_SERVICE_TAG }) } : {}),
    };
    const node = await createLibp2p<Services>({
      privateKey: options.privateKey,
      start: false,
      addresses: {
        listen: [`${ipPrefix(listenHost)}/tcp/${port}`],
        // With a configured announce host, advertise it with the port we actually bound
        // (known only after listening when port is 0).
        ...(announceHosts.length === 0 ? {} : {
          announceFilter: (addresses: Multiaddr[]) => {
            const boundPort = addresses.map((address) => tcpPortOf(address)).find((value) => value !== null) ?? port;
            return announceHosts.map((host) => multiaddr(`${ipPrefix(host)}/tcp/${boundPort}/p2p/${ownPeerId}`));
          },
        }),
      },
      transports: [corkedTcp()],
      connectionProtector: preSharedKey({ psk: options.clusterKey }),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux({ streamOptions: { maxReadBufferLength: limits.p2pStreamReadBufferBytesMax } })],
      connectionManager: {
        maxConnections: limits.clusterNodesMax * 2,
        dialTimeout: limits.p2pDialTimeoutMs,
      },
      services: services as never,
    });
    this.#node = node;
    this.#peerId = node.peerId.toString();

    node.addEventListener('peer:connect', (event) => {
      const peerId = event.detail.toString();
      this.#connectedAtMs.set(peerId, Date.now());
      this.#handshakeFailuresByPeer.delete(peerId);
      for (const target of this.#bootstrapTargets) if (target.peerId === peerId) target.handshakeFailures = 0;
      // A peer that was away (a restart) is back: its channels dial now, not after the backoff
      // its absence built up (up to p2pRedialMsMax: a restarted member heard no leader for 5 s).
      for (const channel of this.#channels.values()) {
        if (channel.peerId !== peerId) continue;
        channel.backoffMs = limits.p2pRedialMsMin;
        channel.nextDialAtMs = 0;
        channel.wake?.();
      }
      log.debug('peer connected', { peer: peerId });
      this.#emit('peer:connected', { peerId });
      if (options.peerExchange ?? true) void this.#exchangePeers(event.detail);
    });
    node.addEventListener('peer:disconnect', (event) => {
      const peerId = event.detail.toString();
      this.#connectedAtMs.delete(peerId);
      log.debug('peer disconnected', { peer: peerId });
      for (const channel of this.#channels.values()) {
        if (channel.peerId === peerId && channel.stream !== null) {
          channel.stream.abort(new Error('peer disconnected'));
          channel.stream = null;
        }
      }
      this.#emit('peer:disconnected', { peerId });
      if (this.#node?.services.mdns !== undefined && this.#state === 'running') this.#scheduleMdnsQuery(mdnsAfterDisconnectMs);
    });
    node.services.pubsub.addEventListener('gossipsub:message', (event) => {
      const { msg: message, msgId, propagationSource } = event.detail;
      // StrictSign: gossipsub verified the signature; `from` is the signer.
      if (message.type !== 'signed') return;
      const handlers = this.#gossipHandlers.get(message.topic);
      const from = message.from.toString();
      for (const handler of handlers ?? []) {
        try {
          handler(from, message.data);
        } catch (error) {
          log.error('gossip handler failed', { topic: message.topic, error });
        }
      }
      // With asyncValidation on, nothing is forwarded until we say so (see subscribe()).
      const policy = handlers === undefined ? 'never' : this.#relayPolicies.get(message.topic) ?? 'always';
      const relay = policy === 'always' || (policy === 'newcomers' && this.#isNewcomer(from) && propagationSource.equals(message.from));
      (node.services.pubsub as unknown as GossipValidationReporter).reportMessageValidationResult(msgId, propagationSource.toString(), relay ? 'accept' : 'ignore');
    });
    node.services.pubsub.addEventListener('subscription-change', (event) => {
      const peerId = event.detail.peerId.toString();
      for (const subscription of event.detail.subscriptions) {
        if (subscription.subscribe) this.#emit('peer:subscribed', { peerId, topic: subscription.topic });
      }
    });
    node.services.mdns?.addEventListener('peer', (event) => this.#onMdnsPeer(event.detail));

    await node.handle(PEER_EXCHANGE_PROTOCOL, (stream, connection) => this.#answerPeerExchange(stream, connection.remotePeer), {
      maxInboundStreams: 4,
    });
    await node.start();
    this.#state = 'running';
    if (options.signal !== undefined) {
      if (options.signal.aborted) {
        await this.stop();
        return;
      }
      options.signal.addEventListener('abort', () => void this.stop(), { once: true });
    }
    for (const target of this.#bootstrapTargets) {
      if (target.peerId === this.#peerId) target.namesOurId = true;
    }
    if (options.peerExchange ?? true) this.#peerExchangeTimer = setInterval(() => {
      const peers = this.#node?.getPeers() ?? [];
      const peer = peers[Math.floor(Math.random() * peers.length)];
      if (peer !== undefined) void this.#exchangePeers(peer);
    }, limits.peerExchangeIntervalMs);
    this.#peerExchangeTimer?.unref();
    if (this.#bootstrapTargets.length > 0) {
      this.#bootstrapTick();
      this.#bootstrapTimer = setInterval(() => this.#bootstrapTick(), bootstrapTickMs);
      this.#bootstrapTimer.unref();
    }
    if (node.services.mdns !== undefined) {
      for (const delayMs of mdnsStartBurstMs) this.#scheduleMdnsQuery(delayMs);
    }
    log.info('p2p host listening', { peerId: this.#peerId, addresses: this.multiaddrs() });
  }

  /**
   * Sends one extra mDNS query after delayMs. Existing nodes find a new one when it
   * dials them, so what matters is that the new node's own queries are answered: a
   * short burst at start covers a lost first packet, and a query after losing a peer
   * finds it again without waiting for the periodic one.
   */
  #scheduleMdnsQuery(delayMs: number): void {
    if (this.#mdnsQueryTimers.size >= mdnsStartBurstMs.length + 1) return;
    const timer = setTimeout(() => {
      this.#mdnsQueryTimers.delete(timer);
      if (this.#state !== 'running') return;
      const responder = (this.#node?.services.mdns as { mdns?: { query(query: unknown): void } } | undefined)?.mdns;
      try {
        responder?.query({ questions: [{ name: MDNS_SERVICE_TAG, type: 'PTR' }] });
      } catch (error) {
        log.debug('mDNS query failed', { error });
      }
    }, delayMs);
    timer.unref();
    this.#mdnsQueryTimers.add(timer);
  }

  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    const wasRunning = this.#state === 'running';
    this.#state = 'stopped';
    this.#shutdown.abort(new HostStoppedError());
    if (this.#bootstrapTimer !== null) clearInterval(this.#bootstrapTimer);
    if (this.#peerExchangeTimer !== null) clearInterval(this.#peerExchangeTimer);
    for (const timer of this.#mdnsQueryTimers) clearTimeout(timer);
    this.#mdnsQueryTimers.clear();
    for (const channel of this.#channels.values()) {
      channel.stream?.abort(new HostStoppedError());
      channel.stream = null;
      channel.queue = [];
      channel.queuedBytes = 0;
    }
    if (wasRunning || this.#node !== null) await this.#node?.stop();
  }

  get running(): boolean {
    return this.#state === 'running';
  }

  /** Our listen addresses, each ending in /p2p/<our peer id>. */
  multiaddrs(): string[] {
    return this.#node?.getMultiaddrs().map((address) => address.toString()) ?? [];
  }

  connectedPeers(): string[] {
    return this.#node?.getPeers().map((peer) => peer.toString()) ?? [];
  }

  isConnected(peerId: string): boolean {
    if (this.#node === null) return false;
    let parsed = this.#parsedPeerIds.get(peerId);
    if (parsed === undefined) {
      parsed = peerIdFromString(peerId);
      if (this.#parsedPeerIds.size >= parsedPeerIdsMax) this.#parsedPeerIds.clear();
      this.#parsedPeerIds.set(peerId, parsed);
    }
    return this.#node.getConnections(parsed).length > 0;
  }

  /** Dials an address (with or without /p2p/); resolves with the remote's peer id. */
  /**
   * For a peer the failure detector gave up on: drop its connections (after a partition a
   * TCP connection can look open while its retransmissions back off for many seconds) and
   * dial it afresh from the addresses we know, now and on later calls while it stays away.
   * Returns true when a new connection is up.
   */
  async reconnect(peerId: string, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    const node = this.#running();
    const id = parsePeerId(peerId);
    try {
      await node.hangUp(id);
    } catch (error) {
      log.debug('hang-up failed', { peer: peerId, error });
    }
    if (this.#node?.services.mdns !== undefined) this.#scheduleMdnsQuery(0);
    const signal = anySignal([this.#shutdown.signal, AbortSignal.timeout(limits.p2pDialTimeoutMs), options.signal]);
    try {
      await node.dial(id, { signal });
      return true;
    } catch (error) {
      log.debug('redial of a silent peer failed', { peer: peerId, error });
      return false;
    }
  }

  async connect(address: string, options: { signal?: AbortSignal } = {}): Promise<string> {
    const node = this.#running();
    const signal = anySignal([this.#shutdown.signal, AbortSignal.timeout(limits.p2pDialTimeoutMs), options.signal]);
    const connection = await node.dial(multiaddr(address), { signal });
    return connection.remotePeer.toString();
  }

  /** Typed listener; returns a function that removes it. A throwing listener is logged, not fatal. */
  on<K extends keyof P2PHostEvents>(type: K, listener: (detail: P2PHostEvents[K]) => void): () => void {
    const wrapped = (event: Event): void => {
      try {
        listener((event as CustomEvent<P2PHostEvents[K]>).detail);
      } catch (error) {
        log.error(`${type} listener failed`, { error });
      }
    };
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  #emit<K extends keyof P2PHostEvents>(type: K, detail: P2PHostEvents[K]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- gossip ----

  /** Publishes to a topic; resolves with how many peers it was sent to directly. */
  async publish(topic: string, bytes: Uint8Array): Promise<number> {
    const node = this.#running();
    const result = await node.services.pubsub.publish(topic, bytes);
    return result.recipients.length;
  }

  /**
   * Subscribes; the handler gets the verified signer's peer id. Returns an unsubscribe
   * function. `relay` decides whether received messages are forwarded to our mesh peers:
   * 'always' (gossipsub's usual way); 'never'; or 'newcomers': only messages a peer sent
   * us itself within `newcomerRelayMs` of connecting to us. 'newcomers' suits topics whose
   * publishers flood-publish to every peer on a mesh where every node connects to every
   * other (which this host maintains): in steady state forwarding only multiplies the
   * traffic by the mesh degree, while a node that just joined through one peer is heard
   * by all at once, before its direct connections to them are up.
   */
  subscribe(topic: string, handler: GossipHandler, options: { relay?: RelayPolicy } = {}): () => void {
    const node = this.#running();
    let handlers = this.#gossipHandlers.get(topic);
    if (handlers === undefined) {
      handlers = new Set();
      this.#gossipHandlers.set(topic, handlers);
      node.services.pubsub.subscribe(topic);
    }
    this.#relayPolicies.set(topic, options.relay ?? 'always');
    handlers.add(handler);
    return () => {
      const current = this.#gossipHandlers.get(topic);
      if (current === undefined) return;
      current.delete(handler);
      if (current.size === 0) {
        this.#gossipHandlers.delete(topic);
        this.#relayPolicies.delete(topic);
        if (this.#state === 'running') node.services.pubsub.unsubscribe(topic);
      }
    };
  }

  /** Peers we know are subscribed to a topic. */
  topicPeers(topic: string): string[] {
    return this.#node?.services.pubsub.getSubscribers(topic).map((peer) => peer.toString()) ?? [];
  }

  // ---- request / response ----

  /**
   * Serves a protocol: each inbound stream carries one request frame, and the handler
   * answers with any number of frames, then `end()` (called for it when it returns).
   * A handler that throws aborts the stream: the requester gets RequestFailedError.
   */
  async handle(protocol: string, handler: RequestHandler): Promise<void> {
    const node = this.#running();
    await node.handle(protocol, async (stream, connection) => {
      const fromPeerId = connection.remotePeer.toString();
      const controller = new AbortController();
      const abortHandler = (): void => controller.abort(new Error('request stream closed'));
      stream.addEventListener('close', abortHandler, { once: true });
      const stopHandler = (): void => stream.abort(new HostStoppedError());
      this.#shutdown.signal.addEventListener('abort', stopHandler, { once: true });
      // The requester closes its side right after the request; bound the wait anyway.
      const requestTimer = setTimeout(() => stream.abort(new RequestTimeoutError('no request frame within the timeout')), this.#requestTimeoutMs());
      try {
        const first = await readFrames(stream, this.#frameBytesMax).next();
        clearTimeout(requestTimer);
        if (first.done === true) {
          stream.abort(new Error('stream ended without a request'));
          return;
        }
        let ended = false;
        const reply: Reply = {
          send: async (bytes) => {
            if (ended) throw new Error(`reply on ${protocol} already ended`);
            await writeFrame(stream, bytes, this.#frameBytesMax, controller.signal);
          },
          end: async () => {
            if (ended) return;
            ended = true;
            await stream.close();
          },
        };
        await handler(fromPeerId, first.value, reply, { signal: controller.signal });
        await reply.end();
      } catch (error) {
        log.debug('request handler failed', { protocol, peer: fromPeerId, error });
        stream.abort(error instanceof Error ? error : new Error(String(error)));
      } finally {
        clearTimeout(requestTimer);
        stream.removeEventListener('close', abortHandler);
        this.#shutdown.signal.removeEventListener('abort', stopHandler);
      }
    }, { maxInboundStreams: limits.p2pInboundStreamsMax, maxOutboundStreams: limits.p2pInboundStreamsMax });
  }

  /**
   * Sends one request and yields the response frames until the remote ends. Throws
   * PeerUnreachableError, RequestTimeoutError, FrameTooLargeError or RequestFailedError;
   * the caller's own abort rethrows its signal's reason.
   */
  async *request(peerId: string, protocol: string, bytes: Uint8Array, options: RequestOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
    const node = this.#running();
    assertFrameSize(bytes, this.#frameBytesMax, `the request on ${protocol}`);
    const remote = parsePeerId(peerId);
    const timeoutMs = options.timeoutMs ?? this.#requestTimeoutMs();
    const timeoutSignal = AbortSignal.timeout(timeoutMs);
    const signal = anySignal([this.#shutdown.signal, timeoutSignal, options.signal]);
    const failure = (error: unknown): Error => {
      if (this.#shutdown.signal.aborted) return new HostStoppedError();
      if (options.signal?.aborted === true) return options.signal.reason instanceof Error ? options.signal.reason : new Error(String(options.signal.reason));
      if (timeoutSignal.aborted) return new RequestTimeoutError(`request to ${peerId} on ${protocol} took over ${timeoutMs} ms`);
      if (error instanceof FrameTooLargeError || error instanceof PeerUnreachableError) return error;
      return new RequestFailedError(`request to ${peerId} on ${protocol} failed: ${(error as Error).message}`, { cause: error });
    };
    let stream: Stream;
    try {
      stream = await node.dialProtocol(remote, protocol, { signal });
    } catch (error) {
      const mapped = failure(error);
      if (mapped instanceof RequestFailedError) {
        throw new PeerUnreachableError(peerId, `cannot open ${protocol} to ${peerId}: ${(error as Error).message}`, { cause: error });
      }
      throw mapped;
    }
    const onAbort = (): void => stream.abort(new Error('request aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    let finished = false;
    try {
      await writeFrame(stream, bytes, this.#frameBytesMax, signal);
      await stream.close({ signal });
      for await (const frame of readFrames(stream, this.#frameBytesMax)) {
        yield frame;
      }
      if (signal.aborted) throw failure(signal.reason);
      finished = true;
    } catch (error) {
      throw failure(error);
    } finally {
      signal.removeEventListener('abort', onAbort);
      // The caller stopped iterating early, or something failed: release the stream.
      if (!finished && stream.status === 'open') stream.abort(new Error('request abandoned'));
    }
  }

  // ---- one-way ordered messages ----

  /** Receives messages sent with `send()` on a protocol, in order per sender. */
  async handleMessages(protocol: string, handler: MessageHandler): Promise<void> {
    const node = this.#running();
    await node.handle(protocol, async (stream, connection) => {
      const fromPeerId = connection.remotePeer.toString();
      try {
        for await (const message of readMessages(stream, this.#frameBytesMax, this.#messageBytesMax)) {
          // Awaiting keeps the order and pushes back on a sender faster than us.
          await handler(fromPeerId, message);
        }
      } catch (error) {
        if (this.#state === 'running') log.debug('message stream ended with an error', { protocol, peer: fromPeerId, error });
        stream.abort(error instanceof Error ? error : new Error(String(error)));
      }
    }, { maxInboundStreams: 4, maxOutboundStreams: 4 });
  }

  /**
   * Queues a message for a peer and returns at once. Messages go out in order on one
   * long-lived stream per peer and protocol, re-opened after a failure. The queue is
   * bounded: the oldest messages are dropped (and counted) when it is full, and all
   * queued ones when the peer cannot be reached, which Raft tolerates by design.
   */
  send(peerId: string, protocol: string, bytes: Uint8Array): void {
    this.#running();
    if (bytes.byteLength > this.#messageBytesMax) {
      throw new FrameTooLargeError(`the message on ${protocol} is ${bytes.byteLength} bytes, over the ${this.#messageBytesMax}-byte limit`);
    }
    const key = `${peerId} ${protocol}`;
    let channel = this.#channels.get(key);
    if (channel === undefined) {
      parsePeerId(peerId);
      if (this.#channels.size >= channelsMax) this.#pruneIdleChannels();
      if (this.#channels.size >= channelsMax) {
        log.warn('too many outbound message channels; message dropped', { peer: peerId, protocol, channelsMax });
        return;
      }
      channel = { peerId, protocol, queue: [], queuedBytes: 0, largeBytes: 0, stream: null, pumping: false, sent: 0, dropped: 0, backoffMs: limits.p2pRedialMsMin, nextDialAtMs: 0, wake: null };
      this.#channels.set(key, channel);
    }
    const messagesMax = this.#options.sendQueueMessagesMax ?? limits.p2pSendQueueMessagesMax;
    const bytesMax = this.#options.sendQueueBytesMax ?? limits.p2pSendQueueBytesMax;
    channel.queue.push(bytes);
    channel.queuedBytes += bytes.byteLength;
    if (bytes.byteLength > this.#frameBytesMax) channel.largeBytes += bytes.byteLength;
    // Messages sent in pieces bring their own allowance (one snapshot may exceed the bound),
    // up to one message's worth in all.
    while (channel.queue.length > 1 && (channel.queue.length > messagesMax || channel.queuedBytes - channel.largeBytes > bytesMax || channel.largeBytes > this.#messageBytesMax)) {
      this.#unqueue(channel);
      channel.dropped += 1;
    }
    if (!channel.pumping) void this.#pump(channel);
  }

  sendStats(): SendStats[] {
    return [...this.#channels.values()].map((channel) => ({
      peerId: channel.peerId, protocol: channel.protocol, queued: channel.queue.length, sent: channel.sent, dropped: channel.dropped,
    }));
  }

  #unqueue(channel: OutboundChannel): Uint8Array {
    const bytes = channel.queue.shift()!;
    channel.queuedBytes -= bytes.byteLength;
    if (bytes.byteLength > this.#frameBytesMax) channel.largeBytes -= bytes.byteLength;
    return bytes;
  }

  async #pump(channel: OutboundChannel): Promise<void> {
    channel.pumping = true;
    try {
      while (channel.queue.length > 0 && this.#state === 'running') {
        if (channel.stream === null || channel.stream.status !== 'open' || channel.stream.writeStatus !== 'writable') {
          channel.stream = null;
          const waitMs = channel.nextDialAtMs - Date.now();
          if (waitMs > 0) {
            const woken = new AbortController();
            channel.wake = () => woken.abort();
            try {
              await sleep(waitMs, anySignal([this.#shutdown.signal, woken.signal]));
            } finally {
              channel.wake = null;
            }
            if (this.#state !== 'running') return;
          }
          try {
            channel.stream = await this.#running().dialProtocol(parsePeerId(channel.peerId), channel.protocol, {
              signal: anySignal([this.#shutdown.signal, AbortSignal.timeout(limits.p2pDialTimeoutMs)]),
            });
            channel.backoffMs = limits.p2pRedialMsMin;
          } catch (error) {
            if (this.#state !== 'running') return;
            // Stale messages are worse than none for Raft; it resends what matters.
            channel.dropped += channel.queue.length;
            channel.queue = [];
            channel.queuedBytes = 0;
            channel.largeBytes = 0;
            channel.nextDialAtMs = Date.now() + channel.backoffMs;
            channel.backoffMs = Math.min(channel.backoffMs * 2, limits.p2pRedialMsMax);
            log.debug('cannot open message stream', { peer: channel.peerId, protocol: channel.protocol, error });
            return;
          }
        }
        const bytes = this.#unqueue(channel);
        try {
          if (bytes.byteLength > this.#frameBytesMax) await writeFragmented(channel.stream, bytes, Math.min(limits.p2pFragmentBytes, this.#frameBytesMax), this.#frameBytesMax, this.#shutdown.signal);
          else await writeFrame(channel.stream, bytes, this.#frameBytesMax, this.#shutdown.signal);
          channel.sent += 1;
        } catch (error) {
          channel.dropped += 1;
          channel.stream?.abort(error instanceof Error ? error : new Error(String(error)));
          channel.stream = null;
        }
      }
    } finally {
      channel.pumping = false;
    }
  }

  #pruneIdleChannels(): void {
    for (const [key, channel] of this.#channels) {
      if (channel.queue.length === 0 && !channel.pumping && (channel.stream === null || !this.isConnected(channel.peerId))) {
        channel.stream?.abort(new Error('channel pruned'));
        this.#channels.delete(key);
      }
    }
  }

  // ---- discovery: bootstrap, mDNS, peer exchange ----

  #bootstrapTick(): void {
    if (this.#state !== 'running') return;
    const now = Date.now();
    for (const target of this.#bootstrapTargets) {
      if (target.dialing || now < target.nextAttemptMs) continue;
      if (target.namesOurId) {
        if (this.#isOwnAddress(target.address)) continue;
      } else if (target.peerId !== null && this.isConnected(target.peerId)) {
        target.backoffMs = limits.p2pRedialMsMin;
        continue;
      }
      void this.#dialBootstrap(target);
    }
  }

  async #dialBootstrap(target: BootstrapTarget): Promise<void> {
    target.dialing = true;
    // An address naming our own id is dialed without it: if a process answers there and
    // proves it holds our key, the upgrader refuses it as "ourselves", and that is a twin.
    const address = target.namesOurId ? withoutPeerId(target.address) : target.address;
    try {
      const connection = await this.#running().dial(address, {
        signal: anySignal([this.#shutdown.signal, AbortSignal.timeout(limits.p2pDialTimeoutMs)]),
      });
      target.peerId ??= connection.remotePeer.toString();
      target.backoffMs = limits.p2pRedialMsMin;
      target.nextAttemptMs = 0;
    } catch (error) {
      if (this.#state !== 'running') return;
      if (isDialSelfError(error) && !this.#isOwnAddress(target.address)) {
        this.#reportConflict('dial', [target.address.toString()], `a process at ${target.address.toString()} holds our peer key`);
        // Keep probing, slowly: the twin may be shut down (and the operator wants to know when).
        target.nextAttemptMs = Date.now() + conflictReportEveryMs;
        return;
      }
      // The peer at the address finished the private-network handshake, so it holds the
      // cluster key, but proved another identity than the address names: the machine or its
      // data dir was replaced. It is a node of ours: follow the address to its new identity
      // (else nobody ever reconnects to it, and a replaced first machine, which lists no
      // peers itself, founds a cluster of its own that nobody hears).
      const newIdentity = presentedIdentity(error);
      if (newIdentity !== null && newIdentity !== target.peerId) {
        log.info('the node at a bootstrap address has a new identity (a replaced machine or data dir); connecting to it', { address: target.address.toString(), previous: target.peerId, now: newIdentity });
        if (newIdentity === this.#peerId) target.namesOurId = true;
        target.address = withoutPeerId(target.address).encapsulate(`/p2p/${newIdentity}`);
        target.peerId = newIdentity;
        target.backoffMs = limits.p2pRedialMsMin;
        target.nextAttemptMs = 0;
        return;
      }
      log.debug('bootstrap dial failed', { address: target.address.toString(), error });
      // Counted until a connection succeeds. A dial that timed out counts when the port
      // accepts TCP: the peer listens but our handshake hung (with another key it often does).
      const handshake = isHandshakeFailure(error) || (this.#state === 'running' && await tcpAccepts(target.address));
      if (handshake && this.#state === 'running') this.#noteHandshakeFailure(target.address.toString(), (target.handshakeFailures += 1));
      target.nextAttemptMs = Date.now() + target.backoffMs;
      target.backoffMs = Math.min(target.backoffMs * 2, limits.p2pRedialMsMax);
    } finally {
      target.dialing = false;
    }
  }

  #onMdnsPeer(peer: PeerInfo): void {
    if (this.#state !== 'running') return;
    const peerId = peer.id.toString();
    // Our own mDNS answers are filtered by the responder name, which is random per process:
    // an answer with our peer id comes from another live process holding our key.
    if (peerId === this.#peerId) {
      this.#reportConflict('mdns', peer.multiaddrs.map((address) => address.toString()), 'another process on the LAN answers mDNS with our peer id');
      return;
    }
    if (this.isConnected(peerId)) return;
    void this.#dialPeer(peer.id, peer.multiaddrs.map((address) => address.encapsulate(`/p2p/${peerId}`)), 'mdns');
  }

  #noteHandshakeFailure(address: string, failures: number): void {
    if (failures !== handshakeFailuresReported) return;
    if ((this.#node?.getConnections().length ?? 0) > 0) {
      // This node is in a mesh that works: the peer is the odd one out (another cluster on
      // the same LAN, or a node started with the wrong key, which raises the alert itself).
      log.info(`cannot finish a connection with ${address} (${failures} handshake failures in a row): it is most likely a node of another cluster (another cluster key)`);
      return;
    }
    const detail = `cannot finish a connection with ${address}: the peer resets it during the handshake (${failures} times in a row). ` +
      'Most often its cluster key differs from ours: copy cluster.key from a node of that cluster and start this node with --secret-file <path>.';
    log.warn(detail);
    this.#emit('handshake-failing', { address, failures, detail });
  }

  async #dialPeer(peer: PeerId, addresses: Multiaddr[], reason: string): Promise<void> {
    const peerId = peer.toString();
    if (this.#dialing.has(peerId) || this.#dialing.size >= limits.clusterNodesMax || addresses.length === 0) return;
    this.#dialing.add(peerId);
    try {
      await this.#running().dial(addresses, { signal: anySignal([this.#shutdown.signal, AbortSignal.timeout(limits.p2pDialTimeoutMs)]) });
    } catch (error) {
      if (this.#state === 'running') {
        log.debug('dial failed', { peer: peerId, reason, error });
        if (isHandshakeFailure(error)) {
          const failures = (this.#handshakeFailuresByPeer.get(peerId) ?? 0) + 1;
          if (this.#handshakeFailuresByPeer.size < limits.clusterNodesMax) this.#handshakeFailuresByPeer.set(peerId, failures);
          this.#noteHandshakeFailure(addresses[0]?.toString() ?? peerId, failures);
        }
      }
    } finally {
      this.#dialing.delete(peerId);
    }
  }

  /**
   * Answers a peer exchange with the peers we are connected to and their addresses. A peer
   * that dialled us is known by address only once identify has run; nodes bootstrapping to
   * one seed together ask it just then, so the answer waits a moment for those peers: else
   * each learned none of the others and the mesh hung on the seed alone until the periodic
   * exchange (a 5-node cluster whose seed died in that window never elected a leader).
   */
  async #answerPeerExchange(stream: Stream, remote: PeerId): Promise<void> {
    const node = this.#node;
    if (node === null) return;
    try {
      const deadline = Date.now() + peerExchangeIdentifyWaitMs;
      let known = await this.#exchangeablePeers(node, remote);
      while (known.unaddressed > 0 && Date.now() < deadline && this.#state === 'running') {
        if (!(await sleep(50, this.#shutdown.signal))) break;
        known = await this.#exchangeablePeers(node, remote);
      }
      await writeFrame(stream, new TextEncoder().encode(JSON.stringify({ peers: known.peers })), this.#frameBytesMax);
      await stream.close();
    } catch (error) {
      stream.abort(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** The peers we are connected to (but `remote`) with addresses, and how many have none yet. */
  async #exchangeablePeers(node: Libp2p<Services>, remote: PeerId): Promise<{ peers: Array<{ id: string; addresses: string[] }>; unaddressed: number }> {
    const peers: Array<{ id: string; addresses: string[] }> = [];
    let unaddressed = 0;
    for (const peer of node.getPeers()) {
      if (peer.equals(remote)) continue;
      if (peers.length >= limits.peerExchangePeersMax) break;
      const addresses = new Set<string>();
      try {
        for (const address of (await node.peerStore.get(peer)).addresses) {
          if (addresses.size >= limits.peerExchangeAddressesPerPeerMax) break;
          addresses.add(address.multiaddr.toString());
        }
      } catch {
        // Not in the peer store yet (identify still running): the connection address will do.
      }
      for (const connection of node.getConnections(peer)) {
        if (addresses.size >= limits.peerExchangeAddressesPerPeerMax) break;
        if (connection.direction === 'outbound') addresses.add(withoutPeerId(connection.remoteAddr).toString());
      }
      if (addresses.size > 0) peers.push({ id: peer.toString(), addresses: [...addresses] });
      else unaddressed += 1;
    }
    return { peers, unaddressed };
  }

  /** Asks a peer whom it knows (on connect, and periodically), and dials those we are not connected to. */
  async #exchangePeers(remote: PeerId): Promise<void> {
    if (this.#state !== 'running') return;
    try {
      let answer: Uint8Array | null = null;
      const remoteId = remote.toString();
      for await (const frame of this.request(remoteId, PEER_EXCHANGE_PROTOCOL, new Uint8Array([0]), { timeoutMs: limits.p2pDialTimeoutMs })) {
        answer = frame;
        break;
      }
      if (answer === null) return;
      for (const peer of parsePeerExchange(answer)) {
        if (peer.id === this.#peerId || this.isConnected(peer.id)) continue;
        void this.#dialPeer(peerIdFromString(peer.id), peer.addresses.map((address) => multiaddr(address).encapsulate(`/p2p/${peer.id}`)), 'peer exchange');
      }
    } catch (error) {
      if (this.#state === 'running') log.debug('peer exchange failed', { peer: remote.toString(), error });
    }
  }

  #isNewcomer(peerId: string): boolean {
    const connectedAtMs = this.#connectedAtMs.get(peerId);
    return connectedAtMs !== undefined && Date.now() - connectedAtMs < (this.#options.newcomerRelayMs ?? newcomerRelayMsDefault);
  }

  #reportConflict(source: IdentityConflict['source'], addresses: string[], detail: string): void {
    const key = `${source} ${addresses.join(',')}`;
    const now = Date.now();
    const last = this.#conflictReportedAtMs.get(key);
    if (last !== undefined && now - last < conflictReportEveryMs) return;
    if (this.#conflictReportedAtMs.size >= limits.identityConflictsMax) this.#conflictReportedAtMs.clear();
    this.#conflictReportedAtMs.set(key, now);
    this.#emit('identity-conflict', { peerId: this.#peerId, source, addresses, detail });
  }

  #isOwnAddress(address: Multiaddr): boolean {
    const port = tcpPortOf(address);
    const boundPorts = new Set(this.#node?.getMultiaddrs().map((own) => tcpPortOf(own)) ?? []);
    if (port === null || !boundPorts.has(port)) return false;
    const host = hostOf(address);
    if (host === null) return false;
    if (host === '0.0.0.0' || host === '::' || host.startsWith('127.') || host === '::1' || host === 'localhost') return true;
    for (const addresses of Object.values(networkInterfaces())) {
      for (const info of addresses ?? []) if (info.address === host) return true;
    }
    return false;
  }

  #requestTimeoutMs(): number {
    return this.#options.requestTimeoutMsDefault ?? limits.p2pRequestTimeoutMsDefault;
  }

  #running(): Libp2p<Services> {
    if (this.#state !== 'running' || this.#node === null) throw new HostStoppedError();
    return this.#node;
  }
}

function parsePeerExchange(bytes: Uint8Array): Array<{ id: string; addresses: string[] }> {
  const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
  const peers = (value as { peers?: unknown }).peers;
  if (!Array.isArray(peers)) throw new Error('peer exchange answer has no peers array');
  const result: Array<{ id: string; addresses: string[] }> = [];
  for (const entry of peers.slice(0, limits.peerExchangePeersMax)) {
    const { id, addresses } = entry as { id?: unknown; addresses?: unknown };
    if (typeof id !== 'string' || id.length > 128 || !Array.isArray(addresses)) continue;
    try {
      peerIdFromString(id);
    } catch {
      continue;
    }
    const valid = addresses.slice(0, limits.peerExchangeAddressesPerPeerMax)
      .filter((address): address is string => typeof address === 'string' && address.length <= limits.urlLengthMax)
      .filter((address) => {
        try {
          multiaddr(address);
          return true;
        } catch {
          return false;
        }
      });
    result.push({ id, addresses: valid });
  }
  return result;
}

function parsePeerId(peerId: string): PeerId {
  try {
    return peerIdFromString(peerId);
  } catch (error) {
    throw new PeerUnreachableError(peerId, `"${peerId}" is not a valid peer id`, { cause: error });
  }
}

function peerIdOf(address: Multiaddr): string | null {
  const component = address.getComponents().findLast((part) => part.name === 'p2p');
  return component?.value ?? null;
}

/**
 * The identity a dialed peer proved when it was not the one the address named (the noise
 * handshake's "Payload identity key X does not match expected remote identity key Y"), or null.
 */
export function presentedIdentity(error: unknown): string | null {
  const seen = new Set<unknown>();
  const visit = (value: unknown): string | null => {
    if (value === null || typeof value !== 'object' || seen.has(value) || seen.size > 32) return null;
    seen.add(value);
    const found = /identity key (12D3KooW[1-9A-HJ-NP-Za-km-z]+|Qm[1-9A-HJ-NP-Za-km-z]+) does not match expected remote identity key/.exec(String((value as Error).message ?? ''));
    if (found !== null) {
      try {
        return peerIdFromString(found[1]!).toString();
      } catch {
        return null;
      }
    }
    for (const inner of [(value as { cause?: unknown }).cause, ...(Array.isArray((value as { errors?: unknown }).errors) ? (value as { errors: unknown[] }).errors : [])]) {
      const result = visit(inner);
      if (result !== null) return result;
    }
    return null;
  };
  return visit(error);
}

function withoutPeerId(address: Multiaddr): Multiaddr {
  return multiaddr(address.toString().replace(/\/p2p\/[^/]+$/, ''));
}

function tcpPortOf(address: Multiaddr): number | null {
  const component = address.getComponents().find((part) => part.name === 'tcp');
  return component?.value === undefined ? null : Number(component.value);
}

/** Whether something accepts a TCP connection at the address (closed again at once). */
function tcpAccepts(address: Multiaddr, timeoutMs = 2_000): Promise<boolean> {
  const host = hostOf(address);
  const port = tcpPortOf(address);
  if (host === null || port === null) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (accepted: boolean) => {
      socket.destroy();
      resolve(accepted);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function hostOf(address: Multiaddr): string | null {
  const component = address.getComponents().find((part) => ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(part.name));
  return component?.value ?? null;
}

function ipPrefix(host: string): string {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return `/ip4/${host}`;
  if (host.includes(':')) return `/ip6/${host}`;
  return `/dns/${host}`;
}

function isDialSelfError(error: unknown): boolean {
  const seen = new Set<unknown>();
  const visit = (value: unknown): boolean => {
    if (value === null || typeof value !== 'object' || seen.has(value) || seen.size > 32) return false;
    seen.add(value);
    const candidate = value as { message?: unknown; cause?: unknown; errors?: unknown };
    if (typeof candidate.message === 'string' && /dial self/i.test(candidate.message)) return true;
    if (visit(candidate.cause)) return true;
    return Array.isArray(candidate.errors) && candidate.errors.some(visit);
  };
  return visit(error);
}

function anySignal(signals: Array<AbortSignal | undefined>): AbortSignal {
  return AbortSignal.any(signals.filter((signal): signal is AbortSignal => signal !== undefined));
}

/** Resolves true after ms, or false as soon as the signal aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
