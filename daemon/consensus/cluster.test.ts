// The cluster plane's start-up on a node that already belongs to a cluster: a leader's
// message arriving while the node reads its log back must not make it adopt the cluster a
// second time (a kill -9'd node restarted into a live cluster, found by the failover bench).
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Storage } from '../storage.ts';
import { tempDir, waitUntil } from '../../tests/support/processes.ts';
import { Cluster, catchingUpReason, readyLagEntriesMax, type ClusterTransport, type PeerView } from './cluster.ts';
import { RaftLogStore } from './log-store.ts';
import type { StateMachine } from './raft-node.ts';
import type { Reply, RequestHandler, RequestHandlerContext } from '../p2p/host.ts';
import { holdBatches } from './test-helpers.ts';

const nodeId = 'n1';
const encoder = new TextEncoder();

/** Records what it applies; refuses an index that does not increase, as the real state does. */
class RecordingState implements StateMachine<null> {
  applied: number[] = [];
  apply(index: number): null {
    const last = this.applied[this.applied.length - 1] ?? 0;
    if (index <= last) throw new Error(`apply(${index}) after ${last}`);
    this.applied.push(index);
    return null;
  }
  skip(index: number): void {
    this.apply(index);
  }
  snapshot(): string {
    return JSON.stringify(this.applied);
  }
  restore(data: string): void {
    this.applied = JSON.parse(data) as number[];
  }
  reset(): void {
    this.applied = [];
  }
}

/** A transport with no peers that hands the registered raft handler to the test. */
function fakeTransport(): { transport: ClusterTransport; deliver: (from: string, value: unknown) => boolean } {
  let raftHandler: ((from: string, bytes: Uint8Array) => void) | null = null;
  const transport = {
    send: () => undefined,
    handle: async () => undefined,
    handleMessages: async (_protocol: string, handler: (from: string, bytes: Uint8Array) => void) => {
      raftHandler = handler;
    },
    request: async () => {
      throw new Error('no peers in this test');
    },
  } as unknown as ClusterTransport;
  return {
    transport,
    deliver: (from, value) => {
      if (raftHandler === null) return false;
      raftHandler(from, encoder.encode(JSON.stringify(value)));
      return true;
    },
  };
}

function cluster(storage: Storage, state: RecordingState, transport: ClusterTransport, tickMs = 10): Cluster<null> {
  return new Cluster<null>({
    nodeId, storage, transport, state, peers: () => [], tickMs,
    votersTarget: null, voterReplaceAfterMs: 60_000, bootstrapWindowMs: 0,
    initCommand: (clusterId) => JSON.stringify({ type: 'init', clusterId }),
  });
}

const dirs: string[] = [];
const open: Array<{ stop: () => Promise<void> }> = [];
afterEach(async () => {
  for (const item of open.splice(0)) await item.stop();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A node founds a cluster alone in a fresh data dir, commits `entries` writes and stops. */
async function foundAlone(name: string, entries: number): Promise<{ dir: string; clusterId: string; identity: Awaited<ReturnType<RaftLogStore['identity']>> }> {
  const dir = tempDir(name);
  dirs.push(dir);
  const storage = await Storage.open(dir);
  const founder = cluster(storage, new RecordingState(), fakeTransport().transport);
  await founder.start();
  const node = await waitUntil('the founder to lead', async () => {
    const raft = founder.raft;
    return raft !== null && raft.status().role === 'leader' ? raft : null;
  }, 10_000, 10);
  for (let entry = 0; entry < entries; entry += 1) await node.propose(JSON.stringify({ entry }));
  const clusterId = founder.clusterId!;
  await founder.stop();
  const identity = await new RaftLogStore(storage).identity();
  await storage.close();
  return { dir, clusterId, identity };
}

describe('Cluster start-up', () => {
  it('a leader heard while a member node reads its log back is not adopted as a new cluster', async () => {
    const { dir, clusterId, identity } = await foundAlone('cluster-start', 20);

    // It restarts, and a leader of the same cluster reaches it at every turn of the event
    // loop until its consensus runs (as a live cluster's heartbeats can).
    const storage = await Storage.open(dir);
    const state = new RecordingState();
    const { transport, deliver } = fakeTransport();
    const restarted = cluster(storage, state, transport);
    open.push({ stop: async () => { await restarted.stop(); await storage.close(); } });
    let delivered = 0;
    let starting = true;
    const heartbeats = (async () => {
      while (starting) {
        if (deliver('n2', { clusterId, message: { type: 'heartbeat', from: 'n2', to: nodeId, term: 99, commit: 0 } })) delivered += 1;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    await restarted.start();
    starting = false;
    await heartbeats;
    expect(delivered).toBeGreaterThan(0);

    // The node is the member it was: its identity is untouched and it applies its log once.
    expect(await new RaftLogStore(storage).identity()).toEqual(identity);
    expect(restarted.phase).toBe('member');
    await waitUntil('the log applied again', async () => (state.applied.length >= 21 ? true : null), 10_000, 10);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(restarted.raft!.storageFailure).toBeNull();
    expect(state.applied).toEqual([...new Set(state.applied)].sort((a, b) => a - b));
  });

  it('a write made while an election is under way waits for the leader instead of failing', async () => {
    const { dir } = await foundAlone('cluster-election-write', 0);

    // Restarted with 100 ms ticks, the lone voter needs 0.8-1.6 s to elect itself: longer
    // than a write used to wait (three tries over 0.6 s, then 503 no_leader).
    const storage = await Storage.open(dir);
    const restarted = cluster(storage, new RecordingState(), fakeTransport().transport, 100);
    open.push({ stop: async () => { await restarted.stop(); await storage.close(); } });
    await restarted.start();
    expect(restarted.raft!.status().leader).toBeNull();
    const started = Date.now();
    await restarted.propose(JSON.stringify({ during: 'election' }));
    expect(restarted.raft!.status().role).toBe('leader');
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
  });
});

/** Clusters in one process, wired by an in-memory network; each node sees the others alive. */
class MemoryNet {
  readonly handlers = new Map<string, (from: string, bytes: Uint8Array) => void>();
  readonly requestHandlers = new Map<string, RequestHandler>();
  readonly members = new Map<string, Cluster<null>>();

  transport(self: string): ClusterTransport {
    const requestHandlers = this.requestHandlers;
    return {
      send: (to: string, _protocol: string, bytes: Uint8Array) => {
        setImmediate(() => this.handlers.get(to)?.(self, bytes));
      },
      handle: async (protocol: string, handler: RequestHandler) => {
        this.requestHandlers.set(`${self} ${protocol}`, handler);
      },
      handleMessages: async (_protocol: string, handler: (from: string, bytes: Uint8Array) => void) => {
        this.handlers.set(self, handler);
      },
      // A request is answered by the peer's handler after a turn of the event loop, as over a socket.
      async *request(to: string, protocol: string, bytes: Uint8Array): AsyncGenerator<Uint8Array> {
        const handler = requestHandlers.get(`${to} ${protocol}`);
        if (handler === undefined) throw new Error(`${to} does not answer ${protocol}`);
        await new Promise((resolve) => setImmediate(resolve));
        const frames: Uint8Array[] = [];
        await handler(self, bytes, { send: async (frame: Uint8Array) => { frames.push(frame); } } as unknown as Reply, {} as RequestHandlerContext);
        yield* frames;
      },
    } as unknown as ClusterTransport;
  }

  /** How long each node's process has been up, as its heartbeat would say (default: long). */
  readonly upFor = new Map<string, number>();

  peers(self: string): PeerView[] {
    return [...this.members].filter(([id]) => id !== self).map(([id, member]) => ({
      nodeId: id, state: 'alive' as const, clusterId: member.clusterId, clusterEmpty: false, silentForMs: 0, upForMs: this.upFor.get(id) ?? 600_000,
    }));
  }

  async start(id: string, storage: Storage, state: RecordingState): Promise<Cluster<null>> {
    const member = new Cluster<null>({
      nodeId: id, storage, transport: this.transport(id), state, peers: () => this.peers(id), tickMs: 10,
      votersTarget: 3, voterReplaceAfterMs: 60_000, bootstrapWindowMs: 300,
      initCommand: (clusterId) => JSON.stringify({ type: 'init', clusterId }),
    });
    this.members.set(id, member);
    await member.start();
    return member;
  }
}

describe('catchingUpReason', () => {
  it('a member far behind the leader\'s commit, or holding its votes after losing its log, is not ready', () => {
    expect(catchingUpReason({ votesHeld: false, leaderCommit: 120, applied: 100 })).toBeNull();
    expect(catchingUpReason({ votesHeld: false, leaderCommit: readyLagEntriesMax + 101, applied: 100 })).toMatch(/catching up: 5001 committed entries/);
    expect(catchingUpReason({ votesHeld: true, leaderCommit: 0, applied: 0 })).toMatch(/lost its log/);
  });
});

/** Three members in memory, n1 leading all three voters, every log caught up. */
async function threeCaughtUp(name: string): Promise<{ net: MemoryNet; leader: Cluster<null>; storages: Map<string, Storage> }> {
  const net = new MemoryNet();
  const ids = ['n1', 'n2', 'n3'];
  const storages = new Map<string, Storage>();
  for (const id of ids) {
    const dir = tempDir(`${name}-${id}`);
    dirs.push(dir);
    const storage = await Storage.open(dir);
    storages.set(id, storage);
    await net.start(id, storage, new RecordingState());
  }
  open.push({ stop: async () => { for (const id of ids) await net.members.get(id)!.stop(); for (const storage of storages.values()) await storage.close(); } });
  const leader = net.members.get('n1')!;
  await waitUntil('three voters, all caught up', async () => {
    const status = leader.raft?.status();
    if (status?.role !== 'leader' || status.config.voters.length !== 3) return null;
    return ids.every((id) => net.members.get(id)!.raft!.status().lastIndex === status.lastIndex) ? true : null;
  }, 20_000, 20);
  return { net, leader, storages };
}

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => { open = resolve; });
  return { opened, open };
}

/** Proposals named A, B, ... on `leader`, and the names of those settled so far. */
function probes(leader: Awaited<ReturnType<typeof threeCaughtUp>>['leader']) {
  const settled = new Set<string>();
  const propose = (name: string) => leader.propose(JSON.stringify({ probe: `probe-${name}` })).then(() => { settled.add(name); });
  return { settled, propose };
}

/** Waits until both followers hold the entry at `index` (written or not). */
async function followersHave(net: Awaited<ReturnType<typeof threeCaughtUp>>['net'], index: number, name: string): Promise<void> {
  await waitUntil(`the followers to receive ${name}`, async () => (['n2', 'n3'].every((id) => net.members.get(id)!.raft!.status().lastIndex >= index) ? true : null), 5_000, 5);
}

describe('Cluster commit path', () => {
  it('applies a commit learned while one batch was being written before the next batch is written', async () => {
    const { net, leader, storages } = await threeCaughtUp('cluster-early-apply');
    // The followers hold their write of A; the leader holds its writes of B, then of C.
    const followersA = gate();
    const leaderB = gate();
    const leaderC = gate();
    for (const id of ['n2', 'n3']) holdBatches(storages.get(id)!, 'probe-A', () => followersA.opened);
    holdBatches(storages.get('n1')!, 'probe-B', () => leaderB.opened);
    holdBatches(storages.get('n1')!, 'probe-C', () => leaderC.opened);
    const { settled, propose } = probes(leader);
    const a = propose('A');
    const aIndex = leader.raft!.status().lastIndex;
    await followersHave(net, aIndex, 'A');
    // The leader is now writing B when the followers' acknowledgements of A (and B) arrive.
    const b = propose('B');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const c = propose('C');
    followersA.open();
    const bIndex = aIndex + 1;
    await waitUntil('A and B committed', async () => ((leader.raft!.status().commit >= bIndex) ? true : null), 5_000, 5);
    leaderB.open();
    // The leader's next batch holds C, whose write is held. A and B are on the leader's disk
    // and committed: they are applied, and their writers answered, without waiting for C.
    await Promise.race([Promise.all([a, b]), new Promise((resolve) => setTimeout(resolve, 2_000))]);
    expect([...settled].sort()).toEqual(['A', 'B']);
    leaderC.open();
    await c;
    expect(settled.has('C')).toBe(true);
  }, 30_000);
});

describe('Cluster commit path while writing', () => {
  it('applies a commit learned during a write of later entries while that write is still under way', async () => {
    const { net, leader, storages } = await threeCaughtUp('cluster-mid-write-apply');
    // The followers hold their write of A; the leader writes A, then holds its write of B.
    const followersA = gate();
    const leaderB = gate();
    for (const id of ['n2', 'n3']) holdBatches(storages.get(id)!, 'probe-A', () => followersA.opened);
    holdBatches(storages.get('n1')!, 'probe-B', () => leaderB.opened);
    const { settled, propose } = probes(leader);
    const a = propose('A');
    const aIndex = leader.raft!.status().lastIndex;
    await followersHave(net, aIndex, 'A');
    const b = propose('B');
    const bIndex = aIndex + 1;
    // B went to the followers before the leader's own (held) write of it finished.
    await followersHave(net, bIndex, 'B');
    // Now the followers write A and acknowledge it: the leader commits A while writing B,
    // and A, already on its disk, is applied and its writer answered without waiting.
    followersA.open();
    await Promise.race([a, new Promise((resolve) => setTimeout(resolve, 2_000))]);
    expect([...settled]).toEqual(['A']);
    expect(leader.raft!.status().applied).toBe(aIndex);
    leaderB.open();
    await b;
    expect(settled.has('B')).toBe(true);
  }, 30_000);
});

describe('Cluster planned stop', () => {
  it.each([['n2', 'n3'], ['n3', 'n2']])('hands leadership to a voter that has been up a while, not to %s just restarted', async (restarted, settled) => {
    const { net, leader } = await threeCaughtUp('cluster-handover');
    net.upFor.set(restarted, 200);
    await leader.stop({ transferLeadership: true });
    await waitUntil('a new leader', async () => (net.members.get(settled)!.raft!.status().role === 'leader' || net.members.get(restarted)!.raft!.status().role === 'leader' ? true : null), 10_000, 10);
    expect(net.members.get(settled)!.raft!.status().role).toBe('leader');
  }, 40_000);

  it('a write proposed on the leader while it hands over goes to its successor, and the handover is not held up by it', async () => {
    // Found by the planned-stop benchmark: the stopping leader refused the write ("leadership
    // is moving") and retried it in a loop of promises that never let the event loop turn, so
    // it heard nothing (not the successor's vote request, not its appends) until the transfer
    // timed out an election timeout later; then it took the write itself, in the old term.
    const { net, leader } = await threeCaughtUp('cluster-handover-write');
    const term = leader.raft!.status().term;

    const stopping = leader.stop({ transferLeadership: true });
    const write = leader.propose(JSON.stringify({ during: 'handover' }));
    await stopping;
    // Before the fix: 'no leader is reachable to take the write', after the event loop had
    // been held for the whole 2 s that a write waits for a leader.
    await write;
    const successor = ['n2', 'n3'].map((id) => net.members.get(id)!).find((member) => member.raft!.status().role === 'leader');
    expect(successor).toBeDefined();
    // One transfer, no election after a timeout.
    expect(successor!.raft!.status().term).toBe(term + 1);
  }, 40_000);
});

describe('Cluster membership', () => {
  it('a member restarted with its Raft log gone (db deleted, same node id) is removed, added back as a learner, and catches up', async () => {
    const net = new MemoryNet();
    const ids = ['n1', 'n2', 'n3'];
    const storages = new Map<string, Storage>();
    const states = new Map<string, RecordingState>();
    for (const id of ids) {
      const dir = tempDir(`cluster-lost-${id}`);
      dirs.push(dir);
      storages.set(id, await Storage.open(dir));
      states.set(id, new RecordingState());
    }
    for (const id of ids) await net.start(id, storages.get(id)!, states.get(id)!);
    open.push({ stop: async () => { for (const id of ids) { await net.members.get(id)!.stop(); await storages.get(id)!.close(); } } });
    const leader = net.members.get('n1')!;
    await waitUntil('three voters', async () => (leader.raft?.status().role === 'leader' && leader.raft.status().config.voters.length === 3 ? true : null), 20_000, 20);
    for (let entry = 0; entry < 30; entry += 1) await leader.raft!.propose(JSON.stringify({ entry }));
    await waitUntil('n3 to apply the writes', async () => (net.members.get('n3')!.raft!.applied >= leader.raft!.applied ? true : null), 10_000, 20);

    // n3 stops, its db is deleted, and it starts again with the same node id and an empty disk.
    const victim = net.members.get('n3')!;
    await victim.stop();
    const storage = storages.get('n3')!;
    await storage.db.clear();
    const state = new RecordingState();
    states.set('n3', state);
    const restarted = await net.start('n3', storage, state);
    // membership.json outlived the db: the node knows it lost its log and holds its votes.
    await waitUntil('n3 to rejoin', async () => (restarted.raft !== null ? true : null), 10_000, 10);
    expect(restarted.raft!.status().votesHeld).toBe(true);
    expect(catchingUpReason(restarted.raft!.status())).toMatch(/lost its log/);
    // Writes go on (the cluster is in use), as do the leader's appends to n3.
    let stopWrites = false;
    const writes = (async () => {
      for (let entry = 30; entry < 200 && !stopWrites; entry += 1) {
        await leader.raft!.propose(JSON.stringify({ entry }));
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    try {
      await waitUntil('the restarted member to catch up with the leader', async () => {
        const raft = restarted.raft;
        return raft !== null && raft.applied > 31 && raft.applied >= leader.raft!.applied - 5 ? true : null;
      }, 15_000, 50);
    } finally {
      stopWrites = true;
      await writes;
    }
    // It is a voter again, with the whole log applied once, in order.
    await waitUntil('three voters again', async () => (leader.raft!.status().config.voters.includes('n3') ? true : null), 10_000, 50);
    expect(state.applied).toEqual([...new Set(state.applied)].sort((a, b) => a - b));
    expect(restarted.raft!.storageFailure).toBeNull();
    expect(restarted.raft!.status().votesHeld).toBe(false);
    expect(catchingUpReason(restarted.raft!.status())).toBeNull();
  }, 60_000);
});
