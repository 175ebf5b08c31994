// The consensus core's outward types: what goes into the core (messages, ticks,
// proposals, read requests) and what comes out (a Ready batch). The core does no I/O;
// the daemon and the simulator drive it identically:
//
//   loop:
//     core.tick() every tickMs of local monotonic time; core.step(msg) per message;
//     core.propose(data) / core.readIndex(ctx) for clients
//     if core.hasReady():
//        ready = core.ready()
//        1. persist ready.snapshot, ready.entries, ready.hardState in ONE synced batch
//        2. only then send ready.messages            (persist-before-send)
//        3. apply ready.committed in order, answer ready.readStates whose index <= applied
//        4. core.advance(ready)
//     (The daemon sends a leader's replication before step 1 and applies the committed
//     entries before ready.entries[0] before step 1 too: see sendableBeforePersist and
//     RaftNode.handle.)
//
// All times inside the core are ticks. Node ids are opaque strings (libp2p peer ids in
// the daemon, "n1".."n5" in tests).
//
// Changes to the lead's draft (kept small, the loop above is unchanged):
// - ProposeResult failures carry `message` (what was wrong, what to do) and a new reason
//   'invalid-config-change' (e.g. promoting a node that is not a learner).
// - Added ReadIndexResult, TransferResult, RaftStatus/ProgressStatus for readIndex(),
//   transferLeadership() and status().
// - Leader messages (append, heartbeat, snapshot) carry `context` "seq:sendTick", which
//   followers echo in their responses; the leader uses it for read-index confirmation and
//   for the lease. Rejected append responses carry the rejected `logIndex`.
// - Config entry data is the JSON ConfigChange plus `config`, the config it results in, so
//   a node joining with an empty initialConfig adopts the cluster's view from the log.
// - RaftRestore.applied (optional), RaftStatus.malformedMessagesDropped.

export type NodeId = string;

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader';

/** Persistent per-node state; must be durable before any message of the same Ready leaves. */
export interface HardState {
  term: number;
  /** Whom this node voted for in `term`, or null. */
  vote: NodeId | null;
  commit: number;
}

/** Voters decide; learners receive the full log but neither vote nor count for quorum. */
export interface ClusterConfig {
  voters: NodeId[];
  learners: NodeId[];
}

/**
 * One membership change at a time (Raft dissertation §4.1: single-server changes). A
 * change takes effect on every node as soon as the entry is in its log (not on commit),
 * and the leader proposes the next one only after the previous is committed and after an
 * entry of its own term is committed.
 */
export type ConfigChange =
  | { type: 'add-learner'; node: NodeId }
  | { type: 'promote'; node: NodeId }
  | { type: 'demote'; node: NodeId }
  | { type: 'remove'; node: NodeId };

export type EntryType = 'normal' | 'config' | 'noop';

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /**
   * Opaque application command (normal), '' (noop), or for config: the JSON ConfigChange
   * plus `config`, the resulting ClusterConfig (see encodeConfigEntry in raft.ts).
   */
  data: string;
}

export interface Snapshot {
  /** Index and term of the last entry the snapshot includes. */
  index: number;
  term: number;
  /** The cluster configuration as of `index`. */
  config: ClusterConfig;
  /** Opaque state-machine image produced by the application. */
  data: string;
}

export interface ReadState {
  /** Reads with this context may be served once the state machine has applied `index`. */
  index: number;
  context: string;
}

export type MessageType =
  | 'pre-vote' | 'pre-vote-response'
  | 'vote' | 'vote-response'
  | 'append' | 'append-response'
  | 'heartbeat' | 'heartbeat-response'
  | 'snapshot' | 'snapshot-response'
  | 'timeout-now';

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** vote/pre-vote: candidate's last log position. append: index/term of the entry before `entries`. */
  logIndex?: number;
  logTerm?: number;
  entries?: Entry[];
  /** Leader's commit index (append, heartbeat). */
  commit?: number;
  /** vote/pre-vote responses: granted? append responses: accepted? */
  reject?: boolean;
  /** append-response: highest index known to match (accepted) or a hint for fast back-off (rejected). */
  hintIndex?: number;
  hintTerm?: number;
  snapshot?: Snapshot;
  /** Leader messages: "seq:sendTick", echoed back by followers (read-index confirmation, lease). */
  context?: string;
  /** vote: campaign caused by leadership transfer; bypasses leader stickiness. */
  transfer?: boolean;
  /**
   * append without entries: a commit notice to a follower the leader knows caught up. Accepted,
   * it is not answered (the answer would tell the leader nothing new); refused, it is.
   */
  quiet?: boolean;
}

export interface SoftState {
  role: Role;
  leader: NodeId | null;
  /** True when this node is a learner in its current config. */
  learner: boolean;
}

/**
 * Everything the caller must do, in order: persist (snapshot, entries, hardState) in one
 * durable batch, THEN send messages, THEN apply committed entries, THEN advance().
 * Sending before the batch is durable can elect two leaders or lose committed entries; the
 * one exception is what sendableBeforePersist (raft.ts) returns, a leader's replication.
 * Committed entries before the batch's first entry were made durable by earlier Readies and
 * may be applied before the batch is written; entries of the batch itself may not.
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  /**
   * A snapshot from the leader to persist and install. It replaces the state machine and the
   * WHOLE stored log: delete every stored entry, including those after snapshot.index (the
   * core discarded them; a restart must not bring them back). Entries of the same Ready, if
   * any, follow the snapshot.
   */
  snapshot: Snapshot | null;
  /** Entries to append durably; any stored entries at or after entries[0].index are replaced. */
  entries: Entry[];
  messages: Message[];
  /** Entries to apply to the state machine, in order (all already durable on a quorum). */
  committed: Entry[];
  readStates: ReadState[];
}

export interface RaftOptions {
  id: NodeId;
  /** Election timeout is drawn uniformly from [electionTicks, 2*electionTicks). */
  electionTicks: number;
  heartbeatTicks: number;
  /**
   * The stated worst-case clock-rate disagreement between any two nodes, in ticks per
   * election timeout. Leases are electionTicks - driftTicks - 1 ticks long, so a lease ends
   * before any follower that acknowledged it can time out and grant a vote.
   */
  driftTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Upper bounds for one append message. */
  maxEntriesPerAppend: number;
  maxBytesPerAppend: number;
  /** Appends sent but not yet acknowledged per follower (pipelining window). */
  maxInflightAppends: number;
  /** Deterministic random source for election timeouts: returns an integer in [0, n). */
  randomInt: (n: number) => number;
}

/** State restored from disk at start. */
export interface RaftRestore {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
  /** Config when neither snapshot nor log carries one (first start of a bootstrapped cluster). */
  initialConfig: ClusterConfig;
  /**
   * Optional: the index up to which the application's state is already durable (between the
   * snapshot index and hardState.commit). Committed entries after it are handed out again;
   * without it, everything after the snapshot is.
   */
  applied?: number;
  /**
   * Optional: this node was a member of the cluster and has lost its log (its disk was
   * wiped or replaced while its node id stayed). Whatever it voted or acknowledged before is
   * forgotten, so it neither votes nor campaigns until it holds everything the leader had
   * committed when it first heard from it (see Raft.votesHeld).
   */
  lostLog?: boolean;
}

export type ProposeResult =
  | { ok: true; index: number; term: number }
  | {
    ok: false;
    reason: 'not-leader' | 'transferring' | 'too-large' | 'busy' | 'config-change-pending' | 'invalid-config-change';
    leader: NodeId | null;
    /** For people: what was wrong and what to do. */
    message: string;
  };

/** readIndex(): the answer itself arrives later as a ReadState with the same context. */
export type ReadIndexResult =
  | { ok: true }
  | { ok: false; reason: 'not-leader' | 'busy'; leader: NodeId | null; message: string };

export type TransferResult =
  | { ok: true }
  | { ok: false; reason: 'not-leader' | 'invalid-target'; leader: NodeId | null; message: string };

export interface ProgressStatus {
  match: number;
  next: number;
  state: 'probe' | 'replicate' | 'snapshot';
  /** Heard from since the leader's last CheckQuorum round. */
  recentActive: boolean;
  /** Appends sent and not yet acknowledged. */
  inflight: number;
}

/** A plain-object view of one core, for the API, the dashboard and tests. */
export interface RaftStatus {
  id: NodeId;
  role: Role;
  /** True when this node is a learner in its current config. */
  learner: boolean;
  term: number;
  vote: NodeId | null;
  leader: NodeId | null;
  commit: number;
  applied: number;
  /** First index still in the log (entries before it are in the snapshot). */
  firstIndex: number;
  lastIndex: number;
  /** The config the node acts on: the latest config entry in its log, committed or not. */
  config: ClusterConfig;
  /** Ticks of leader lease left (0 when none: not leader, or lease expired or revoked). */
  leaseRemainingTicks: number;
  /** Leadership transfer target while a transfer is under way. */
  transferee: NodeId | null;
  /** A node that lost its log neither votes nor campaigns until it has caught up (RaftRestore.lostLog). */
  votesHeld: boolean;
  /** The leader's commit index as last heard in an append (a follower's own commit may lag it). */
  leaderCommit: number;
  pendingReads: number;
  /** Messages step() dropped because messageProblem() found them malformed. */
  malformedMessagesDropped: number;
  /** Leader only: per follower and learner. */
  progress: Record<NodeId, ProgressStatus>;
}
