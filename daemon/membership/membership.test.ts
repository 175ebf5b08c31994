// Membership against a fake host: validation of received heartbeats (signer, schema,
// replays), joins and departures, restarts versus twins, the failure detector timer, and
// the node list keeping the nodes the consensus configuration names (on a fake clock).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HEARTBEAT_TOPIC, heartbeatCodec, type Heartbeat } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { setLogLevel } from '../log.ts';
import type { GossipHandler, P2PHostEvents, RelayPolicy } from '../p2p/host.ts';
import { waitFor } from '../p2p/test-helpers.ts';
import { Membership, type MembershipEvent, type MembershipHost } from './membership.ts';
import { sampleBody } from './test-fixtures.ts';

setLogLevel('error');

class FakeHost implements MembershipHost {
  readonly peerId: string;
  readonly published: Heartbeat[] = [];
  handler: GossipHandler | null = null;
  readonly listeners = new Map<string, (detail: never) => void>();
  constructor(peerId: string) {
    this.peerId = peerId;
  }
  async publish(topic: string, bytes: Uint8Array): Promise<number> {
    expect(topic).toBe(HEARTBEAT_TOPIC);
    this.published.push(heartbeatCodec.decode(bytes));
    return 0;
  }
  subscribe(_topic: string, handler: GossipHandler, _options?: { relay?: RelayPolicy }): () => void {
    this.handler = handler;
    return () => { this.handler = null; };
  }
  on<K extends keyof P2PHostEvents>(type: K, listener: (detail: P2PHostEvents[K]) => void): () => void {
    this.listeners.set(type, listener as (detail: never) => void);
    return () => this.listeners.delete(type);
  }
  deliver(from: string, heartbeat: Heartbeat | Uint8Array): void {
    this.handler!(from, heartbeat instanceof Uint8Array ? heartbeat : heartbeatCodec.encode(heartbeat));
  }
}

function heartbeatOf(nodeId: string, instanceId: string, sequence: number, leaving = false): Heartbeat {
  return { ...sampleBody(nodeId.slice(0, 8)), kind: 'heartbeat', protocolVersion: PROTOCOL_VERSION, nodeId, instanceId, sequence, sentAt: Date.now(), leaving };
}

const running: Membership[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((membership) => membership.stop()));
});

async function startMembership(host: FakeHost, timing = { heartbeatIntervalMs: 100, suspectAfterMs: 250, deadAfterMs: 450 }): Promise<{ membership: Membership; events: MembershipEvent[] }> {
  const membership = new Membership({ host, self: () => sampleBody('self'), ...timing, dataDir: '/var/lib/hivemesh' });
  const events: MembershipEvent[] = [];
  membership.onChange((event) => events.push(event));
  running.push(membership);
  await membership.start();
  return { membership, events };
}

describe('Membership (fake host)', () => {
  it('publishes a heartbeat at start, then on its interval, with increasing sequence and its own identity', async () => {
    const host = new FakeHost('self-id');
    const { membership } = await startMembership(host);
    expect(host.published).toHaveLength(1);
    await waitFor('three heartbeats', () => host.published.length >= 3, 2_000);
    const [first, second] = host.published;
    expect(first!.nodeId).toBe('self-id');
    expect(first!.instanceId).toBe(membership.instanceId);
    expect(second!.sequence).toBe(first!.sequence + 1);
    expect(first!.leaving).toBe(false);
    expect(membership.members()[0]).toMatchObject({ nodeId: 'self-id', self: true, state: 'alive' });
  });

  it('publishes soon when a peer subscribes to the heartbeat topic', async () => {
    const host = new FakeHost('self-id');
    await startMembership(host, { heartbeatIntervalMs: 10_000, suspectAfterMs: 25_000, deadAfterMs: 45_000 });
    const before = host.published.length;
    (host.listeners.get('peer:subscribed') as (detail: P2PHostEvents['peer:subscribed']) => void)({ peerId: 'x', topic: HEARTBEAT_TOPIC });
    await waitFor('an extra heartbeat', () => host.published.length === before + 1, 1_000);
  });

  it('accepts a valid heartbeat, and drops invalid ones, forged signers and replays', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 5));
    expect(events.map((event) => event.type)).toEqual(['joined']);
    expect(membership.member('peer-a')).toMatchObject({ state: 'alive', self: false, heartbeat: { sequence: 5 } });

    host.deliver('peer-b', new TextEncoder().encode('{"kind":"heartbeat"}'));
    host.deliver('peer-b', new TextEncoder().encode('not json'));
    host.deliver('peer-b', heartbeatOf('peer-a', 'i1', 6)); // signed by b, claims to be a
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 5)); // replay
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 4)); // reordered
    expect(membership.members().map((member) => member.nodeId)).toEqual(['self-id', 'peer-a']);
    expect(membership.member('peer-a')!.heartbeat!.sequence).toBe(5);
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 6));
    expect(membership.member('peer-a')!.heartbeat!.sequence).toBe(6);
    expect(events.map((event) => event.type)).toEqual(['joined']);
  });

  it('moves a silent peer to suspect, then dead, and back to alive when it speaks again', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 1));
    await waitFor('suspect', () => membership.member('peer-a')?.state === 'suspect', 1_000);
    await waitFor('dead', () => membership.member('peer-a')?.state === 'dead', 1_000);
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 2));
    expect(membership.member('peer-a')?.state).toBe('alive');
    expect(events.map((event) => event.type)).toEqual(['joined', 'suspect', 'dead', 'alive']);
  });

  it('reports how far a member\'s wall clock is from ours', async () => {
    const host = new FakeHost('self-id');
    const { membership } = await startMembership(host);
    host.deliver('peer-a', { ...heartbeatOf('peer-a', 'i1', 1), sentAt: Date.now() - 60_000 });
    expect(membership.member('peer-a')!.clockOffsetMs).toBeGreaterThanOrEqual(60_000);
    expect(membership.member('peer-a')!.clockOffsetMs).toBeLessThan(61_000);
  });

  it('marks a peer left at once on its departure heartbeat', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 1));
    host.deliver('peer-a', heartbeatOf('peer-a', 'i1', 2, true));
    expect(membership.member('peer-a')?.state).toBe('left');
    expect(events.at(-1)).toEqual({ type: 'left', nodeId: 'peer-a', previous: 'alive' });
  });

  it('announces its own departure with a final leaving heartbeat', async () => {
    const host = new FakeHost('self-id');
    const { membership } = await startMembership(host);
    await membership.stop();
    expect(host.published.at(-1)!.leaving).toBe(true);
    // Twice, a moment apart, with rising sequence numbers: a peer that connected just now
    // may miss the first; then nothing more.
    const goodbyes = host.published.filter((heartbeat) => heartbeat.leaving);
    expect(goodbyes).toHaveLength(2);
    expect(goodbyes[1]!.sequence).toBeGreaterThan(goodbyes[0]!.sequence);
    const count = host.published.length;
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(host.published.length).toBe(count);
  });

  it('treats a restart (new instance, old one silent) as the same node, not a conflict', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    host.deliver('peer-a', heartbeatOf('peer-a', 'old', 10));
    host.deliver('peer-a', heartbeatOf('peer-a', 'new', 1));
    // One straggler from the old instance, in flight during the restart.
    host.deliver('peer-a', heartbeatOf('peer-a', 'old', 11));
    for (let sequence = 2; sequence < 6; sequence++) {
      await new Promise((resolve) => setTimeout(resolve, 60));
      host.deliver('peer-a', heartbeatOf('peer-a', 'new', sequence));
    }
    expect(membership.conflicts()).toEqual([]);
    expect(membership.member('peer-a')!.heartbeat!.instanceId).toBe('new');
    expect(events.some((event) => event.type === 'identity-conflict')).toBe(false);
  });

  it('reports two live instances of one node id as an identity conflict', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    for (let sequence = 1; sequence <= 6; sequence++) {
      host.deliver('peer-a', heartbeatOf('peer-a', 'first', sequence));
      host.deliver('peer-a', heartbeatOf('peer-a', 'second', sequence));
      await new Promise((resolve) => setTimeout(resolve, 60));
    }
    const conflicts = membership.conflicts();
    expect(conflicts).toHaveLength(1);
    expect(conflicts[0]).toMatchObject({ nodeId: 'peer-a', source: 'heartbeat' });
    expect(conflicts[0]!.instanceIds.sort()).toEqual(['first', 'second']);
    expect(conflicts[0]!.message).toMatch(/delete \/var\/lib\/hivemesh\/peer\.key/);
    expect(events.filter((event) => event.type === 'identity-conflict')).toHaveLength(1);
  });

  it('reports a heartbeat signed with our own id from another instance at once', async () => {
    const host = new FakeHost('self-id');
    const { membership } = await startMembership(host);
    host.deliver('self-id', heartbeatOf('self-id', 'twin', 1));
    expect(membership.conflicts()).toMatchObject([{ nodeId: 'self-id', source: 'heartbeat' }]);
    expect(membership.members()).toHaveLength(1);
  });

  it('takes our own previous process\'s heartbeats, replayed by gossip after a quick restart, for no conflict', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    for (const leaving of [false, true]) host.deliver('self-id', { ...heartbeatOf('self-id', 'predecessor', 40, leaving), sentAt: Date.now() - 1_500 });
    expect(membership.conflicts()).toEqual([]);
    expect(events.some((event) => event.type === 'identity-conflict')).toBe(false);
  });

  it('turns host-level conflicts (mDNS, dial) into membership conflicts', async () => {
    const host = new FakeHost('self-id');
    const { membership, events } = await startMembership(host);
    (host.listeners.get('identity-conflict') as (detail: P2PHostEvents['identity-conflict']) => void)({
      peerId: 'self-id', source: 'mdns', addresses: ['/ip4/10.77.0.3/tcp/7421'], detail: 'another process on the LAN answers mDNS with our peer id',
    });
    expect(membership.conflicts()).toMatchObject([{ nodeId: 'self-id', source: 'mdns', addresses: ['/ip4/10.77.0.3/tcp/7421'] }]);
    expect(events.at(-1)!.type).toBe('identity-conflict');
  });

  it('refuses thresholds that would make every peer flap', () => {
    expect(() => new Membership({ host: new FakeHost('x'), self: () => sampleBody('x'), heartbeatIntervalMs: 1_000, suspectAfterMs: 900, deadAfterMs: 2_000 })).toThrow(/suspectAfterMs/);
  });
});

describe('Membership and the consensus configuration (fake clock, default timings)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  async function startOnFakeClock(consensusMembers: () => readonly string[]): Promise<{ host: FakeHost; membership: Membership; events: MembershipEvent[] }> {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'Date', 'performance'] });
    const host = new FakeHost('self-id');
    const membership = new Membership({ host, self: () => sampleBody('self'), consensusMembers });
    const events: MembershipEvent[] = [];
    membership.onChange((event) => events.push(event));
    await membership.start();
    return { host, membership, events };
  }

  async function stopOnFakeClock(membership: Membership): Promise<void> {
    const stopping = membership.stop();
    await vi.advanceTimersByTimeAsync(2_000);
    await stopping;
  }

  const ids = (views: Array<{ nodeId: string }>) => views.map((view) => view.nodeId);

  it('keeps a dead voter listed with its last facts past the forget period, forgets a non-member, and forgets the voter once it leaves the configuration', async () => {
    const configured = ['peer-voter'];
    const { host, membership, events } = await startOnFakeClock(() => configured);
    host.deliver('peer-voter', heartbeatOf('peer-voter', 'i1', 1));
    host.deliver('peer-other', heartbeatOf('peer-other', 'i2', 1));
    const lastHeardMs = Date.now();

    vi.advanceTimersByTime(limits.forgetDeadAfterMsDefault + 60_000);
    expect(events.filter((event) => event.type === 'forgotten')).toEqual([{ type: 'forgotten', nodeId: 'peer-other' }]);
    expect(ids(membership.listed())).toEqual(['self-id', 'peer-voter']);
    const voter = membership.listed()[1]!;
    expect(voter).toMatchObject({ state: 'dead', lastSeenMs: lastHeardMs, heartbeat: { name: 'peer-vot', apiUrl: 'http://127.0.0.1:7420' } });
    expect(voter.heartbeat!.hardware.gpus[0]!.model).toBe('NVIDIA GeForce RTX 4090');
    // Consensus and scheduling still see it as forgotten, as before (the voter policy relies on it).
    expect(ids(membership.members())).toEqual(['self-id']);

    // Still there an hour later.
    vi.advanceTimersByTime(3_600_000);
    expect(ids(membership.listed())).toEqual(['self-id', 'peer-voter']);

    // Removed from the configuration: forgotten at the next evaluation.
    configured.length = 0;
    vi.advanceTimersByTime(200);
    expect(ids(membership.listed())).toEqual(['self-id']);
    expect(events.filter((event) => event.type === 'forgotten').map((event) => event.nodeId)).toEqual(['peer-other', 'peer-voter']);
    await stopOnFakeClock(membership);
  });

  it('takes a kept voter that speaks again back as alive', async () => {
    const { host, membership, events } = await startOnFakeClock(() => ['peer-voter']);
    host.deliver('peer-voter', heartbeatOf('peer-voter', 'i1', 1));
    vi.advanceTimersByTime(limits.forgetDeadAfterMsDefault + 1_000);
    host.deliver('peer-voter', heartbeatOf('peer-voter', 'i2', 1));
    expect(membership.member('peer-voter')).toMatchObject({ state: 'alive', heartbeat: { instanceId: 'i2' } });
    expect(events.map((event) => event.type)).toEqual(['joined', 'suspect', 'dead', 'alive']);
    await stopOnFakeClock(membership);
  });

  it('lists a configured node it never heard (suspect, then dead) and a configured node that left (dead), however long ago', async () => {
    const { host, membership } = await startOnFakeClock(() => ['peer-unheard', 'peer-stopped']);
    const startedMs = Date.now();
    host.deliver('peer-stopped', heartbeatOf('peer-stopped', 'i1', 1));
    host.deliver('peer-stopped', heartbeatOf('peer-stopped', 'i1', 2, true));
    expect(membership.member('peer-stopped')?.state).toBe('left');
    expect(membership.listed().slice(1)).toMatchObject([
      { nodeId: 'peer-stopped', state: 'dead', heartbeat: { name: 'peer-sto' } },
      { nodeId: 'peer-unheard', state: 'suspect', heartbeat: null, lastSeenMs: startedMs },
    ]);
    vi.advanceTimersByTime(limits.forgetDeadAfterMsDefault + 60_000);
    expect(membership.listed().slice(1)).toMatchObject([
      { nodeId: 'peer-stopped', state: 'dead', heartbeat: { name: 'peer-sto' } },
      { nodeId: 'peer-unheard', state: 'dead', heartbeat: null, lastSeenMs: startedMs },
    ]);
    expect(ids(membership.members())).toEqual(['self-id']);
    await stopOnFakeClock(membership);
  });
});
