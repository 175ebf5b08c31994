// The consensus plane of one daemon: bootstrap (form or join exactly one cluster), the
// Raft node over libp2p, forwarding of writes and reads to the leader, and automatic
// membership (learners for new nodes, voters kept at target) driven by discovery.
//
// Bootstrap rule. A node whose disk holds a cluster identity only ever serves that
// cluster. A fresh node waits a discovery window (bootstrapWindowMs) listening to
// heartbeats. If it sees a node of an existing cluster, it waits for that cluster's
// leader to add it (the first Raft message from that leader makes it adopt the cluster
// id). If it sees none, the fresh node with the smallest node id among the fresh nodes it
// sees founds a cluster of one and the others join it. Fresh nodes started together on
// one LAN therefore form exactly one cluster, provided they see each other within the
// window; two clusters that nonetheless share a key and a LAN are detected from
// heartbeats and reported in /api/status/cluster with the remedy.
import { randomUUID, randomInt } from 'node:crypto';
import { Raft } from '../../scheduler/consensus/raft.ts';
import type { ClusterConfig, ConfigChange, Message, RaftStatus } from '../../scheduler/consensus/types.ts';
import { nextConfigChange, quorumOf } from '../../scheduler/consensus/voter-policy.ts';
import { nodeLabel } from '../../scheduler/tasks/node-view.ts';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import * as limits from '../../protocol/limits.ts';
import { logger } from '../log.ts';
import type { P2PHost } from '../p2p/host.ts';
import type { Storage } from '../storage.ts';
import { RaftLogStore } from './log-store.ts';
import { decodeEnvelope, encodeEnvelope, type Envelope } from './envelope.ts';
import { NotLeaderError, RaftNode, type StateMachine } from './raft-node.ts';

const log = logger('cluster');

export const RAFT_PROTOCOL = '/hivemesh/raft/1.0.0';
export const PROPOSE_PROTOCOL = '/hivemesh/propose/1.0.0';
export const READ_INDEX_PROTOCOL = '/hivemesh/read-index/1.0.0';

/** A foreign cluster not heard from for this long is no longer reported. */
const foreignForgetMs = 15_000;
/** A foreign cluster must be seen this long before a trivial cluster yields to it. */
const foreignSettleMs = 2_000;
/** Most entries a cluster may have and still count as holding nothing yet. */
const trivialLogEntriesMax = 64;
/**
 * A follower must show a lost log (see checkLostLog) this long, the leader's match for it
 * unchanged, before the leader removes it: one odd answer is not enough to act on.
 */
const lostLogConfirmMs = 500;
/** How long a write waits for an election to name a reachable leader before 503 no_leader. */
const proposeLeaderWaitMs = 2_000;
/** A write retries a leader it could not reach this often while no other is named. */
const unreachableLeaderRetryMs = 200;

/** What the cluster plane needs from the libp2p host (daemon/p2p/host.ts). */
export type ClusterTransport = Pick<P2PHost, 'send' | 'handle' | 'handleMessages' | 'request'>;

/** What the cluster plane needs to know of the members discovered by gossip. */
export interface PeerView {
  nodeId: string;
  state: 'alive' | 'suspect' | 'dead' | 'left';
  clusterId: string | null;
  /** The node's cluster holds nothing of users' yet (from its heartbeat). */
  clusterEmpty: boolean;
  /** Wall-clock ms since the node was last heard from. */
  silentForMs: number;
  /** Its name, for the log; absent before its first heartbeat. */
  name?: string;
  /** How long its process has been up (from its heartbeat); absent before its first heartbeat. */
  upForMs?: number;
}

/**
 * A planned stop hands leadership to a voter up at least this long when one is live: the
 * links to a node restarted moments before may still be coming up, and a transfer whose
 * votes do not reach the target in time costs an election timeout (failover benchmark).
 */
export const handOverSettledMs = 3_000;

export interface ClusterOptions<Result> {
  nodeId: string;
  storage: Storage;
  transport: ClusterTransport;
  state: StateMachine<Result>;
  peers: () => PeerView[];
  tickMs: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  driftTicks?: number;
  votersTarget: number | null;
  voterReplaceAfterMs: number;
  bootstrapWindowMs?: number;
  snapshotEveryEntries?: number;
  /** Builds the command that records the cluster's id and birth in the replicated state. */
  initCommand: (clusterId: string) => string;
  /** True while the replicated state holds nothing of users' (no tasks, tokens or keys). */
  isTrivial?: () => boolean;
  /** Static peers are configured: a fresh node waits to hear one before founding. */
  waitForPeers?: boolean;
  onApplied?: RaftNodeOptionsApplied<Result>;
  onRoleChange?: () => void;
}

type RaftNodeOptionsApplied<Result> = NonNullable<ConstructorParameters<typeof RaftNode<Result>>[0]['onApplied']>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function decodeJson<T>(bytes: Uint8Array): T {
  return JSON.parse(decoder.decode(bytes)) as T;
}

export type ClusterPhase = 'discovering' | 'joining' | 'member';

export class Cluster<Result> {
  private readonly options: ClusterOptions<Result>;
  private readonly store: RaftLogStore;
  private node: RaftNode<Result> | null = null;
  private clusterIdValue: string | null = null;
  private phaseValue: ClusterPhase = 'discovering';
  private discoveryStartedAtMs = Date.now();
  private maintenanceTimer: NodeJS.Timeout | null = null;
  private adopting: Promise<void> | null = null;
  /**
   * maintain() runs one round at a time: founding and yielding await the disk, and a round
   * started meanwhile would see no node yet and found a second cluster on this node.
   */
  private maintaining = false;
  /** Starting, founding or yielding is under way: a leader's message must not start an adoption too. */
  private changingIdentity = false;
  private changeInFlight = false;
  /** Followers whose answers say they lost entries they acknowledged: since when, at which match and term. */
  private readonly lostLogEvidence = new Map<string, { sinceMs: number; match: number; term: number }>();
  /** Followers already reported as unremovable (the quorum would not survive), so the log says it once. */
  private readonly lostLogReported = new Set<string>();
  /** Writes waiting for an election to name a leader (propose). */
  private readonly leaderWaiters = new Set<{ named: () => boolean; wake: () => void }>();
  private stopped = false;
  /** The consensus core has stopped (after a planned stop's handover): no write can be taken or forwarded. */
  private halted = false;
  /** Other clusters seen on this LAN with our key: id -> when first seen, and each node's last sighting. */
  private readonly foreignClusters = new Map<string, { firstSeenMs: number; nodes: Map<string, number>; holdsData: boolean }>();

  constructor(options: ClusterOptions<Result>) {
    this.options = options;
    this.store = new RaftLogStore(options.storage);
  }

  get clusterId(): string | null {
    return this.clusterIdValue;
  }

  get phase(): ClusterPhase {
    return this.phaseValue;
  }

  get raft(): RaftNode<Result> | null {
    return this.node;
  }

  /** Other clusters with our key seen in the last foreignForgetMs. */
  foreign(): Array<{ clusterId: string; nodes: string[]; firstSeenMs: number; holdsData: boolean }> {
    const now = Date.now();
    const result: Array<{ clusterId: string; nodes: string[]; firstSeenMs: number; holdsData: boolean }> = [];
    for (const [clusterId, entry] of this.foreignClusters) {
      for (const [nodeId, seenMs] of entry.nodes) if (now - seenMs > foreignForgetMs) entry.nodes.delete(nodeId);
      if (entry.nodes.size === 0) this.foreignClusters.delete(clusterId);
      else result.push({ clusterId, nodes: [...entry.nodes.keys()], firstSeenMs: entry.firstSeenMs, holdsData: entry.holdsData });
    }
    return result;
  }

  async start(): Promise<void> {
    const { transport } = this.options;
    await transport.handleMessages(RAFT_PROTOCOL, (from, bytes) => this.onRaftBytes(from, bytes));
    await transport.handle(PROPOSE_PROTOCOL, async (_from, bytes, reply) => {
      const { data } = decodeJson<{ data: string }>(bytes);
      try {
        const result = await this.proposeLocal(data);
        await reply.send(encodeJson({ ok: true, result }));
      } catch (error) {
        await reply.send(encodeJson(errorToWire(error)));
      }
    });
    await transport.handle(READ_INDEX_PROTOCOL, async (_from, _bytes, reply) => {
      try {
        if (this.node === null) throw new NotLeaderError(null, 'not a member');
        const index = await this.node.readIndex();
        await reply.send(encodeJson({ ok: true, index }));
      } catch (error) {
        await reply.send(encodeJson(errorToWire(error)));
      }
    });

    // A member's leader may reach it while it reads its log back (a restart into a live
    // cluster): that must not look like a fresh node's invitation and start a second
    // consensus on the same state (found by the failover bench: entries applied twice).
    this.changingIdentity = true;
    try {
      const identity = await this.store.identity();
      if (identity !== null) {
        await this.store.rememberMembership(identity.clusterId); // disks from before membership.json
        await this.startRaft(identity.clusterId, identity.initialConfig);
      }
    } finally {
      this.changingIdentity = false;
    }
    this.maintenanceTimer = setInterval(() => void this.maintain(), 500);
    this.maintenanceTimer.unref();
  }

  async stop(options: { transferLeadership?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.maintenanceTimer !== null) clearInterval(this.maintenanceTimer);
    const node = this.node;
    if (node === null) return;
    try {
      if (options.transferLeadership === true) await this.handOverLeadership(node);
      await node.stop();
    } finally {
      // Writes still waiting for a leader cannot go anywhere from here: they fail at once.
      this.halted = true;
      for (const waiter of [...this.leaderWaiters]) waiter.wake();
    }
  }

  /** A planned stop of the leader hands leadership to the most up-to-date live voter first. */
  private async handOverLeadership(node: RaftNode<Result>): Promise<void> {
    const status = node.status();
    if (status.role !== 'leader') return;
    const alive = new Map(this.options.peers().filter((peer) => peer.state === 'alive').map((peer) => [peer.nodeId, peer]));
    const settled = (id: string): number => ((alive.get(id)?.upForMs ?? 0) >= handOverSettledMs ? 1 : 0);
    // Settled voters first, then the most up to date (the transfer catches its target up first).
    const candidates = Object.entries(status.progress ?? {})
      .filter(([id]) => id !== this.options.nodeId && status.config.voters.includes(id) && alive.has(id))
      .sort((a, b) => settled(b[0]) - settled(a[0]) || (b[1] as { match: number }).match - (a[1] as { match: number }).match);
    const target = candidates[0]?.[0];
    if (target === undefined) return;
    node.transferLeadership(target);
    const deadline = Date.now() + 1_000;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      // Stepping down is not enough: our vote for the target goes out with the next Ready,
      // and stopping before it loses the vote (in a 3-node cluster the target then has no
      // quorum, and everyone waits an election timeout). Stay until a new leader is named.
      const { role, leader } = node.brief();
      if (role !== 'leader' && leader !== null && leader !== this.options.nodeId) return;
    }
  }

  private async startRaft(clusterId: string, initialConfig: ClusterConfig, lostLog = false): Promise<void> {
    const { options } = this;
    // 8 ticks of 50 ms: election timeouts of 400-800 ms, so a dead leader is replaced in well
    // under a second; the lease (8 - 2 drift - 1 = 5 ticks, 250 ms) ends before any timeout.
    const electionTicks = options.electionTicks ?? 8;
    const restore = await this.store.load(initialConfig, lostLog);
    // One consensus per node: a second one would apply every entry to the same state again.
    if (this.node !== null) throw new Error('consensus is already running on this node');
    const raft = new Raft({
      id: options.nodeId,
      electionTicks,
      heartbeatTicks: options.heartbeatTicks ?? 1,
      driftTicks: options.driftTicks ?? 2,
      preVote: true,
      checkQuorum: true,
      maxEntriesPerAppend: limits.raftEntriesPerAppendMax,
      maxBytesPerAppend: limits.raftAppendBytesMax,
      maxInflightAppends: limits.raftInflightAppendsMax,
      randomInt: (n) => randomInt(n),
    }, restore);
    // The state machine starts from the snapshot; the core re-delivers later committed entries.
    if (restore.snapshot !== null) options.state.restore(restore.snapshot.data);
    this.node = new RaftNode<Result>({
      nodeId: options.nodeId,
      raft,
      store: this.store,
      state: options.state,
      tickMs: options.tickMs,
      send: (to, message) => {
        const bytes = encodeEnvelope({ clusterId, message });
        try {
          options.transport.send(to, RAFT_PROTOCOL, bytes);
        } catch (error) {
          // Over the message limit (a state larger than it, sent as a snapshot): that peer
          // cannot catch up this way; consensus with the others goes on.
          log.error('a raft message could not be sent', { to, type: message.type, bytes: bytes.byteLength, error: error as Error });
        }
      },
      ...(options.snapshotEveryEntries === undefined ? {} : { snapshotEveryEntries: options.snapshotEveryEntries }),
      ...(options.onApplied === undefined ? {} : { onApplied: options.onApplied }),
      onSoftState: () => {
        this.wakeLeaderWaiters();
        options.onRoleChange?.();
      },
    });
    this.clusterIdValue = clusterId;
    this.phaseValue = 'member';
    this.node.start(restore.snapshot?.index ?? 0);
    log.info('consensus started', { clusterId, voters: initialConfig.voters.length > 0 ? initialConfig.voters.join(',') : '(from log)' });
  }

  private onRaftBytes(from: string, bytes: Uint8Array): void {
    let envelope: Envelope;
    try {
      envelope = decodeEnvelope(bytes);
    } catch {
      log.debug('dropped a malformed raft message', { from });
      return;
    }
    if (envelope.message?.from !== from) {
      log.debug('dropped a raft message whose sender does not match the stream', { from });
      return;
    }
    if (this.clusterIdValue === null) {
      // A fresh node joins the first cluster whose leader reaches out to it.
      if (this.adopting === null && this.node === null && !this.changingIdentity && (envelope.message.type === 'append' || envelope.message.type === 'snapshot' || envelope.message.type === 'heartbeat')) {
        this.adopting = this.adopt(envelope.clusterId).finally(() => { this.adopting = null; });
      }
      return;
    }
    if (envelope.clusterId !== this.clusterIdValue) {
      this.noteForeign(envelope.clusterId, from);
      return;
    }
    this.node?.receive(envelope.message);
    if (envelope.message.type === 'append-response' && envelope.message.reject === true) this.checkLostLog(from, envelope.message);
  }

  /**
   * A follower whose log ends before entries it acknowledged has lost its Raft log (its
   * data dir's db was deleted, or restored from an old copy) while keeping its node id. The
   * core never sends a follower entries at or below the match it acknowledged, so such a
   * node would reject every append and never catch up while this leader lives (seen: a
   * member restarted with an empty db stayed at commit 0 for 40 s, and the tasks placed on
   * it waited 30 s each), and a voter that forgot its votes endangers the quorum. The
   * leader removes it from the configuration; the membership policy then adds it back as a
   * new learner, which catches up from the start (or a snapshot) and is promoted again.
   */
  private checkLostLog(from: string, message: Message): void {
    // hintTerm 0: the append went past the follower's last entry, which is hintIndex - 1.
    if ((message.hintTerm ?? 0) !== 0 || message.hintIndex === undefined) return;
    const node = this.node;
    if (node === null || node.storageFailure !== null) return;
    const status = node.status();
    if (status.role !== 'leader' || message.term !== status.term) return;
    const match = (status.progress?.[from] as { match?: number } | undefined)?.match ?? 0;
    const followerLast = message.hintIndex - 1;
    if (followerLast >= match) {
      this.lostLogEvidence.delete(from);
      return;
    }
    const now = Date.now();
    const seen = this.lostLogEvidence.get(from);
    if (seen === undefined || seen.match !== match || seen.term !== status.term) {
      if (this.lostLogEvidence.size >= limits.clusterNodesMax) this.lostLogEvidence.clear();
      this.lostLogEvidence.set(from, { sinceMs: now, match, term: status.term });
      return;
    }
    if (now - seen.sinceMs < lostLogConfirmMs || this.changeInFlight) return;
    void this.removeLostMember(node, from, match, followerLast, status.config);
  }

  private async removeLostMember(node: RaftNode<Result>, nodeId: string, match: number, followerLast: number, config: ClusterConfig): Promise<void> {
    const name = nodeLabel({ id: nodeId, name: this.options.peers().find((peer) => peer.nodeId === nodeId)?.name });
    const voters = config.voters.filter((id) => id !== nodeId);
    if (config.voters.includes(nodeId)) {
      // Never a removal after which the voters this leader reaches are short of a quorum.
      const alive = new Set(this.options.peers().filter((peer) => peer.state === 'alive').map((peer) => peer.nodeId));
      const reached = voters.filter((id) => id === this.options.nodeId || alive.has(id)).length;
      if (voters.length === 0 || reached < quorumOf(voters.length)) {
        if (!this.lostLogReported.has(nodeId)) {
          if (this.lostLogReported.size >= limits.clusterNodesMax) this.lostLogReported.clear();
          this.lostLogReported.add(nodeId);
          log.error('a voter lost the Raft log it had acknowledged, but removing it would leave too few live voters for a quorum; bring the other voters back', { node: name, acknowledged: match, itsLastEntry: followerLast });
        }
        return;
      }
    }
    this.changeInFlight = true;
    try {
      log.error('a member lost the Raft log it had acknowledged (its db was deleted or restored from an old copy); removing it so that it rejoins as a new learner and catches up', { node: name, acknowledged: match, itsLastEntry: followerLast });
      await node.proposeConfigChange({ type: 'remove', node: nodeId });
      this.lostLogEvidence.delete(nodeId);
      this.lostLogReported.delete(nodeId);
    } catch (error) {
      log.debug('removal of a member that lost its log not taken now', { error: error as Error });
    } finally {
      this.changeInFlight = false;
    }
  }

  private async adopt(clusterId: string): Promise<void> {
    if (this.stopped || this.node !== null) return;
    this.phaseValue = 'joining';
    const initialConfig: ClusterConfig = { voters: [], learners: [] };
    // Our node id was a member of this very cluster, yet the disk holds nothing of it: the
    // db was deleted or replaced. What it voted and acknowledged is forgotten, so it must not
    // vote until it has caught up (RaftRestore.lostLog).
    const lostLog = await this.store.formerCluster() === clusterId;
    await this.store.saveIdentity({ clusterId, initialConfig, joinedAt: new Date().toISOString() });
    if (lostLog) log.warn('this node was a member of this cluster and its log is gone (was its db deleted?): it rejoins, and votes only once it has caught up from the leader', { clusterId });
    else log.info('joining the cluster whose leader added this node', { clusterId });
    await this.startRaft(clusterId, initialConfig, lostLog);
  }

  private noteForeign(clusterId: string, nodeId: string, holdsData = false): void {
    let entry = this.foreignClusters.get(clusterId);
    if (entry !== undefined && holdsData) entry.holdsData = true;
    if (entry === undefined) {
      if (this.foreignClusters.size >= 16) return;
      entry = { firstSeenMs: Date.now(), nodes: new Map(), holdsData };
      this.foreignClusters.set(clusterId, entry);
      log.warn('another hivemesh cluster with the same cluster key is on this LAN', { ours: this.clusterIdValue, theirs: clusterId, node: nodeId });
    }
    if (entry.nodes.size < limits.clusterNodesMax || entry.nodes.has(nodeId)) entry.nodes.set(nodeId, Date.now());
  }

  /**
   * Heals the split that a simultaneous start can cause (nodes that did not hear each other
   * within the discovery window each found a cluster). Only a cluster that holds nothing
   * yet gives itself up: this node its only voter, no learners, a handful of log entries,
   * no snapshot, and no tasks, tokens or keys of users (the application says, via
   * isTrivial). It yields to a foreign cluster seen for a while that holds data or has
   * more members, or, between two empty ones, whose id orders first, so exactly one of
   * them yields. It then starts afresh and is added by the other cluster's leader.
   * Clusters with data never do this: they report the other cluster and wait for an
   * operator.
   */
  isEmpty(): boolean {
    const status = this.node?.status();
    if (status === undefined || this.options.isTrivial?.() !== true) return false;
    return status.config.voters.length === 1 && status.config.voters[0] === this.options.nodeId
      && status.config.learners.length === 0 && status.firstIndex <= 1 && status.lastIndex <= trivialLogEntriesMax;
  }

  private async maybeYield(): Promise<void> {
    const ours = this.clusterIdValue;
    if (ours === null || !this.isEmpty()) return;
    const now = Date.now();
    const target = this.foreign().find((other) => now - other.firstSeenMs >= foreignSettleMs
      && (other.holdsData || other.nodes.length > 1 || other.clusterId < ours));
    if (target === undefined) return;
    log.warn('this node founded a cluster alone that holds no work yet; joining the cluster seen on the LAN instead', { abandoned: ours, joining: target.clusterId });
    const node = this.node!;
    this.changingIdentity = true;
    try {
      this.node = null;
      this.clusterIdValue = null;
      this.phaseValue = 'discovering';
      this.discoveryStartedAtMs = now;
      await node.stop();
      await this.store.clear();
      this.options.state.reset();
      this.foreignClusters.clear();
    } finally {
      this.changingIdentity = false;
    }
    this.options.onRoleChange?.();
  }

  /** Periodic work: bootstrap while fresh, membership changes while leader. */
  private async maintain(): Promise<void> {
    if (this.stopped || this.maintaining) return;
    this.maintaining = true;
    try {
      await this.maintainOnce();
    } finally {
      this.maintaining = false;
    }
  }

  private async maintainOnce(): Promise<void> {
    const peers = this.options.peers().filter((peer) => peer.nodeId !== this.options.nodeId);
    for (const peer of peers) {
      if (peer.clusterId !== null && this.clusterIdValue !== null && peer.clusterId !== this.clusterIdValue && peer.state === 'alive') {
        this.noteForeign(peer.clusterId, peer.nodeId, !peer.clusterEmpty);
      } else if (peer.clusterId === this.clusterIdValue || peer.clusterId === null) {
        // A node that now carries our id (or none: it is joining) no longer speaks for another cluster.
        for (const entry of this.foreignClusters.values()) entry.nodes.delete(peer.nodeId);
      }
    }
    if (this.node === null) {
      if (this.adopting !== null) return;
      await this.maybeFound(peers);
      return;
    }
    const status = this.node.status();
    if (status.role === 'leader') await this.maybeChangeMembership(status, peers);
    await this.maybeYield();
  }

  private async maybeFound(peers: PeerView[]): Promise<void> {
    const windowMs = this.options.bootstrapWindowMs ?? 3_000;
    const waitedMs = Date.now() - this.discoveryStartedAtMs;
    if (waitedMs < windowMs) return;
    const alive = peers.filter((peer) => peer.state === 'alive');
    // With static peers configured, hear from one of them before founding (they may just be
    // slower to boot), unless none answers for a long while.
    if (this.options.waitForPeers === true && alive.length === 0 && waitedMs < windowMs * 10) return;
    if (alive.some((peer) => peer.clusterId !== null)) return; // an existing cluster will add us
    const fresh = [this.options.nodeId, ...alive.map((peer) => peer.nodeId)].sort();
    if (fresh[0] !== this.options.nodeId) return; // the smallest fresh node founds
    const clusterId = randomUUID();
    const initialConfig: ClusterConfig = { voters: [this.options.nodeId], learners: [] };
    this.changingIdentity = true;
    let node: RaftNode<Result>;
    try {
      await this.store.saveIdentity({ clusterId, initialConfig, joinedAt: new Date().toISOString() });
      log.info('founding a new cluster', { clusterId, freshNodesSeen: fresh.length });
      await this.startRaft(clusterId, initialConfig);
      node = this.node!;
    } finally {
      this.changingIdentity = false;
    }
    node.campaign();
    // Record the cluster's birth in the replicated state once we lead (on this very node:
    // a yield may replace this.node meanwhile).
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !this.stopped && this.node === node) {
      if (node.status().role === 'leader') {
        try {
          await node.propose(this.options.initCommand(clusterId));
        } catch (error) {
          log.warn('could not record the cluster birth yet', { error: error as Error });
        }
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  private async maybeChangeMembership(status: ReturnType<RaftNode<Result>['status']>, peers: PeerView[]): Promise<void> {
    if (this.changeInFlight) return;
    const known = peers
      .filter((peer) => peer.clusterId === null || peer.clusterId === this.clusterIdValue)
      .filter((peer) => peer.state !== 'left' || status.config.voters.includes(peer.nodeId) || status.config.learners.includes(peer.nodeId))
      .map((peer) => ({ id: peer.nodeId, alive: peer.state === 'alive', deadForMs: peer.state === 'alive' ? 0 : peer.silentForMs, match: (status.progress?.[peer.nodeId] as { match?: number } | undefined)?.match ?? 0 }));
    known.push({ id: this.options.nodeId, alive: true, deadForMs: 0, match: status.lastIndex });
    const change: ConfigChange | null = nextConfigChange({
      config: status.config,
      nodes: known,
      leader: this.options.nodeId,
      ...(this.options.votersTarget === null ? {} : { votersTarget: this.options.votersTarget }),
      replaceDeadAfterMs: this.options.voterReplaceAfterMs,
      lastIndex: status.lastIndex,
    });
    if (change === null) return;
    this.changeInFlight = true;
    try {
      log.info('membership change', { change: `${change.type} ${nodeLabel({ id: change.node, name: peers.find((peer) => peer.nodeId === change.node)?.name })}` });
      await this.node!.proposeConfigChange(change);
    } catch (error) {
      log.debug('membership change not taken now', { error: error as Error });
    } finally {
      this.changeInFlight = false;
    }
  }

  private async proposeLocal(data: string): Promise<Result | null> {
    if (this.node === null) throw new HivemeshError(ErrorCode.noLeader, 'this node has not joined a cluster yet', { retryAfterSeconds: 1 });
    return this.node.propose(data);
  }

  /**
   * Proposes a command through the leader, wherever it is; resolves once applied there.
   * While an election is under way (no leader, or one we cannot reach) the write waits for
   * its outcome, up to proposeLeaderWaitMs, and goes on the moment a leader is named: a
   * submit during a failover then succeeds instead of answering 503.
   */
  async propose(data: string, options: { signal?: AbortSignal } = {}): Promise<Result | null> {
    const deadline = Date.now() + proposeLeaderWaitMs;
    for (;;) {
      const node = this.node;
      if (node === null) throw new HivemeshError(ErrorCode.noLeader, 'this node has not joined a cluster yet; retry in a moment', { retryAfterSeconds: 1 });
      if (this.halted) throw new HivemeshError(ErrorCode.noLeader, 'this node is stopping; retry on another node', { retryAfterSeconds: 1 });
      try {
        return await node.propose(data);
      } catch (error) {
        if (!(error instanceof NotLeaderError)) throw error;
        const leader = error.leader ?? node.status().leader;
        if (leader !== null && leader !== this.options.nodeId) {
          const answer = await this.ask<{ ok: true; result: Result | null }>(leader, PROPOSE_PROTOCOL, { data }, options.signal);
          // Callers that read right after wait for their own node to apply the index (TaskService).
          if (answer !== null) return answer.result;
        }
        const waitMs = deadline - Date.now();
        if (waitMs <= 0) break;
        // No leader: until one is named. Ourselves handing over, or a leader that did not take
        // it (it died, or lost the leadership): until another is named, or shortly (it may
        // have been a passing failure).
        await this.leaderOtherThan(leader, leader === null ? waitMs : Math.min(waitMs, unreachableLeaderRetryMs));
      }
    }
    throw new HivemeshError(ErrorCode.noLeader, 'no leader is reachable to take the write; retry shortly', { retryAfterSeconds: 1 });
  }

  /** Resolves once this node knows a leader other than `than` (null: any leader), or after `timeoutMs`. */
  private leaderOtherThan(than: string | null, timeoutMs: number): Promise<void> {
    const named = (): boolean => {
      const leader = this.node?.brief().leader ?? null;
      return leader !== null && leader !== than;
    };
    // A stopping node waits too: it is handing over, and forwards the write once its successor
    // is named. Resolving at once here made the caller's loop retry in promises alone, which
    // starved the event loop: the handover could not hear its successor until it timed out.
    if (named() || this.halted) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = { named, wake: (): void => {
        clearTimeout(timer);
        this.leaderWaiters.delete(waiter);
        resolve();
      } };
      const timer = setTimeout(waiter.wake, timeoutMs);
      this.leaderWaiters.add(waiter);
    });
  }

  private wakeLeaderWaiters(): void {
    for (const waiter of [...this.leaderWaiters]) if (waiter.named()) waiter.wake();
  }

  /**
   * Linearizable read barrier on any node: learns the leader's commit index confirmed by a
   * quorum, then waits until this node has applied it.
   */
  async readBarrier(options: { signal?: AbortSignal } = {}): Promise<void> {
    const node = this.node;
    if (node === null) throw new HivemeshError(ErrorCode.noLeader, 'this node has not joined a cluster yet', { retryAfterSeconds: 1 });
    const status = node.status();
    if (status.role === 'leader') {
      await node.waitApplied(await node.readIndex());
      return;
    }
    if (status.leader === null) throw new HivemeshError(ErrorCode.noLeader, 'no leader is known; retry shortly', { retryAfterSeconds: 1 });
    const answer = await this.ask<{ ok: true; index: number }>(status.leader, READ_INDEX_PROTOCOL, {}, options.signal);
    if (answer === null) throw new HivemeshError(ErrorCode.noLeader, 'the leader did not answer; retry shortly', { retryAfterSeconds: 1 });
    await node.waitApplied(answer.index);
  }

  /** One request to another node; null when the peer is not (or no longer) the leader. */
  private async ask<T extends { ok: true }>(peer: string, protocol: string, body: unknown, signal?: AbortSignal): Promise<T | null> {
    let answer: T | WireError | undefined;
    try {
      for await (const bytes of this.options.transport.request(peer, protocol, encodeJson(body), { timeoutMs: 6_000, ...(signal === undefined ? {} : { signal }) })) {
        answer = decodeJson<T | WireError>(bytes);
        break;
      }
    } catch (error) {
      log.debug('forwarding to the leader failed', { peer, error: error as Error });
      return null;
    }
    if (answer === undefined) return null;
    if (answer.ok) return answer;
    if (answer.code === 'not_leader') return null;
    throw new HivemeshError(answer.code as ErrorCode, answer.message, answer.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: answer.retryAfterSeconds });
  }
}

/**
 * /health/ready answers 503 while this node has more committed entries to apply than this:
 * a node catching up, not one a few entries behind under load (a saturated follower lags
 * tens; a compaction pause at thousands of entries a second, a few hundred).
 */
export const readyLagEntriesMax = 5_000;

/**
 * Why this member should not count as ready although a leader is known, or null. Reads
 * answer from the node's own state, so one far behind the leader (a learner replaying a
 * long log, a member that lost its db) would serve a stale view.
 */
export function catchingUpReason(status: Pick<RaftStatus, 'votesHeld' | 'leaderCommit' | 'applied'>): string | null {
  if (status.votesHeld) return 'this node lost its log (was its db deleted?) and is catching up from the leader';
  const behind = status.leaderCommit - status.applied;
  if (behind > readyLagEntriesMax) return `catching up: ${behind} committed entries not applied here yet`;
  return null;
}

interface WireError {
  ok: false;
  code: string;
  message: string;
  retryAfterSeconds?: number;
}

function errorToWire(error: unknown): WireError {
  if (error instanceof NotLeaderError) return { ok: false, code: 'not_leader', message: error.message };
  if (error instanceof HivemeshError) {
    return { ok: false, code: error.code, message: error.message, ...(error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds }) };
  }
  return { ok: false, code: ErrorCode.internal, message: (error as Error).message };
}
