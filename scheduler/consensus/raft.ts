// The Raft consensus core: a pure state machine in the manner of etcd-io/raft. Time
// enters as tick(), messages as step(), client work as propose()/readIndex(); what must
// be persisted, sent and applied leaves as one Ready batch (see types.ts for the loop).
// Implements PreVote, CheckQuorum with leader stickiness, a leader lease, pipelined and
// batched replication with fast conflict back-off, single-server membership changes with
// learners, snapshots and leadership transfer.
import { raftPendingProposalsMax, raftPendingReadsMax } from '../../protocol/limits.ts';
import { quorumOf } from './voter-policy.ts';
import type {
  ClusterConfig, ConfigChange, Entry, HardState, Message, NodeId, ProgressStatus, ProposeResult, RaftOptions,
  RaftRestore, RaftStatus, ReadIndexResult, ReadState, Ready, Role, Snapshot, SoftState, TransferResult,
} from './types.ts';

/** Committed entries handed out in one Ready (count, and data size); the rest follow in the next one. */
export const committedEntriesPerReadyMax = 4096;
export const committedBytesPerReadyMax = 16 * 1024 * 1024;
/**
 * Uncommitted data a leader accepts before refusing proposals as 'busy' (with the entry
 * count bound raftPendingProposalsMax), so a leader cut off from its followers does not
 * grow its log without bound.
 */
export const uncommittedBytesMax = 64 * 1024 * 1024;
/** Framing we charge per entry on top of its data when sizing appends and proposals. */
export const entryOverheadBytes = 32;
/**
 * Messages waiting for ready(). The core produces a bounded number per tick and per
 * step, so only a driver that never calls ready() reaches this; that is a bug, and we
 * stop rather than grow without bound.
 */
const outboxMessagesMax = 1_000_000;

type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** The leader's view of one follower's log (etcd's tracker.Progress). */
class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** probe: one append is out unanswered; wait for its answer or a heartbeat answer. */
  probeSent = false;
  /** snapshot: index of the snapshot sent, and ticks spent waiting for its answer. */
  pendingSnapshot = 0;
  snapshotWaitTicks = 0;
  /** Last index of each append in flight, oldest first (replicate state). */
  inflight: number[] = [];
  /** Heard from since the last CheckQuorum round. */
  recentActive = false;
  /** Highest leader message sequence this follower acknowledged, and that message's send tick. */
  ackedSeq = 0;
  ackedSendTick = Number.NEGATIVE_INFINITY;
  /** Sequence number of the last append or snapshot sent. */
  lastAppendSeq = 0;

  constructor(next: number) {
    this.next = next;
  }

  becomeProbe(): void {
    // After a snapshot the follower holds at least the snapshot; probe just past it.
    this.next = this.state === 'snapshot' ? Math.max(this.match + 1, this.pendingSnapshot + 1) : this.match + 1;
    this.state = 'probe';
    this.pendingSnapshot = 0;
    this.probeSent = false;
    this.inflight.length = 0;
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflight.length = 0;
  }

  becomeSnapshot(index: number): void {
    this.state = 'snapshot';
    this.pendingSnapshot = index;
    this.snapshotWaitTicks = 0;
    this.probeSent = false;
    this.inflight.length = 0;
  }

  /** An acknowledgement that the follower's log matches ours up to `index`. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      this.probeSent = false;
      updated = true;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** A rejection of the append after `rejected`; `hintNext` is our guess from the follower's hint. */
  maybeDecreaseTo(rejected: number, hintNext: number): boolean {
    if (this.state === 'replicate') {
      // Stale rejection of something already matched; else fall back to the known match.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // In probe only the answer to the probe in flight counts; older answers are stale.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hintNext), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  freeInflightUpTo(index: number): void {
    let count = 0;
    while (count < this.inflight.length && (this.inflight[count] as number) <= index) count += 1;
    if (count > 0) this.inflight.splice(0, count);
  }

  isPaused(maxInflight: number): boolean {
    if (this.state === 'probe') return this.probeSent;
    if (this.state === 'replicate') return this.inflight.length >= maxInflight;
    return true;
  }
}

/** A read waiting for leadership confirmation (and, at first, for a commit in this term). */
interface PendingRead {
  context: string;
  /** Commit index to serve from; -1 until the leader has committed an entry of its term. */
  index: number;
  /** Any acknowledged leader message with sequence >= this was sent after the request. */
  requiredSeq: number;
}

function isIndex(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isNodeIdList(value: unknown): value is NodeId[] {
  return Array.isArray(value) && value.every((node) => typeof node === 'string');
}

const entryTypes = new Set(['normal', 'config', 'noop']);

/**
 * Why a message from the network cannot be stepped, or null when it is well formed. The
 * daemon's codec checks the schema; this checks what a schema cannot (contiguous entries,
 * terms that never decrease), so a faulty peer costs a dropped message, not a crash.
 */
export function messageProblem(message: Message): string | null {
  if (typeof message !== 'object' || message === null) return 'not an object';
  if (typeof message.from !== 'string' || typeof message.to !== 'string') return 'from and to must be node ids';
  if (!isIndex(message.term)) return `term ${String(message.term)} is not a non-negative integer`;
  switch (message.type) {
    case 'pre-vote':
    case 'vote':
      return isIndex(message.logIndex) && isIndex(message.logTerm) ? null : `${message.type} needs logIndex and logTerm`;
    case 'append': {
      if (!isIndex(message.logIndex) || !isIndex(message.logTerm) || !isIndex(message.commit)) return 'append needs logIndex, logTerm and commit';
      const entries = message.entries ?? [];
      if (!Array.isArray(entries)) return 'append entries must be an array';
      let previousTerm = message.logTerm;
      for (let k = 0; k < entries.length; k += 1) {
        const entry = entries[k] as Entry;
        if (typeof entry !== 'object' || entry === null) return `entry ${k} is not an object`;
        if (entry.index !== message.logIndex + 1 + k) return `entry ${k} has index ${String(entry.index)}, expected ${message.logIndex + 1 + k}`;
        if (!isIndex(entry.term) || entry.term < previousTerm || entry.term > message.term) return `entry ${entry.index} has term ${String(entry.term)} outside [${previousTerm}, ${message.term}]`;
        if (!entryTypes.has(entry.type) || typeof entry.data !== 'string') return `entry ${entry.index} has an unknown type or non-string data`;
        if (entry.type === 'config') {
          const problem = configEntryProblem(entry);
          if (problem !== null) return problem;
        }
        previousTerm = entry.term;
      }
      return null;
    }
    case 'append-response':
      if (message.reject === true && !isIndex(message.logIndex)) return 'a rejection needs the rejected logIndex';
      return message.hintIndex === undefined || isIndex(message.hintIndex) ? null : 'hintIndex must be a non-negative integer';
    case 'heartbeat':
      return isIndex(message.commit) ? null : 'heartbeat needs commit';
    case 'snapshot': {
      const snapshot = message.snapshot;
      if (typeof snapshot !== 'object' || snapshot === null) return 'snapshot message carries no snapshot';
      if (!isIndex(snapshot.index) || !isIndex(snapshot.term) || snapshot.term > message.term) return 'snapshot index or term is invalid';
      if (typeof snapshot.config !== 'object' || snapshot.config === null || !isNodeIdList(snapshot.config.voters) || !isNodeIdList(snapshot.config.learners)) return 'snapshot config is invalid';
      return typeof snapshot.data === 'string' ? null : 'snapshot data must be a string';
    }
    case 'snapshot-response':
      return message.hintIndex === undefined || isIndex(message.hintIndex) ? null : 'hintIndex must be a non-negative integer';
    case 'heartbeat-response':
    case 'pre-vote-response':
    case 'vote-response':
    case 'timeout-now':
      return null;
    default:
      return `unknown message type ${JSON.stringify((message as { type?: unknown }).type)}`;
  }
}

/**
 * The messages of a Ready that may leave before its batch is on disk: a leader's
 * replication (append, heartbeat, snapshot) in the term already durable, when the batch
 * changes neither term nor vote, and whose commit index covers none of the batch's own
 * entries. Followers then write new entries while the leader writes them too (Raft thesis
 * 10.2.1). The core counts the leader's entries towards a commit before they are on its
 * disk; that is safe because such a commit reaches the state machine, clients and other
 * nodes only through a later Ready, which the driver takes only after this one is
 * persisted (the driver applies a Ready's committed entries before writing its batch only
 * when they come before the batch's first entry, RaftNode.handle). The one exception is a single voter, whose entries commit the moment they are
 * appended: its learners must not hear of that commit before the entries are on the
 * leader's disk (the simulator's finding, seed 1462 before the commit check), hence the
 * commit check. If the leader dies first, its entries may live on a follower without being
 * on its own disk; no client was told they committed, and a new leader keeps or replaces
 * them as for any uncommitted entry. Votes, vote requests and acknowledgements promise
 * durable state and always wait.
 */
export function sendableBeforePersist(ready: Ready, durable: { term: number; vote: NodeId | null }): Message[] {
  if (ready.messages.length === 0) return [];
  if (ready.hardState !== null && (ready.hardState.term !== durable.term || ready.hardState.vote !== durable.vote)) return [];
  // A leader only appends: everything before the batch's first entry is already durable.
  const firstUnwritten = ready.entries.length > 0 ? ready.entries[0]!.index : Number.POSITIVE_INFINITY;
  return ready.messages.filter((message) => message.term === durable.term
    && (message.type === 'append' || message.type === 'heartbeat' || message.type === 'snapshot')
    && (message.commit === undefined || message.commit < firstUnwritten));
}

/**
 * How many of a Ready's committed entries a driver may apply before the batch is written:
 * those before the batch's first entry, which earlier Readies made durable. The batch's own
 * entries wait for its write (the core counts a leader's entries towards a commit before
 * they are on its disk, see sendableBeforePersist), and so does everything after a snapshot
 * from the leader, which is installed first.
 */
export function committedBeforeBatch(ready: Ready): number {
  if (ready.snapshot !== null) return 0;
  const firstUnwritten = ready.entries.length > 0 ? ready.entries[0]!.index : Number.POSITIVE_INFINITY;
  let count = 0;
  while (count < ready.committed.length && ready.committed[count]!.index < firstUnwritten) count += 1;
  return count;
}

/** A thrown Error for a broken invariant: a bug in the core or its driver, never input. */
function invariant(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`raft invariant broken: ${message}`);
}

const nonAscii = /[\u0080-\uffff]/;

/** UTF-8 size of a string without allocating (the pure core has no Buffer habit). */
export function utf8ByteLength(text: string): number {
  // Entries are mostly ASCII JSON: one native scan answers for them (2.4x faster here).
  if (!nonAscii.test(text)) return text.length;
  let bytes = text.length;
  for (let i = 0; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff) {
      // A surrogate pair: 4 bytes for 2 units.
      i += 1;
      bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}

function copyConfig(config: ClusterConfig): ClusterConfig {
  return { voters: [...config.voters], learners: [...config.learners] };
}


/** Checks a change against a config; returns why it is invalid, or null. */
export function configChangeProblem(config: ClusterConfig, change: ConfigChange): string | null {
  const isVoter = config.voters.includes(change.node);
  const isLearner = config.learners.includes(change.node);
  switch (change.type) {
    case 'add-learner':
      return isVoter || isLearner ? `${change.node} is already a ${isVoter ? 'voter' : 'learner'}` : null;
    case 'promote':
      return isLearner ? null : `${change.node} is not a learner; add it as a learner first`;
    case 'demote':
      if (!isVoter) return `${change.node} is not a voter`;
      return config.voters.length <= 1 ? `${change.node} is the last voter` : null;
    case 'remove':
      if (!isVoter && !isLearner) return `${change.node} is not a member`;
      return isVoter && config.voters.length <= 1 ? `${change.node} is the last voter` : null;
    default:
      return `unknown change type ${(change as { type: string }).type}`;
  }
}

/** The config after a change (assumed valid). */
export function applyConfigChange(config: ClusterConfig, change: ConfigChange): ClusterConfig {
  const voters = config.voters.filter((node) => node !== change.node);
  const learners = config.learners.filter((node) => node !== change.node);
  if (change.type === 'add-learner' || change.type === 'demote') learners.push(change.node);
  if (change.type === 'promote') voters.push(change.node);
  return { voters, learners };
}

/**
 * A config entry holds the JSON ConfigChange plus the resulting `config`, so a node that
 * joins with an empty config (or any other starting point) adopts the leader's exact view
 * from the entry alone, without replaying history it does not have.
 */
interface ConfigEntryData extends Record<string, unknown> {
  type: ConfigChange['type'];
  node: NodeId;
  config: ClusterConfig;
}

/** Why a config entry's data is not a change with its resulting config, or null. */
function configEntryProblem(entry: Entry): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(entry.data);
  } catch {
    return `config entry ${entry.index} does not hold JSON`;
  }
  const candidate = parsed as Partial<ConfigEntryData> | null;
  const wellFormed = typeof candidate === 'object' && candidate !== null && typeof candidate.node === 'string'
    && ['add-learner', 'promote', 'demote', 'remove'].includes(candidate.type as string)
    && typeof candidate.config === 'object' && candidate.config !== null
    && isNodeIdList(candidate.config.voters) && isNodeIdList(candidate.config.learners);
  return wellFormed ? null : `config entry ${entry.index} does not hold a ConfigChange with its resulting config`;
}

/** Entries reach the log only through messageProblem() or the leader's own proposals. */
function parseConfigEntry(entry: Entry): ConfigEntryData {
  const problem = configEntryProblem(entry);
  invariant(problem === null, problem ?? '');
  return JSON.parse(entry.data) as ConfigEntryData;
}

/** Entry data for a config change: the change and the config it produces. */
export function encodeConfigEntry(change: ConfigChange, config: ClusterConfig): string {
  return JSON.stringify({ type: change.type, node: change.node, config });
}

export class Raft {
  readonly id: NodeId;
  private readonly options: RaftOptions;
  private readonly leaseTicks: number;

  // Persistent state.
  private term: number;
  private vote: NodeId | null;
  private commit: number;

  // Volatile state.
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  private applied: number;

  // The log: entries[i] holds index snapshotIndex + 1 + i; no O(n) work per entry.
  private entries: Entry[];
  private snapshotIndex: number;
  private snapshotTerm: number;
  /** Latest snapshot we hold (made by compact() or installed from a leader); sent to laggards. */
  private snapshot: Snapshot | null;
  /** Entries at or after this index have not yet been handed out for persisting. */
  private unstableFrom: number;
  /** A snapshot received from the leader that the caller must persist and install. */
  private pendingSnapshot: Snapshot | null = null;

  // Membership: the config as of snapshotIndex, then one record per config entry after it.
  private baseConfig: ClusterConfig;
  private configHistory: { index: number; config: ClusterConfig }[] = [];
  private config: ClusterConfig;

  // Timers, all in ticks.
  private tickCount = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout: number;
  /** This candidate won the tie-break of a split vote: it retries soon, once (splitVote). */
  private splitRetry = false;
  /** A restarted node may have acknowledged a lease before it crashed: it refuses votes this long. */
  private startupQuietTicks: number;
  /**
   * A node that lost its log (RaftRestore.lostLog) holds its votes until its commit reaches
   * `until`, the commit index of the first append it accepts from a leader; null until then.
   */
  private voteHold: { until: number | null } | null;
  /** The highest commit index a leader's append has told this node of (its own, as leader). */
  private leaderCommit = 0;

  // Candidate state.
  private votes = new Map<NodeId, boolean>();

  // Leader state.
  private progress = new Map<NodeId, Progress>();
  private messageSeq = 0;
  private committedInTerm = false;
  /** Size (UTF-16 units) of the data of entries after commit; leader only. */
  private uncommittedBytes = 0;
  private leadTransferee: NodeId | null = null;
  private transferElapsed = 0;
  /** Once a timeout-now left in this term, another node may win at once: no more leases. */
  private leaseRevokedInTerm = false;
  private pendingReads: PendingRead[] = [];
  private appendBroadcastWanted = false;
  private commitBroadcastWanted = false;
  private readRoundWanted = false;

  private malformedMessagesDropped = 0;

  // Output, handed over by ready().
  private outbox: Message[] = [];
  private readStates: ReadState[] = [];
  private prevHardState: HardState;
  private prevSoftState: SoftState;
  private readyOutstanding = false;
  /** The last committed entry handed out (by the outstanding Ready or by committedWhileWriting). */
  private handedOutThrough = 0;

  constructor(options: RaftOptions, restore: RaftRestore) {
    invariant(options.electionTicks > options.heartbeatTicks && options.heartbeatTicks >= 1, 'electionTicks must exceed heartbeatTicks >= 1');
    invariant(options.maxEntriesPerAppend >= 1 && options.maxBytesPerAppend >= 1 && options.maxInflightAppends >= 1, 'append bounds must be >= 1');
    invariant(options.driftTicks >= 0, 'driftTicks must be >= 0');
    this.id = options.id;
    this.options = options;
    this.leaseTicks = Math.max(0, options.electionTicks - options.driftTicks - 1);

    this.term = restore.hardState.term;
    this.vote = restore.hardState.vote;
    this.commit = restore.hardState.commit;

    this.snapshot = restore.snapshot;
    this.snapshotIndex = restore.snapshot?.index ?? 0;
    this.snapshotTerm = restore.snapshot?.term ?? 0;
    this.entries = [...restore.entries];
    let previousTerm = this.snapshotTerm;
    for (let i = 0; i < this.entries.length; i += 1) {
      const entry = this.entries[i] as Entry;
      invariant(entry.index === this.snapshotIndex + 1 + i, 'restored entries must follow the snapshot contiguously');
      // Terms never decrease along a log; a storage that kept entries across an installed
      // snapshot, or mixed two logs, shows up here instead of as divergence later.
      invariant(entry.term >= previousTerm, `restored entry ${entry.index} has term ${entry.term} after term ${previousTerm}`);
      previousTerm = entry.term;
    }
    this.unstableFrom = this.lastIndex() + 1;
    this.applied = restore.applied ?? this.snapshotIndex;
    invariant(this.applied >= this.snapshotIndex && this.applied <= this.commit, `restored applied ${this.applied} outside [${this.snapshotIndex}, ${this.commit}]`);
    invariant(this.commit >= this.snapshotIndex && this.commit <= this.lastIndex(), `restored commit ${this.commit} outside [${this.snapshotIndex}, ${this.lastIndex()}]`);

    this.baseConfig = copyConfig(restore.snapshot?.config ?? restore.initialConfig);
    this.config = this.baseConfig;
    for (const entry of this.entries) if (entry.type === 'config') this.recordConfigEntry(entry);

    this.startupQuietTicks = this.term > 0 ? options.electionTicks : 0;
    this.voteHold = restore.lostLog === true ? { until: null } : null;
    this.randomizedElectionTimeout = this.drawElectionTimeout();
    this.prevHardState = { term: this.term, vote: this.vote, commit: this.commit };
    this.prevSoftState = this.softState();
  }

  // ---------------------------------------------------------------- log helpers

  lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  private firstIndex(): number {
    return this.snapshotIndex + 1;
  }

  private lastTerm(): number {
    return this.entries.length === 0 ? this.snapshotTerm : (this.entries[this.entries.length - 1] as Entry).term;
  }

  /** Term of the entry at `index`, or undefined when compacted away or beyond the log. */
  private termAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex || index > this.lastIndex()) return undefined;
    return (this.entries[index - this.snapshotIndex - 1] as Entry).term;
  }

  private entryAt(index: number): Entry {
    const entry = this.entries[index - this.snapshotIndex - 1];
    invariant(entry !== undefined, `entry ${index} not in log [${this.firstIndex()}, ${this.lastIndex()}]`);
    return entry;
  }

  /** Smallest index in the stored log whose term is >= term (terms never decrease along the log). */
  private firstIndexWithTermAtLeast(term: number): number {
    let low = this.firstIndex();
    let high = this.lastIndex() + 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.termAt(middle) as number) >= term) high = middle;
      else low = middle + 1;
    }
    return low;
  }

  /** Largest index <= upTo whose term is exactly `term`, if we still store one. */
  private lastIndexOfTerm(term: number, upTo: number): number | undefined {
    let low = this.snapshotIndex;
    let high = Math.min(upTo, this.lastIndex());
    if (high < low || (this.termAt(low) as number) > term) return undefined;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if ((this.termAt(middle) as number) <= term) low = middle;
      else high = middle - 1;
    }
    return this.termAt(low) === term ? low : undefined;
  }

  private isUpToDate(logIndex: number, logTerm: number): boolean {
    const lastTerm = this.lastTerm();
    return logTerm > lastTerm || (logTerm === lastTerm && logIndex >= this.lastIndex());
  }

  private appendToLog(entries: Entry[], from: number): void {
    if (from >= entries.length) return;
    const firstNew = (entries[from] as Entry).index;
    invariant(firstNew === this.lastIndex() + 1, `appending ${firstNew} after last index ${this.lastIndex()}`);
    for (let i = from; i < entries.length; i += 1) {
      const entry = entries[i] as Entry;
      this.entries.push(entry);
      if (entry.type === 'config') this.recordConfigEntry(entry);
    }
    this.unstableFrom = Math.min(this.unstableFrom, firstNew);
  }

  private truncateFrom(index: number): void {
    invariant(index > this.commit, `truncating committed entry ${index} (commit ${this.commit})`);
    invariant(this.role !== 'leader', 'a leader never truncates its log');
    this.entries.length = index - this.firstIndex();
    while (this.configHistory.length > 0 && (this.configHistory[this.configHistory.length - 1] as { index: number }).index >= index) {
      this.configHistory.pop();
    }
    this.setConfig(this.configHistory.length > 0 ? (this.configHistory[this.configHistory.length - 1] as { config: ClusterConfig }).config : this.baseConfig);
    this.unstableFrom = Math.min(this.unstableFrom, index);
  }

  private configAt(index: number): ClusterConfig {
    let config = this.baseConfig;
    for (const record of this.configHistory) {
      if (record.index > index) break;
      config = record.config;
    }
    return config;
  }

  private lastConfigIndex(): number {
    return this.configHistory.length > 0 ? (this.configHistory[this.configHistory.length - 1] as { index: number }).index : 0;
  }

  // ---------------------------------------------------------------- membership

  /** Config changes take effect as soon as the entry is in the log (dissertation §4.1). */
  private recordConfigEntry(entry: Entry): void {
    const config = copyConfig(parseConfigEntry(entry).config);
    this.configHistory.push({ index: entry.index, config });
    this.setConfig(config);
  }

  private setConfig(config: ClusterConfig): void {
    this.config = config;
    if (this.role !== 'leader') return;
    for (const node of [...config.voters, ...config.learners]) {
      if (node !== this.id && !this.progress.has(node)) this.progress.set(node, new Progress(this.lastIndex() + 1));
    }
    for (const node of [...this.progress.keys()]) {
      if (!config.voters.includes(node) && !config.learners.includes(node)) this.progress.delete(node);
    }
    if (this.leadTransferee !== null && !config.voters.includes(this.leadTransferee)) this.leadTransferee = null;
    this.appendBroadcastWanted = true;
  }

  private isVoter(node: NodeId = this.id): boolean {
    return this.config.voters.includes(node);
  }

  /**
   * Only voters campaign: learners and nodes outside the config (removed, or not yet added)
   * never do. One exception keeps a cluster from deadlocking: a node that demoted or removed
   * itself in a config entry not yet committed (a leader whose removal did not commit before
   * it lost leadership) may campaign while it is a voter of the committed config. Its votes are
   * still counted in its latest config, so quorums overlap as in any single-server change; and
   * it may hold the only copy of entries the remaining voters need before any of them can win.
   */
  private promotable(): boolean {
    if (this.votesHeld()) return false;
    if (this.isVoter()) return true;
    return this.lastConfigIndex() > this.commit && this.configAt(this.commit).voters.includes(this.id);
  }

  // ---------------------------------------------------------------- timing

  private drawElectionTimeout(): number {
    const draw = this.options.randomInt(this.options.electionTicks);
    invariant(Number.isInteger(draw) && draw >= 0 && draw < this.options.electionTicks, `randomInt(${this.options.electionTicks}) returned ${draw}`);
    return this.options.electionTicks + draw;
  }

  /**
   * Leader stickiness: a node that heard from a live leader less than the minimum election
   * timeout ago ignores (pre-)votes, so a partitioned node rejoining cannot depose a healthy
   * leader, and a leader lease stays sound (see leaseRemainingTicks).
   */
  private inLeaderLease(): boolean {
    if (!this.options.checkQuorum) return false;
    if (this.leader !== null && this.electionElapsed < this.options.electionTicks) return true;
    return this.tickCount < this.startupQuietTicks;
  }

  tick(): void {
    this.tickCount += 1;
    if (this.role === 'leader') this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed += 1;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      if (this.splitRetry) {
        // The early retry is one election; should it fail, the timeout is a normal one again.
        this.splitRetry = false;
        this.randomizedElectionTimeout = this.drawElectionTimeout();
      }
      this.startElection(false);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed += 1;
    this.electionElapsed += 1;
    for (const progress of this.progress.values()) {
      // A lost snapshot would leave the follower waiting forever; retry after an election timeout.
      if (progress.state === 'snapshot') {
        progress.snapshotWaitTicks += 1;
        if (progress.snapshotWaitTicks >= this.options.electionTicks) progress.becomeProbe();
      }
    }
    if (this.electionElapsed >= this.options.electionTicks) {
      this.electionElapsed = 0;
      if (this.options.checkQuorum && !this.quorumRecentlyActive()) {
        this.becomeFollower(this.term, null);
        return;
      }
    }
    if (this.leadTransferee !== null) {
      // A transfer must finish within an election timeout; else it is abandoned and we resume.
      this.transferElapsed += 1;
      if (this.transferElapsed >= this.options.electionTicks) this.leadTransferee = null;
    }
    if (this.heartbeatElapsed >= this.options.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
    }
  }

  private quorumRecentlyActive(): boolean {
    let active = this.isVoter() ? 1 : 0;
    for (const [node, progress] of this.progress) {
      if (progress.recentActive && this.isVoter(node)) active += 1;
      progress.recentActive = false;
    }
    return active >= quorumOf(this.config.voters.length);
  }

  // ---------------------------------------------------------------- role changes

  private resetForTerm(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
    }
    this.leader = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.drawElectionTimeout();
    this.splitRetry = false;
    this.votes.clear();
    this.progress.clear();
    this.leadTransferee = null;
    this.committedInTerm = false;
    this.leaseRevokedInTerm = false;
    this.appendBroadcastWanted = false;
    this.commitBroadcastWanted = false;
    this.readRoundWanted = false;
    // Reads still waiting cannot be confirmed by a non-leader; the caller times them out.
    this.pendingReads = [];
  }

  private becomeFollower(term: number, leader: NodeId | null): void {
    this.resetForTerm(term);
    this.role = 'follower';
    this.leader = leader;
  }

  private becomePreCandidate(): void {
    invariant(this.role !== 'leader', 'a leader cannot become pre-candidate');
    // Pre-vote changes neither term nor vote: a node that cannot win disturbs nobody.
    this.votes.clear();
    this.leader = null;
    this.role = 'pre-candidate';
  }

  private becomeCandidate(): void {
    invariant(this.role !== 'leader', 'a leader cannot become candidate');
    this.resetForTerm(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    invariant(this.role === 'candidate', 'only a candidate becomes leader');
    const term = this.term;
    this.resetForTerm(term);
    this.role = 'leader';
    this.leader = this.id;
    for (const node of [...this.config.voters, ...this.config.learners]) {
      if (node !== this.id) this.progress.set(node, new Progress(this.lastIndex() + 1));
    }
    this.uncommittedBytes = 0;
    for (let index = this.commit + 1; index <= this.lastIndex(); index += 1) this.uncommittedBytes += this.entryAt(index).data.length;
    // The no-op commits the log of earlier terms, which the leader may not count (Figure 8).
    this.appendAsLeader([{ term, index: this.lastIndex() + 1, type: 'noop', data: '' }]);
  }

  /** MsgHup: start a (pre-)election now. Returns false when this node may not campaign. */
  campaign(): boolean {
    if (!this.promotable() || this.role === 'leader') return false;
    this.startElection(false);
    return true;
  }

  private startElection(transfer: boolean): void {
    if (this.options.preVote && !transfer) {
      this.becomePreCandidate();
      this.requestVotes('pre-vote', this.term + 1, false);
    } else {
      this.becomeCandidate();
      this.requestVotes('vote', this.term, transfer);
    }
  }

  private requestVotes(type: 'pre-vote' | 'vote', term: number, transfer: boolean): void {
    this.votes.set(this.id, true);
    if (this.tallyVotes()) return;
    for (const node of this.config.voters) {
      if (node === this.id) continue;
      const message: Message = { type, from: this.id, to: node, term, logIndex: this.lastIndex(), logTerm: this.lastTerm() };
      if (transfer) message.transfer = true;
      this.send(message);
    }
  }

  /** Counts votes of current voters; acts on a decision. Returns true when decided. */
  private tallyVotes(): boolean {
    let granted = 0;
    let rejected = 0;
    for (const node of this.config.voters) {
      const vote = this.votes.get(node);
      if (vote === true) granted += 1;
      else if (vote === false) rejected += 1;
    }
    const quorum = quorumOf(this.config.voters.length);
    if (granted >= quorum) {
      if (this.role === 'pre-candidate') {
        this.becomeCandidate();
        this.requestVotes('vote', this.term, false);
      } else {
        this.becomeLeader();
      }
      return true;
    }
    if (this.config.voters.length - rejected < quorum) {
      this.becomeFollower(this.term, null);
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- step

  step(message: Message): void {
    if (messageProblem(message) !== null) {
      // Malformed input is the sender's fault, not ours: drop it and count it for status().
      this.malformedMessagesDropped += 1;
      return;
    }
    if (message.to !== this.id || message.from === this.id) return;
    if (message.term > this.term) {
      const isVoteRequest = message.type === 'pre-vote' || message.type === 'vote';
      if (isVoteRequest && message.transfer !== true && this.inLeaderLease()) return;
      if (message.type === 'pre-vote') {
        // A pre-vote never changes our term.
      } else if (message.type === 'pre-vote-response' && message.reject !== true) {
        // A granted pre-vote carries the term the candidate will use, not a newer leader's term.
      } else {
        const fromLeader = message.type === 'append' || message.type === 'heartbeat' || message.type === 'snapshot' || message.type === 'timeout-now';
        this.becomeFollower(message.term, fromLeader ? message.from : null);
      }
    } else if (message.term < this.term) {
      if ((this.options.checkQuorum || this.options.preVote) && (message.type === 'append' || message.type === 'heartbeat')) {
        // A node stuck at a higher term (it cannot win pre-votes) tells the stale leader,
        // which then steps down and lets an election include it (etcd does the same).
        this.send({ type: 'append-response', from: this.id, to: message.from, term: this.term });
      } else if (message.type === 'pre-vote') {
        this.send({ type: 'pre-vote-response', from: this.id, to: message.from, term: this.term, reject: true });
      }
      return;
    }

    if (message.type === 'pre-vote' || message.type === 'vote') {
      this.handleVoteRequest(message);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(message);
        break;
      case 'candidate':
      case 'pre-candidate':
        this.stepCandidate(message);
        break;
      case 'follower':
        this.stepFollower(message);
        break;
    }
  }

  /**
   * A voter whose log was lost may once have voted, in a term it no longer knows, or held
   * entries that only it and a dead leader had committed: granting a vote with an empty log
   * could elect a leader that lacks them, and voting again in a term it voted in could elect
   * two. So it votes (and campaigns: its own vote counts too) only once its commit has reached
   * what a leader had committed when it first heard from it; from then on its log holds every
   * entry any earlier quorum could have committed. Learned from an append (it carries the
   * leader's commit index; a heartbeat carries only min(match, commit)).
   */
  private votesHeld(): boolean {
    if (this.voteHold === null) return false;
    if (this.voteHold.until === null || this.commit < this.voteHold.until) return true;
    this.voteHold = null;
    return false;
  }

  private handleVoteRequest(message: Message): void {
    const isPreVote = message.type === 'pre-vote';
    if (this.votesHeld()) {
      this.send({ type: isPreVote ? 'pre-vote-response' : 'vote-response', from: this.id, to: message.from, term: this.term, reject: true });
      return;
    }
    const canVote = this.vote === message.from
      || (this.vote === null && this.leader === null)
      || (isPreVote && message.term > this.term);
    const logIndex = message.logIndex ?? 0;
    const logTerm = message.logTerm ?? 0;
    const responseType = isPreVote ? 'pre-vote-response' : 'vote-response';
    if (canVote && this.isUpToDate(logIndex, logTerm)) {
      // A granted pre-vote answers in the candidate's future term so it can count it.
      this.send({ type: responseType, from: this.id, to: message.from, term: message.term, reject: false });
      if (!isPreVote) {
        this.electionElapsed = 0;
        this.vote = message.from;
      }
    } else {
      this.send({ type: responseType, from: this.id, to: message.from, term: this.term, reject: true });
      if (!isPreVote && this.role === 'candidate' && message.term === this.term) this.splitVote(message.from, logIndex, logTerm);
    }
  }

  /**
   * Another candidate asked for our vote in our own term: the vote is split, and with a
   * normal timeout both would wait another 1-2 election timeouts, racing again. The two
   * settle it without messages: the one whose log is more up to date, or with equal logs the
   * smaller id, retries after a tick or two, while the other keeps its timeout and will grant
   * that retry (a pre-vote and a vote of a newer term). Only timing changes, so safety does
   * not depend on it; a candidate whose log is behind could never win the other's vote.
   */
  private splitVote(rival: NodeId, rivalLogIndex: number, rivalLogTerm: number): void {
    // Ahead: the rival's log is not as up to date as ours. Even: the same last entry.
    const even = rivalLogTerm === this.lastTerm() && rivalLogIndex === this.lastIndex();
    if (this.isUpToDate(rivalLogIndex, rivalLogTerm) && !(even && this.id < rival)) return;
    const soon = this.electionElapsed + 1 + this.options.randomInt(2);
    if (soon < this.randomizedElectionTimeout) {
      this.randomizedElectionTimeout = soon;
      this.splitRetry = true;
    }
  }

  private stepCandidate(message: Message): void {
    switch (message.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // Someone won this term.
        this.becomeFollower(this.term, message.from);
        this.stepFollower(message);
        return;
      case 'pre-vote-response':
      case 'vote-response': {
        const expected = this.role === 'pre-candidate' ? 'pre-vote-response' : 'vote-response';
        if (message.type !== expected) return;
        this.votes.set(message.from, message.reject !== true);
        this.tallyVotes();
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(message: Message): void {
    switch (message.type) {
      case 'append':
        this.electionElapsed = 0;
        this.leader = message.from;
        this.handleAppend(message);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.leader = message.from;
        this.handleHeartbeat(message);
        return;
      case 'snapshot':
        this.electionElapsed = 0;
        this.leader = message.from;
        this.handleSnapshot(message);
        return;
      case 'timeout-now':
        // Leadership transfer: campaign at once, skipping pre-vote, with votes that bypass stickiness.
        if (this.promotable()) this.startElection(true);
        return;
      default:
        return;
    }
  }

  private replyTo(message: Message, reply: Omit<Message, 'from' | 'to' | 'term'>): void {
    const response: Message = { ...reply, from: this.id, to: message.from, term: this.term } as Message;
    if (message.context !== undefined) response.context = message.context;
    this.send(response);
  }

  private handleAppend(message: Message): void {
    if (this.voteHold !== null && this.voteHold.until === null) this.voteHold.until = message.commit ?? 0;
    this.leaderCommit = Math.max(this.leaderCommit, message.commit ?? 0);
    const logIndex = message.logIndex ?? 0;
    const logTerm = message.logTerm ?? 0;
    const entries = message.entries ?? [];
    if (logIndex < this.commit) {
      // Everything up to our commit matches any leader's log; tell it where we are.
      this.replyTo(message, { type: 'append-response', reject: false, hintIndex: this.commit });
      return;
    }
    if (this.termAt(logIndex) !== logTerm) {
      // Fast back-off (dissertation §5.3): name our conflicting term and its first index,
      // so the leader skips the whole term instead of one entry per round trip.
      let hintIndex: number;
      let hintTerm: number;
      if (logIndex > this.lastIndex()) {
        hintIndex = this.lastIndex() + 1;
        hintTerm = 0;
      } else {
        hintTerm = this.termAt(logIndex) as number;
        hintIndex = Math.max(this.firstIndexWithTermAtLeast(hintTerm), this.commit + 1);
      }
      this.replyTo(message, { type: 'append-response', reject: true, logIndex, hintIndex, hintTerm });
      return;
    }
    const lastNew = logIndex + entries.length;
    for (let k = 0; k < entries.length; k += 1) {
      const entry = entries[k] as Entry;
      invariant(entry.index === logIndex + 1 + k, `append from ${message.from} is not contiguous at ${entry.index}`);
      if (entry.index > this.lastIndex()) {
        this.appendToLog(entries, k);
        break;
      }
      if (this.termAt(entry.index) !== entry.term) {
        this.truncateFrom(entry.index);
        this.appendToLog(entries, k);
        break;
      }
    }
    this.commitTo(Math.min(message.commit ?? 0, lastNew));
    if (message.quiet === true && entries.length === 0) return;
    this.replyTo(message, { type: 'append-response', reject: false, hintIndex: lastNew });
  }

  private handleHeartbeat(message: Message): void {
    // The leader sends min(our match, its commit), so this never commits an unmatched entry.
    this.commitTo(Math.min(message.commit ?? 0, this.lastIndex()));
    this.replyTo(message, { type: 'heartbeat-response' });
  }

  private handleSnapshot(message: Message): void {
    const snapshot = message.snapshot;
    invariant(snapshot !== undefined, `snapshot message from ${message.from} carries no snapshot`);
    if (snapshot.index <= this.commit) {
      this.replyTo(message, { type: 'snapshot-response', reject: false, hintIndex: this.commit });
      return;
    }
    if (this.termAt(snapshot.index) === snapshot.term) {
      // We already hold the snapshot's last entry: everything up to it is committed.
      this.commitTo(snapshot.index);
      this.replyTo(message, { type: 'snapshot-response', reject: false, hintIndex: snapshot.index });
      return;
    }
    this.installSnapshot(snapshot);
    this.replyTo(message, { type: 'snapshot-response', reject: false, hintIndex: snapshot.index });
  }

  private installSnapshot(snapshot: Snapshot): void {
    this.entries = [];
    this.snapshotIndex = snapshot.index;
    this.snapshotTerm = snapshot.term;
    this.snapshot = snapshot;
    this.pendingSnapshot = snapshot;
    this.unstableFrom = snapshot.index + 1;
    this.commit = snapshot.index;
    this.baseConfig = copyConfig(snapshot.config);
    this.configHistory = [];
    this.setConfig(this.baseConfig);
  }

  private commitTo(index: number): void {
    if (index <= this.commit) return;
    invariant(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.commit = index;
  }

  // ---------------------------------------------------------------- leader

  private stepLeader(message: Message): void {
    switch (message.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        invariant(false, `two leaders in term ${this.term}: ${this.id} and ${message.from}`);
        return;
      case 'append-response':
      case 'heartbeat-response':
      case 'snapshot-response':
        break;
      default:
        return;
    }
    const progress = this.progress.get(message.from);
    if (progress === undefined) return; // no longer a member
    progress.recentActive = true;
    const acknowledgedSeq = this.noteAcknowledgement(progress, message.context);

    if (message.type === 'heartbeat-response') {
      progress.probeSent = false;
      // Appends lost in flight would pin a full window forever; free one to make room for
      // a (possibly empty) append that finds the gap (etcd does the same).
      if (progress.state === 'replicate' && progress.inflight.length >= this.options.maxInflightAppends) progress.inflight.shift();
      // A follower still behind after answering a heartbeat sent after our last append has
      // lost that append (or it is still on its way): probe again, at most once per append.
      const lagging = progress.match < this.lastIndex() && acknowledgedSeq > progress.lastAppendSeq;
      if (progress.state === 'probe' || lagging) this.sendAppend(message.from, progress, true);
      return;
    }

    if (message.reject === true) {
      if (message.type === 'snapshot-response') {
        if (progress.state === 'snapshot') progress.becomeProbe();
        this.sendAppend(message.from, progress, true);
        return;
      }
      // A rejection without logIndex is a stale-term notice already handled in step().
      if (message.logIndex === undefined) return;
      const rejected = message.logIndex;
      const hintNext = this.nextFromHint(rejected, message.hintIndex ?? rejected, message.hintTerm ?? 0);
      if (progress.maybeDecreaseTo(rejected, hintNext)) {
        if (progress.state === 'replicate') progress.becomeProbe();
        this.sendAppend(message.from, progress, true);
      }
      return;
    }

    const matched = message.hintIndex ?? 0;
    if (matched > this.lastIndex()) {
      // No correct follower matches beyond our log (we never shrink it as leader).
      this.malformedMessagesDropped += 1;
      return;
    }
    const updated = progress.maybeUpdate(matched);
    if (progress.state === 'snapshot' && progress.match >= progress.pendingSnapshot) {
      progress.becomeProbe();
      progress.becomeReplicate();
    } else if (progress.state === 'probe' && (updated || matched >= progress.match)) {
      progress.becomeReplicate();
    } else if (progress.state === 'replicate') {
      progress.freeInflightUpTo(matched);
    }
    if (updated && this.maybeCommit()) this.onCommitAdvanced();
    if (this.role !== 'leader') return; // stepped down after committing our own removal
    // Keep the pipeline full.
    while (!progress.isPaused(this.options.maxInflightAppends) && progress.next <= this.lastIndex()) {
      if (!this.sendAppend(message.from, progress, false)) break;
    }
    if (message.from === this.leadTransferee && progress.match === this.lastIndex()) this.sendTimeoutNow(message.from);
  }

  /** Where to probe next after a rejection, from the follower's conflicting term and its first index. */
  private nextFromHint(rejected: number, hintIndex: number, hintTerm: number): number {
    if (hintTerm > 0) {
      const last = this.lastIndexOfTerm(hintTerm, rejected);
      if (last !== undefined) return last + 1;
    }
    return Math.max(1, hintIndex);
  }

  /** Leader messages carry "seq:sendTick"; the echo proves the follower was with us at that send. */
  private nextContext(): string {
    this.messageSeq += 1;
    return `${this.messageSeq}:${this.tickCount}`;
  }

  /** Records an echoed context; returns its sequence number (0 when absent or malformed). */
  private noteAcknowledgement(progress: Progress, context: string | undefined): number {
    if (context === undefined) return 0;
    const colon = context.indexOf(':');
    if (colon <= 0) return 0;
    const seq = Number(context.slice(0, colon));
    const sendTick = Number(context.slice(colon + 1));
    if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(sendTick) || seq > this.messageSeq) return 0;
    if (seq > progress.ackedSeq) {
      progress.ackedSeq = seq;
      progress.ackedSendTick = sendTick;
      if (this.pendingReads.length > 0) this.releaseConfirmedReads();
    }
    return seq;
  }

  /** The quorum-th largest of the voters' values; the leader counts with `own` when it is a voter. */
  private quorumValue(own: number, valueOf: (progress: Progress) => number): number {
    const values: number[] = [];
    for (const node of this.config.voters) {
      if (node === this.id) values.push(own);
      else {
        const progress = this.progress.get(node);
        values.push(progress === undefined ? Number.NEGATIVE_INFINITY : valueOf(progress));
      }
    }
    if (values.length === 0) return Number.NEGATIVE_INFINITY;
    values.sort((a, b) => b - a);
    return values[quorumOf(values.length) - 1] as number;
  }

  /** Commit by counting replicas only for entries of the current term (Figure 8). */
  private maybeCommit(): boolean {
    const candidate = this.quorumValue(this.lastIndex(), (progress) => progress.match);
    if (candidate <= this.commit || this.termAt(candidate) !== this.term) return false;
    for (let index = Math.max(this.commit + 1, this.firstIndex()); index <= candidate; index += 1) {
      this.uncommittedBytes -= this.entryAt(index).data.length;
    }
    this.commit = candidate;
    return true;
  }

  private onCommitAdvanced(): void {
    if (!this.committedInTerm) {
      this.committedInTerm = true;
      // Reads held back until now serve from the first commit that covers all earlier terms.
      for (const read of this.pendingReads) if (read.index < 0) read.index = this.commit;
      this.releaseConfirmedReads();
    }
    // A leader no longer among the voters hands over once its removal is committed.
    if (!this.isVoter() && this.commit >= this.lastConfigIndex()) {
      const successor = this.config.voters
        .filter((node) => this.progress.get(node)?.match === this.lastIndex())
        .sort()[0];
      if (successor !== undefined) this.sendTimeoutNow(successor);
      this.becomeFollower(this.term, null);
      return;
    }
    // Tell followers the new commit index promptly, with an empty append if nothing is new.
    this.commitBroadcastWanted = true;
  }

  private appendAsLeader(entries: Entry[]): void {
    for (const entry of entries) this.uncommittedBytes += entry.data.length;
    this.appendToLog(entries, 0);
    if (this.maybeCommit()) this.onCommitAdvanced();
    this.appendBroadcastWanted = true;
  }

  /**
   * Sends the next batch (or a snapshot) to one follower. Returns whether anything was sent.
   * `commitNotice`: an empty append then only carries the commit index; to a follower in
   * replicate state it goes quiet (not answered when accepted): the answers to the appends
   * that carried the entries say all it would, and a lost append still shows, as a refusal.
   */
  private sendAppend(to: NodeId, progress: Progress, sendIfEmpty: boolean, commitNotice = false): boolean {
    if (progress.isPaused(this.options.maxInflightAppends)) return false;
    const previousIndex = progress.next - 1;
    const previousTerm = this.termAt(previousIndex);
    if (previousTerm === undefined) {
      // The entries it needs are compacted away: send our snapshot instead.
      invariant(previousIndex < this.snapshotIndex && this.snapshot !== null, `follower ${to} needs ${progress.next} but the log starts at ${this.firstIndex()} without a snapshot`);
      this.send({ type: 'snapshot', from: this.id, to, term: this.term, snapshot: this.snapshot, context: this.nextContext() });
      progress.lastAppendSeq = this.messageSeq;
      progress.becomeSnapshot(this.snapshot.index);
      return true;
    }
    const entries = this.batchFrom(progress.next);
    if (entries.length === 0 && !sendIfEmpty) return false;
    const message: Message = {
      type: 'append', from: this.id, to, term: this.term, logIndex: previousIndex, logTerm: previousTerm,
      entries, commit: this.commit, context: this.nextContext(),
    };
    if (commitNotice && entries.length === 0 && progress.state === 'replicate') message.quiet = true;
    this.send(message);
    progress.lastAppendSeq = this.messageSeq;
    if (progress.state === 'replicate') {
      if (entries.length > 0) {
        const last = (entries[entries.length - 1] as Entry).index;
        progress.next = last + 1;
        progress.inflight.push(last);
      }
    } else {
      progress.probeSent = true;
    }
    return true;
  }

  /** Entries from `from`, bounded by count and bytes; always at least one when any exist. */
  private batchFrom(from: number): Entry[] {
    const last = Math.min(this.lastIndex(), from + this.options.maxEntriesPerAppend - 1);
    if (from > last) return [];
    let bytes = 0;
    let end = from;
    while (end <= last) {
      bytes += utf8ByteLength(this.entryAt(end).data) + entryOverheadBytes;
      if (bytes > this.options.maxBytesPerAppend && end > from) break;
      end += 1;
    }
    const offset = this.snapshotIndex + 1;
    return this.entries.slice(from - offset, end - offset);
  }

  private broadcastAppend(sendIfEmpty: boolean): Set<NodeId> {
    const sentTo = new Set<NodeId>();
    for (const [node, progress] of this.progress) {
      if (!this.sendAppend(node, progress, sendIfEmpty, sendIfEmpty)) continue;
      sentTo.add(node);
      // In replicate state, fill the pipeline window with further batches.
      while (progress.state === 'replicate' && progress.next <= this.lastIndex() && this.sendAppend(node, progress, false)) {
        // sendAppend advanced progress.next; the window (isPaused) bounds this loop.
      }
    }
    return sentTo;
  }

  private broadcastHeartbeat(skip: Set<NodeId> = new Set()): void {
    for (const [node, progress] of this.progress) {
      if (skip.has(node)) continue;
      this.send({ type: 'heartbeat', from: this.id, to: node, term: this.term, commit: Math.min(progress.match, this.commit), context: this.nextContext() });
    }
  }

  private sendTimeoutNow(to: NodeId): void {
    this.leaseRevokedInTerm = true;
    this.send({ type: 'timeout-now', from: this.id, to, term: this.term });
  }

  private send(message: Message): void {
    invariant(this.outbox.length < outboxMessagesMax, 'outbox full: the driver must call ready() and advance()');
    this.outbox.push(message);
  }

  // ---------------------------------------------------------------- client API

  propose(data: string): ProposeResult {
    const refused = this.proposalRefusal(data);
    if (refused !== null) return refused;
    const index = this.lastIndex() + 1;
    this.appendAsLeader([{ term: this.term, index, type: 'normal', data }]);
    return { ok: true, index, term: this.term };
  }

  proposeConfigChange(change: ConfigChange): ProposeResult {
    const problem = configChangeProblem(this.config, change);
    const data = encodeConfigEntry(change, problem === null ? applyConfigChange(this.config, change) : this.config);
    const refused = this.proposalRefusal(data);
    if (refused !== null) return refused;
    if (problem !== null) return { ok: false, reason: 'invalid-config-change', leader: this.leader, message: problem };
    if (this.lastConfigIndex() > this.commit) {
      return { ok: false, reason: 'config-change-pending', leader: this.leader, message: `the change at index ${this.lastConfigIndex()} is not committed yet; retry after it commits` };
    }
    if (!this.committedInTerm) {
      return { ok: false, reason: 'busy', leader: this.leader, message: 'a new leader must commit an entry of its term before changing membership; retry shortly' };
    }
    const index = this.lastIndex() + 1;
    this.appendAsLeader([{ term: this.term, index, type: 'config', data }]);
    return { ok: true, index, term: this.term };
  }

  private proposalRefusal(data: string): ProposeResult | null {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader, message: 'this node is not the leader; send the proposal to the leader' };
    if (this.leadTransferee !== null) return { ok: false, reason: 'transferring', leader: this.leader, message: `leadership is moving to ${this.leadTransferee}; retry shortly` };
    const bytes = utf8ByteLength(data) + entryOverheadBytes;
    if (bytes > this.options.maxBytesPerAppend) {
      return { ok: false, reason: 'too-large', leader: this.leader, message: `the entry is ${bytes} bytes, over the ${this.options.maxBytesPerAppend}-byte append limit` };
    }
    if (this.lastIndex() - this.commit >= raftPendingProposalsMax) {
      return { ok: false, reason: 'busy', leader: this.leader, message: `${raftPendingProposalsMax} entries are waiting to commit; retry when followers catch up` };
    }
    if (this.uncommittedBytes + data.length > uncommittedBytesMax) {
      return { ok: false, reason: 'busy', leader: this.leader, message: `${uncommittedBytesMax} bytes of entries are waiting to commit; retry when followers catch up` };
    }
    return null;
  }

  /**
   * Linearizable read (dissertation §6.4). Default: record the commit index and confirm
   * leadership by a quorum acknowledging a message sent after the request. With lease:
   * answer at once while the lease holds. Answers arrive as Ready.readStates. Reads still
   * waiting when this node loses leadership are dropped without an answer: callers time out.
   */
  readIndex(context: string, options: { lease?: boolean } = {}): ReadIndexResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader, message: 'this node is not the leader; read from the leader' };
    if (this.pendingReads.length >= raftPendingReadsMax) {
      return { ok: false, reason: 'busy', leader: this.leader, message: `${raftPendingReadsMax} reads are waiting for confirmation; retry shortly` };
    }
    if (options.lease === true && this.leaseRemainingTicks() > 0) {
      this.readStates.push({ index: this.commit, context });
      return { ok: true };
    }
    this.pendingReads.push({ context, index: this.committedInTerm ? this.commit : -1, requiredSeq: this.messageSeq + 1 });
    this.readRoundWanted = true;
    this.releaseConfirmedReads();
    return { ok: true };
  }

  private releaseConfirmedReads(): void {
    const confirmedSeq = this.quorumValue(Number.POSITIVE_INFINITY, (progress) => progress.ackedSeq);
    let released = 0;
    while (released < this.pendingReads.length) {
      const read = this.pendingReads[released] as PendingRead;
      if (read.index < 0 || read.requiredSeq > confirmedSeq) break;
      this.readStates.push({ index: read.index, context: read.context });
      released += 1;
    }
    if (released > 0) this.pendingReads.splice(0, released);
  }

  /**
   * Ticks of lease left. The lease starts at the quorum-th most recent send tick among the
   * messages voters acknowledged (the leader counts itself now). A follower that acknowledged
   * a message sent at tick s heard from us after s, and refuses every (pre-)vote until
   * electionTicks of its own ticks have passed since then (inLeaderLease; restarted nodes are
   * quiet as long). With clock rates differing by at most driftTicks per electionTicks, that is
   * at least electionTicks - driftTicks of our ticks, and one more tick covers the granularity
   * of ticks, so no other leader can be elected before s + electionTicks - driftTicks - 1.
   * Transfer votes bypass stickiness, so a leader that sent timeout-now holds no lease for the
   * rest of its term; and a new leader holds none until it commits an entry of its term.
   */
  leaseRemainingTicks(): number {
    if (this.role !== 'leader' || !this.options.checkQuorum || this.leaseRevokedInTerm || !this.committedInTerm || this.leaseTicks <= 0) return 0;
    const start = this.quorumValue(this.tickCount, (progress) => progress.ackedSendTick);
    return Math.max(0, start + this.leaseTicks - this.tickCount);
  }

  transferLeadership(to: NodeId): TransferResult {
    if (this.role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.leader, message: 'only the leader can transfer leadership' };
    if (to === this.id) return { ok: false, reason: 'invalid-target', leader: this.leader, message: `${to} already leads` };
    const progress = this.progress.get(to);
    if (progress === undefined || !this.isVoter(to)) return { ok: false, reason: 'invalid-target', leader: this.leader, message: `${to} is not a voter` };
    if (this.leadTransferee === to) return { ok: true };
    this.leadTransferee = to;
    // The transfer must finish within an election timeout or it is abandoned (tickLeader). Its
    // own counter, so repeated transfers cannot postpone CheckQuorum.
    this.transferElapsed = 0;
    if (progress.match === this.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to, progress, true);
    return { ok: true };
  }

  /**
   * The application snapshotted its state up to `index` (<= applied): keep the snapshot,
   * drop the log up to it, and send it to followers that need earlier entries. The caller
   * persists the returned snapshot itself (its config is the one as of `index`, which may
   * differ from status().config); Ready.snapshot only carries snapshots from a leader.
   * Returns null when `index` is not past the current snapshot.
   */
  compact(index: number, data: string): Snapshot | null {
    invariant(index <= this.applied, `compact(${index}) beyond applied index ${this.applied}`);
    if (index <= this.snapshotIndex) return null;
    invariant(index < this.unstableFrom, `compact(${index}) covers entries not yet persisted (from ${this.unstableFrom})`);
    const config = copyConfig(this.configAt(index));
    const term = this.termAt(index) as number;
    this.snapshot = { index, term, config, data };
    this.entries.splice(0, index - this.snapshotIndex);
    this.snapshotIndex = index;
    this.snapshotTerm = term;
    this.baseConfig = config;
    this.configHistory = this.configHistory.filter((record) => record.index > index);
    return this.snapshot;
  }

  // ---------------------------------------------------------------- Ready

  private softState(): SoftState {
    return { role: this.role, leader: this.leader, learner: this.config.learners.includes(this.id) };
  }

  private flushBroadcasts(): void {
    if (this.role !== 'leader') {
      this.appendBroadcastWanted = false;
      this.commitBroadcastWanted = false;
      this.readRoundWanted = false;
      return;
    }
    // Proposals and commits since the last Ready go out as one append per follower (batching).
    const wanted = this.appendBroadcastWanted || this.commitBroadcastWanted;
    const sentTo = wanted ? this.broadcastAppend(this.commitBroadcastWanted) : new Set<NodeId>();
    this.appendBroadcastWanted = false;
    this.commitBroadcastWanted = false;
    if (this.readRoundWanted) {
      // Appends just queued were sent after the reads; heartbeats cover the rest.
      this.broadcastHeartbeat(sentTo);
      this.readRoundWanted = false;
    }
  }

  hasReady(): boolean {
    if (this.readyOutstanding) return false;
    if (this.appendBroadcastWanted || this.commitBroadcastWanted || this.readRoundWanted) return true;
    if (this.outbox.length > 0 || this.readStates.length > 0 || this.pendingSnapshot !== null) return true;
    if (this.unstableFrom <= this.lastIndex() || this.commit > this.applied) return true;
    const soft = this.prevSoftState;
    if (soft.role !== this.role || soft.leader !== this.leader || soft.learner !== this.config.learners.includes(this.id)) return true;
    const hard = this.prevHardState;
    return hard.term !== this.term || hard.vote !== this.vote || hard.commit !== this.commit;
  }

  /**
   * The last index of the committed entries handed out from `from` on, up to `limit`:
   * at most committedEntriesPerReadyMax entries and committedBytesPerReadyMax of data (at
   * least one entry). Below `from` when there is nothing to hand out.
   */
  private committedBatchEnd(from: number, limit: number): number {
    const to = Math.min(limit, from + committedEntriesPerReadyMax - 1);
    let bytes = 0;
    for (let index = from; index <= to; index += 1) {
      bytes += this.entryAt(index).data.length;
      if (bytes > committedBytesPerReadyMax && index > from) return index - 1;
    }
    return to;
  }

  /** Hands over one batch; call advance(ready) after persisting, sending and applying it. */
  ready(): Ready {
    invariant(!this.readyOutstanding, 'ready() called again before advance()');
    this.flushBroadcasts();
    const soft = this.softState();
    const prevSoft = this.prevSoftState;
    const softChanged = soft.role !== prevSoft.role || soft.leader !== prevSoft.leader || soft.learner !== prevSoft.learner;
    const hard: HardState = { term: this.term, vote: this.vote, commit: this.commit };
    const prevHard = this.prevHardState;
    const hardChanged = hard.term !== prevHard.term || hard.vote !== prevHard.vote || hard.commit !== prevHard.commit;

    const snapshot = this.pendingSnapshot;
    const applyFrom = Math.max(this.applied, snapshot?.index ?? 0, this.snapshotIndex) + 1;
    const applyTo = this.committedBatchEnd(applyFrom, this.commit);
    const offset = this.snapshotIndex + 1;
    const ready: Ready = {
      softState: softChanged ? soft : null,
      hardState: hardChanged ? hard : null,
      snapshot,
      entries: this.unstableFrom <= this.lastIndex() ? this.entries.slice(this.unstableFrom - offset) : [],
      messages: this.outbox,
      committed: applyFrom <= applyTo ? this.entries.slice(applyFrom - offset, applyTo - offset + 1) : [],
      readStates: this.readStates,
    };
    // Messages and read states are handed over now; the rest is settled by advance().
    this.outbox = [];
    this.readStates = [];
    if (softChanged) this.prevSoftState = soft;
    if (hardChanged) this.prevHardState = hard;
    this.readyOutstanding = true;
    this.handedOutThrough = Math.max(applyFrom - 1, applyTo);
    return ready;
  }

  /**
   * While the outstanding Ready's batch is being written (between ready() and advance()):
   * the entries committed since that are already on this node's disk, which are those
   * before the first one not yet written (the batch being written, or a suffix a new leader
   * replaced meanwhile). They follow the outstanding Ready's own committed entries, so the
   * caller applies them at once and in order; none come while a snapshot from the leader
   * is pending or being written. The daemon's Ready loop asks after input taken during a
   * write: under load it is always writing, and a commit learned meanwhile would otherwise
   * wait for the end of an unrelated write and for the next Ready.
   *
   * (Sending a leader's replication from here too, as soon as proposals or commits came,
   * was measured and dropped: more and smaller appends cost the followers more writes, and
   * a loaded cluster more CPU, than the earlier send saved.)
   */
  committedWhileWriting(): Entry[] {
    invariant(this.readyOutstanding, 'committedWhileWriting() outside a write (between ready() and advance())');
    // A snapshot from the leader stays pending until advance(), also while it is being written.
    if (this.pendingSnapshot !== null) return [];
    const from = Math.max(this.applied, this.handedOutThrough, this.snapshotIndex) + 1;
    const to = this.committedBatchEnd(from, Math.min(this.commit, this.unstableFrom - 1));
    if (from > to) return [];
    const offset = this.snapshotIndex + 1;
    this.handedOutThrough = to;
    this.applied = Math.max(this.applied, to);
    return this.entries.slice(from - offset, to - offset + 1);
  }

  advance(ready: Ready): void {
    invariant(this.readyOutstanding, 'advance() without a ready()');
    this.readyOutstanding = false;
    if (ready.snapshot !== null) {
      if (this.pendingSnapshot === ready.snapshot) this.pendingSnapshot = null;
      this.applied = Math.max(this.applied, ready.snapshot.index);
    }
    if (ready.entries.length > 0) {
      const last = ready.entries[ready.entries.length - 1] as Entry;
      // If the log was rewritten meanwhile, those entries stay unstable and go out again.
      if (this.termAt(last.index) === last.term) this.unstableFrom = Math.max(this.unstableFrom, last.index + 1);
    }
    if (ready.committed.length > 0) {
      const last = (ready.committed[ready.committed.length - 1] as Entry).index;
      invariant(last <= this.commit, `applied ${last} beyond commit ${this.commit}`);
      this.applied = Math.max(this.applied, last);
    }
  }

  // ---------------------------------------------------------------- inspection

  /** The part of status() read on every applied batch and request: no copies. */
  brief(): Pick<RaftStatus, 'role' | 'term' | 'leader' | 'commit'> {
    return { role: this.role, term: this.term, leader: this.leader, commit: this.commit };
  }

  status(): RaftStatus {
    const progress: Record<NodeId, ProgressStatus> = {};
    for (const [node, entry] of this.progress) {
      progress[node] = { match: entry.match, next: entry.next, state: entry.state, recentActive: entry.recentActive, inflight: entry.inflight.length };
    }
    return {
      id: this.id,
      role: this.role,
      learner: this.config.learners.includes(this.id),
      term: this.term,
      vote: this.vote,
      leader: this.leader,
      commit: this.commit,
      applied: this.applied,
      firstIndex: this.firstIndex(),
      lastIndex: this.lastIndex(),
      config: copyConfig(this.config),
      leaseRemainingTicks: this.leaseRemainingTicks(),
      transferee: this.leadTransferee,
      votesHeld: this.votesHeld(),
      leaderCommit: this.role === 'leader' ? this.commit : Math.max(this.leaderCommit, this.commit),
      pendingReads: this.pendingReads.length,
      malformedMessagesDropped: this.malformedMessagesDropped,
      progress,
    };
  }
}
