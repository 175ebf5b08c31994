// P2PHost on loopback: pnet admission, gossip, streamed requests with their errors,
// ordered one-way messages, bootstrap redial, and peer exchange.
import { afterEach, describe, expect, it } from 'vitest';
import { setLogLevel } from '../log.ts';
import { FrameTooLargeError, PeerUnreachableError, RequestFailedError, RequestTimeoutError, isHandshakeFailure, type P2PHost } from './host.ts';
import { loopbackAddress, newClusterKey, startLoopbackHost, waitFor } from './test-helpers.ts';

setLogLevel('error');

const hosts: P2PHost[] = [];
async function track(host: Promise<P2PHost>): Promise<P2PHost> {
  const started = await host;
  hosts.push(started);
  return started;
}

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((host) => host.stop()));
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();

describe('isHandshakeFailure', () => {
  const named = (name: string, message: string, code?: string) => Object.assign(new Error(message), { name }, code === undefined ? {} : { code });

  it('finds a reset handshake inside the error of a dial to several addresses (as mDNS announces them)', () => {
    // What libp2p threw in a LAN audit: the LAN address reset by a node with another key, and
    // the announced 127.0.0.1 reaching this node itself.
    const dial = new AggregateError([
      named('EncryptionFailedError', 'read ECONNRESET', 'ECONNRESET'),
      named('EncryptionFailedError', 'Payload identity key 12D3KooWA does not match expected remote identity key 12D3KooWB'),
    ], 'All multiaddr dials failed');
    expect(isHandshakeFailure(dial)).toBe(true);
    expect(isHandshakeFailure(named('Error', 'dial failed', undefined))).toBe(false);
    expect(isHandshakeFailure(Object.assign(new Error('wrapped'), { cause: named('EncryptionFailedError', 'read ECONNRESET') }))).toBe(true);
  });

  it('does not blame the key for a peer that is down or unreachable', () => {
    expect(isHandshakeFailure(new AggregateError([named('Error', 'connect ECONNREFUSED 10.0.0.2:7421', 'ECONNREFUSED'), named('TimeoutError', 'The operation timed out')], 'All multiaddr dials failed'))).toBe(false);
    expect(isHandshakeFailure(named('Error', 'connect EHOSTUNREACH', 'EHOSTUNREACH'))).toBe(false);
    expect(isHandshakeFailure(null)).toBe(false);
  });
});

describe('P2PHost', () => {
  it('connects to a bootstrap peer and exchanges gossip signed by the sender', async () => {
    const key = newClusterKey();
    const a = await track(startLoopbackHost(key));
    const b = await track(startLoopbackHost(key, { bootstrap: [loopbackAddress(a)] }));
    const received: Array<{ from: string; text: string }> = [];
    a.subscribe('t', (from, bytes) => received.push({ from, text: decoder.decode(bytes) }));
    b.subscribe('t', () => {});
    await waitFor('b to see a subscribed', () => b.topicPeers('t').includes(a.peerId));
    await b.publish('t', encoder.encode('hello'));
    await waitFor('a to receive the message', () => received.length === 1);
    expect(received[0]).toEqual({ from: b.peerId, text: 'hello' });
  }, 15_000);

  it('never completes a connection with a host that has another cluster key', async () => {
    const a = await track(startLoopbackHost(newClusterKey()));
    const stranger = await track(startLoopbackHost(newClusterKey(), { bootstrap: [loopbackAddress(a)] }));
    let connected = 0;
    a.on('peer:connected', () => connected++);
    stranger.on('peer:connected', () => connected++);
    // The bootstrap loop keeps redialing meanwhile.
    await expect(stranger.connect(loopbackAddress(a))).rejects.toThrow();
    expect(connected).toBe(0);
    expect(a.connectedPeers()).toEqual([]);
    expect(stranger.connectedPeers()).toEqual([]);
  }, 15_000);

  it('says, once, that a bootstrap peer keeps resetting the handshake (another cluster key)', async () => {
    const a = await track(startLoopbackHost(newClusterKey()));
    const stranger = await track(startLoopbackHost(newClusterKey(), { bootstrap: [loopbackAddress(a)] }));
    const failing: Array<{ address: string; detail: string }> = [];
    stranger.on('handshake-failing', (event) => failing.push(event));
    // Meanwhile a node whose bootstrap peer is simply down must not blame the key.
    const gone = await startLoopbackHost(newClusterKey());
    const goneAddress = loopbackAddress(gone);
    await gone.stop();
    const lonely = await track(startLoopbackHost(newClusterKey(), { bootstrap: [goneAddress] }));
    const blamed: unknown[] = [];
    lonely.on('handshake-failing', (event) => blamed.push(event));
    await waitFor('the handshake failures to be reported', () => failing.length > 0, 25_000);
    expect(blamed).toEqual([]);
    expect(failing).toHaveLength(1);
    expect(failing[0]!.address).toBe(loopbackAddress(a));
    expect(failing[0]!.detail).toMatch(/cluster key differs.*--secret-file/);
    expect(stranger.connectedPeers()).toEqual([]);
  }, 30_000);

  it('streams several responses to one request, then ends', async () => {
    const key = newClusterKey();
    const a = await track(startLoopbackHost(key));
    const b = await track(startLoopbackHost(key));
    await a.handle('/test/count/1', async (from, request, reply) => {
      const count = Number(decoder.decode(request));
      for (let index = 0; index < count; index++) await reply.send(encoder.encode(`${from.slice(-4)}:${index}`));
      await reply.end();
    });
    await b.connect(loopbackAddress(a));
    const responses: string[] = [];
    for await (const frame of b.request(a.peerId, '/test/count/1', encoder.encode('5'), { timeoutMs: 5_000 })) responses.push(decoder.decode(frame));
    const tag = b.peerId.slice(-4);
    expect(responses).toEqual([0, 1, 2, 3, 4].map((index) => `${tag}:${index}`));
  }, 15_000);

  it('names its request errors: unreachable, timeout, remote failure, frame too large', async () => {
    const key = newClusterKey();
    const a = await track(startLoopbackHost(key, { frameBytesMax: 1024 }));
    const b = await track(startLoopbackHost(key, { frameBytesMax: 1024, messageBytesMax: 1536 }));
    await a.handle('/test/slow/1', async (_from, _request, reply, { signal }) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      await reply.end();
    });
    await a.handle('/test/fail/1', async (_from, _request, reply) => {
      await reply.send(encoder.encode('partial'));
      throw new Error('handler broke');
    });
    await a.handle('/test/big/1', async (_from, _request, reply) => {
      // Bypass the sender-side bound the way a misbehaving peer would: a smaller bound at b.
      await reply.send(new Uint8Array(1000));
    });
    await b.connect(loopbackAddress(a));
    const drain = async (iterable: AsyncIterable<Uint8Array>): Promise<number> => {
      let count = 0;
      for await (const _frame of iterable) count++;
      return count;
    };
    const stopped = await startLoopbackHost(key);
    const goneId = stopped.peerId;
    await stopped.stop();
    await expect(drain(b.request(goneId, '/test/slow/1', encoder.encode('x'), { timeoutMs: 2_000 }))).rejects.toBeInstanceOf(PeerUnreachableError);
    await expect(drain(b.request(a.peerId, '/test/unknown/1', encoder.encode('x')))).rejects.toBeInstanceOf(PeerUnreachableError);
    await expect(drain(b.request(a.peerId, '/test/slow/1', encoder.encode('x'), { timeoutMs: 300 }))).rejects.toBeInstanceOf(RequestTimeoutError);
    await expect(drain(b.request(a.peerId, '/test/fail/1', encoder.encode('x')))).rejects.toBeInstanceOf(RequestFailedError);
    await expect(drain(b.request(a.peerId, '/test/slow/1', new Uint8Array(2048)))).rejects.toBeInstanceOf(FrameTooLargeError);
    expect(() => b.send(a.peerId, '/test/msg/1', new Uint8Array(2048))).toThrow(FrameTooLargeError);
    const c = await track(startLoopbackHost(key, { frameBytesMax: 100 }));
    await c.connect(loopbackAddress(a));
    await expect(drain(c.request(a.peerId, '/test/big/1', encoder.encode('x')))).rejects.toBeInstanceOf(FrameTooLargeError);
  }, 15_000);

  it('delivers one-way messages in order, and again after the receiver restarts', async () => {
    const key = newClusterKey();
    const { generateKeyPair } = await import('@libp2p/crypto/keys');
    const privateKey = await generateKeyPair('Ed25519');
    let a = await startLoopbackHost(key, { privateKey });
    const address = loopbackAddress(a);
    const b = await track(startLoopbackHost(key, { bootstrap: [address] }));
    const received: number[] = [];
    const receive = (from: string, bytes: Uint8Array): void => {
      expect(from).toBe(b.peerId);
      received.push(Number(decoder.decode(bytes)));
    };
    await a.handleMessages('/test/raft/1', receive);
    await waitFor('connection', () => b.isConnected(a.peerId));
    for (let index = 0; index < 500; index++) b.send(a.peerId, '/test/raft/1', encoder.encode(String(index)));
    await waitFor('500 messages', () => received.length === 500);
    expect(received).toEqual([...Array(500).keys()]);
    expect(b.sendStats()).toEqual([{ peerId: a.peerId, protocol: '/test/raft/1', queued: 0, sent: 500, dropped: 0 }]);

    await a.stop();
    await waitFor('disconnect', () => !b.isConnected(a.peerId));
    a = await track(startLoopbackHost(key, { privateKey, port: Number(address.split('/')[4]) }));
    await a.handleMessages('/test/raft/1', receive);
    received.length = 0;
    // Raft keeps sending while the peer is away; what is sent once the stream is back arrives in order.
    await waitFor('reconnection', () => b.isConnected(a.peerId), 8_000);
    for (let index = 0; index < 100; index++) b.send(a.peerId, '/test/raft/1', encoder.encode(String(index)));
    await waitFor('100 messages after the restart', () => received.length === 100);
    expect(received).toEqual([...Array(100).keys()]);
  }, 15_000);

  it('delivers one-way messages at once to a peer that comes back, not after the backoff its absence built up', async () => {
    // A leader sends heartbeats to a follower that is down (kill -9), so its channel's
    // redial backoff doubles; the follower restarts and connects. Its messages must flow as
    // soon as the connection is up: a restarted member heard no leader for up to 5 s.
    const key = newClusterKey();
    const { generateKeyPair } = await import('@libp2p/crypto/keys');
    const privateKey = await generateKeyPair('Ed25519');
    let a = await startLoopbackHost(key, { privateKey });
    const address = loopbackAddress(a);
    const b = await track(startLoopbackHost(key));
    await b.connect(address);
    await a.stop();
    await waitFor('disconnect', () => !b.isConnected(a.peerId));
    // About 4 s of heartbeats into the void: dials fail at 0, 0.25, 0.75, 1.75 and 3.75 s,
    // and the channel then waits 4 s before its next dial.
    const heartbeats = setInterval(() => b.send(a.peerId, '/test/raft/1', encoder.encode('beat')), 50);
    try {
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      const received: string[] = [];
      a = await track(startLoopbackHost(key, { privateKey, port: Number(address.split('/')[4]), bootstrap: [loopbackAddress(b)] }));
      await a.handleMessages('/test/raft/1', (_from, bytes) => { received.push(decoder.decode(bytes)); });
      await waitFor('the restarted peer to connect', () => b.isConnected(a.peerId), 8_000);
      const elapsed = await waitFor('a message after the reconnection', () => received.length > 0, 8_000);
      expect(elapsed).toBeLessThan(2_000);
    } finally {
      clearInterval(heartbeats);
    }
  }, 30_000);

  it('delivers one-way messages of any size up to the message limit, large ones in pieces, in order with the small', async () => {
    const key = newClusterKey();
    /** Sends messages filled with their number (after a JSON-like first byte) and checks they arrive intact, in order. */
    const roundTrip = async (a: P2PHost, b: P2PHost, sizes: number[]) => {
      const received: Uint8Array[] = [];
      await a.handleMessages('/test/raft/1', (_from, bytes) => { received.push(bytes); });
      await b.connect(loopbackAddress(a));
      for (const [index, size] of sizes.entries()) {
        const bytes = new Uint8Array(size).fill(index + 1);
        bytes[0] = 0x7b;
        b.send(a.peerId, '/test/raft/1', bytes);
      }
      await waitFor('every message', () => received.length === sizes.length, 10_000);
      expect(received.map((bytes) => bytes.byteLength)).toEqual(sizes);
      for (const [index, bytes] of received.entries()) {
        expect(bytes.every((value, position) => value === (position === 0 ? 0x7b : index + 1)), `message ${index} intact`).toBe(true);
      }
      expect(b.sendStats()[0]).toMatchObject({ sent: sizes.length, dropped: 0 });
    };
    // Whole frames over 4 MiB (libp2p's length-prefix encoder refused them by default, and
    // its stream buffer cut them off), with the default 16 MiB frame.
    await roundTrip(await track(startLoopbackHost(key)), await track(startLoopbackHost(key)), [10, 4 * 1024 * 1024 + 5_000, 20, 6 * 1024 * 1024, 30]);
    // Messages over a frame go in pieces: shown with 64 KiB frames.
    const frame = 64 * 1024;
    // (Pieces of messages queued at once count against one message limit in all.)
    const small = { frameBytesMax: frame, messageBytesMax: 1024 * 1024 };
    const a = await track(startLoopbackHost(key, small));
    const b = await track(startLoopbackHost(key, small));
    await roundTrip(a, b, [10, frame, 20, frame + 1, 5 * frame + 7, 30, 512 * 1024, 40]);
    expect(() => b.send(a.peerId, '/test/raft/1', new Uint8Array(1024 * 1024 + 1))).toThrow(FrameTooLargeError);
  }, 30_000);

  it('drops the oldest queued messages when the per-peer queue is full', async () => {
    const key = newClusterKey();
    const a = await track(startLoopbackHost(key));
    const b = await track(startLoopbackHost(key, { sendQueueMessagesMax: 10 }));
    const received: number[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => { release = resolve; });
    await a.handleMessages('/test/raft/1', async (_from, bytes) => {
      await gate;
      received.push(Number(decoder.decode(bytes)));
    });
    await b.connect(loopbackAddress(a));
    // Synchronous burst: nothing leaves before the queue overflows.
    for (let index = 0; index < 100; index++) b.send(a.peerId, '/test/raft/1', encoder.encode(String(index)));
    release();
    await waitFor('the queue to drain', () => b.sendStats()[0]?.queued === 0 && received.length === b.sendStats()[0]?.sent);
    const stats = b.sendStats()[0]!;
    expect(stats.dropped).toBe(90);
    expect(received).toEqual([...Array(10).keys()].map((index) => 90 + index));
  }, 15_000);

  it('drops (and counts) messages for a peer it cannot reach, without retrying in a loop', async () => {
    const key = newClusterKey();
    const b = await track(startLoopbackHost(key));
    const gone = await startLoopbackHost(key);
    const goneId = gone.peerId;
    await gone.stop();
    for (let index = 0; index < 20; index++) b.send(goneId, '/test/raft/1', encoder.encode(String(index)));
    await waitFor('the messages to be dropped', () => b.sendStats()[0]?.dropped === 20, 5_000);
    expect(b.sendStats()[0]).toMatchObject({ queued: 0, sent: 0 });
    // During the backoff new messages wait in the bounded queue instead of dialing again.
    b.send(goneId, '/test/raft/1', encoder.encode('late'));
    expect(b.sendStats()[0]!.queued).toBe(1);
    await waitFor('the late message to be dropped after the next failed dial', () => b.sendStats()[0]?.dropped === 21, 5_000);
  }, 15_000);

  it('redials a bootstrap peer that restarts on the same address and key', async () => {
    const key = newClusterKey();
    const { generateKeyPair } = await import('@libp2p/crypto/keys');
    const privateKey = await generateKeyPair('Ed25519');
    let a = await startLoopbackHost(key, { privateKey });
    const address = loopbackAddress(a);
    const port = Number(address.split('/')[4]);
    const b = await track(startLoopbackHost(key, { bootstrap: [address] }));
    await waitFor('first connection', () => b.isConnected(a.peerId));
    await a.stop();
    await waitFor('disconnect', () => !b.isConnected(a.peerId));
    a = await track(startLoopbackHost(key, { privateKey, port }));
    const elapsed = await waitFor('reconnection', () => b.isConnected(a.peerId), 8_000);
    expect(elapsed).toBeLessThan(8_000);
  }, 20_000);

  it('reconnects to a bootstrap address whose node came back with a new identity (a replaced machine or data dir)', async () => {
    // Every other node lists the first machine as /ip4/…/p2p/<its id>. Replaced (a fresh data
    // dir, so a new peer key) it holds the same cluster key on the same address: the others
    // must reach it, or it founds a cluster of its own that nobody ever hears.
    const key = newClusterKey();
    let a = await startLoopbackHost(key);
    const address = loopbackAddress(a);
    const b = await track(startLoopbackHost(key, { bootstrap: [address] }));
    await waitFor('first connection', () => b.isConnected(a.peerId));
    const oldId = a.peerId;
    await a.stop();
    await waitFor('disconnect', () => !b.isConnected(oldId));
    a = await track(startLoopbackHost(key, { port: Number(address.split('/')[4]) }));
    expect(a.peerId).not.toBe(oldId);
    await waitFor('a connection to the new identity at the bootstrap address', () => b.isConnected(a.peerId), 12_000);
  }, 30_000);

  it('connects peers that only share one bootstrap peer (peer exchange)', async () => {
    const key = newClusterKey();
    const seed = await track(startLoopbackHost(key));
    const b = await track(startLoopbackHost(key, { bootstrap: [loopbackAddress(seed)] }));
    await waitFor('b connected to seed', () => b.isConnected(seed.peerId));
    const c = await track(startLoopbackHost(key, { bootstrap: [loopbackAddress(seed)] }));
    await waitFor('c connected to b directly', () => c.isConnected(b.peerId) && b.isConnected(c.peerId), 5_000);
  }, 15_000);

  it('meshes nodes that bootstrap to one seed at the same moment, well before the periodic exchange', async () => {
    // They all ask the seed for its peers while it is still identifying the others: the
    // answer waits for those, else each learned nobody and the mesh hung on the seed.
    const key = newClusterKey();
    const seed = await track(startLoopbackHost(key));
    const spokes = await Promise.all(Array.from({ length: 4 }, () => track(startLoopbackHost(key, { bootstrap: [loopbackAddress(seed)] }))));
    const meshed = () => spokes.every((spoke) => spokes.every((other) => other === spoke || spoke.isConnected(other.peerId)));
    // The periodic exchange runs every 10 s: a full mesh well before then came from the first one.
    await waitFor('every spoke connected to every other', meshed, 6_000);
  }, 15_000);

  it('reports a twin found at a bootstrap address that names our own id', async () => {
    const key = newClusterKey();
    const { generateKeyPair } = await import('@libp2p/crypto/keys');
    const privateKey = await generateKeyPair('Ed25519');
    const twin = await track(startLoopbackHost(key, { privateKey }));
    const twinAddress = loopbackAddress(twin);
    // The same key, bootstrapping to the twin: as after copying a data dir and its peer list.
    const conflicts: string[] = [];
    const original = await startLoopbackHost(key, { privateKey, bootstrap: [twinAddress] });
    hosts.push(original);
    original.on('identity-conflict', (conflict) => conflicts.push(`${conflict.source} ${conflict.peerId}`));
    await waitFor('conflict', () => conflicts.length > 0, 5_000);
    expect(conflicts[0]).toBe(`dial ${privateKey.publicKey.toString()}`);
  }, 15_000);

  it('announces the configured host with the port it actually bound', async () => {
    const host = await track(startLoopbackHost(newClusterKey(), { announceHosts: ['10.1.2.3', 'gpu-01.lan'] }));
    const addresses = host.multiaddrs();
    expect(addresses).toHaveLength(2);
    expect(addresses[0]).toMatch(new RegExp(`^/ip4/10\\.1\\.2\\.3/tcp/[1-9][0-9]*/p2p/${host.peerId}$`));
    expect(addresses[1]).toMatch(new RegExp(`^/dns/gpu-01\\.lan/tcp/[1-9][0-9]*/p2p/${host.peerId}$`));
  });

  // Timing-bound by design (a newcomer window): retried when a loaded machine misses it.
  it('relays gossip per topic policy: always, never, or only a newcomer\'s own messages for a while', { retry: 1, timeout: 20_000 }, async () => {
    const key = newClusterKey();
    // A line a - b - c without peer exchange, so c hears a only through b.
    const b = await track(startLoopbackHost(key, { peerExchange: false, newcomerRelayMs: 3_000 }));
    const a = await track(startLoopbackHost(key, { peerExchange: false, bootstrap: [loopbackAddress(b)] }));
    const c = await track(startLoopbackHost(key, { peerExchange: false, bootstrap: [loopbackAddress(b)] }));
    const heard: Record<string, string[]> = { always: [], never: [], newcomers: [] };
    for (const policy of ['always', 'never', 'newcomers'] as const) {
      a.subscribe(policy, () => {});
      b.subscribe(policy, () => {}, { relay: policy });
      c.subscribe(policy, (_from, bytes) => heard[policy]!.push(decoder.decode(bytes)));
    }
    await waitFor('subscriptions to reach b', () => ['always', 'never', 'newcomers'].every((topic) => b.topicPeers(topic).length === 2 && a.topicPeers(topic).length === 1));
    expect(a.isConnected(c.peerId)).toBe(false);
    // b forwards to the peers of its topic mesh, which forms at its next gossip heartbeat:
    // publish until the first message goes through (each publish is a new message).
    const publishUntil = async (text: string, done: () => boolean) => {
      for (let round = 0; !done(); round += 1) {
        if (round > 40) throw new Error(`no "${text}" message reached c through b`);
        for (const topic of ['always', 'never', 'newcomers']) await a.publish(topic, encoder.encode(text));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await publishUntil('early', () => heard.always!.length > 0 && heard.newcomers!.length > 0);
    // After the newcomer window, b relays only the 'always' topic.
    await new Promise((resolve) => setTimeout(resolve, 3_100));
    await publishUntil('late', () => heard.always!.includes('late'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const unique = (texts: string[]) => [...new Set(texts)];
    expect({ always: unique(heard.always!), never: heard.never, newcomers: unique(heard.newcomers!) }).toEqual({ always: ['early', 'late'], never: [], newcomers: ['early'] });
  });
});
