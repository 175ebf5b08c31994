// The safety invariants of Raft and of the reads served on top of it, checked as the
// simulation runs. The simulator reports what happens (a node persisted, became leader,
// holds a lease, applied, served a read); the checker keeps the global picture (leaders per
// term, the committed log, the applied history, acknowledged writes) and throws an
// InvariantViolation the moment any node's behaviour contradicts it.
import type { Entry, HardState, NodeId, Snapshot } from '../consensus/types.ts';
import { decodeSet } from './kv.ts';

export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
  readonly invariant: string;

  constructor(invariant: string, message: string) {
    super(`${invariant}: ${message}`);
    this.invariant = invariant;
  }
}

/** The view of a node's durable log the checker needs (SimDisk implements it). */
export interface LogView {
  /** The durable hard state; its term bounds the term in which its commit index was reached. */
  readonly hardState: HardState;
  /** The commit index the node has reached: the durable one, or one held back in memory until its next write. */
  readonly commit: number;
  readonly snapshotIndex: number;
  readonly lastIndex: number;
  entry(index: number): Entry | undefined;
  termAt(index: number): number | undefined;
}

interface CommittedEntry {
  term: number;
  type: string;
  data: string;
  /**
   * An upper bound on the term in which the entry became committed: the lowest term of any
   * node that reported it committed (the leader that committed it reports its own term).
   */
  commitTerm: number;
}

interface PositionRecord {
  prevTerm: number | undefined;
  type: string;
  data: string;
  node: NodeId;
}

interface LeaseHolding {
  term: number;
  sinceUs: number;
}

interface PendingRead {
  key: string;
  node: NodeId;
  startUs: number;
  /** The committed index of the newest write to `key` the read must reflect. */
  lowerBound: number;
}

export interface CheckerCounters {
  leadersElected: number;
  leaseIntervals: number;
  /**
   * Smallest real-time gap between one node's lease running out and another node taking a
   * lease: how close the run came to an overlap (Infinity when no such handover happened).
   */
  closestLeaseHandoverUs: number;
  readsChecked: number;
  writesAcknowledged: number;
}

function describeEntry(entry: { term: number; type: string; data: string }): string {
  return `term ${entry.term} ${entry.type} '${entry.data}'`;
}

function samePayload(a: { term: number; type: string; data: string }, b: { term: number; type: string; data: string }): boolean {
  return a.term === b.term && a.type === b.type && a.data === b.data;
}

export class Checker {
  readonly counters: CheckerCounters = { leadersElected: 0, leaseIntervals: 0, closestLeaseHandoverUs: Number.POSITIVE_INFINITY, readsChecked: 0, writesAcknowledged: 0 };
  /** The last lease that ran out on its holder's own clock. */
  private lastLeaseEnd: { node: NodeId; atUs: number } | null = null;
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly leaseHolders = new Map<NodeId, LeaseHolding>();
  /** Every (index, term) ever persisted by any node: what it holds and what precedes it. */
  private readonly positions = new Map<string, PositionRecord>();
  /** The global committed log: committed[i] is the entry at index i (index 0 unused). */
  private readonly committed: (CommittedEntry | undefined)[] = [];
  private committedIndexMax = 0;
  /** Per node: the commit index up to which its log was compared with the committed log. */
  private readonly checkedCommit = new Map<NodeId, number>();
  /** Per index: the hash chain of the applied history up to it, first seen on any node. */
  private readonly appliedChain = new Map<number, { chain: number; node: NodeId }>();
  /** Client values (unique) -> committed index of the write that set them. */
  private readonly valueIndex = new Map<string, number>();
  private readonly ackedIndexByKey = new Map<string, number>();
  private readonly observedIndexByKey = new Map<string, number>();
  private readonly pendingReads = new Map<string, PendingRead>();
  private readonly pendingReadsMax: number;

  constructor(options: { pendingReadsMax: number } = { pendingReadsMax: 10_000 }) {
    this.pendingReadsMax = options.pendingReadsMax;
  }

  get commitIndex(): number {
    return this.committedIndexMax;
  }

  committedEntry(index: number): CommittedEntry | undefined {
    return this.committed[index];
  }

  /**
   * A node reports itself leader of `term`. Returns true the first time this term gets a
   * leader (an election was decided). Checks election safety and leader completeness: the
   * new leader holds every entry committed in an earlier term. Only earlier terms: votes
   * delayed in the network can make a node leader of an old term after a newer leader has
   * committed more, and Raft promises nothing about such a stale leader's log.
   */
  onLeader(node: NodeId, term: number, log: LogView): boolean {
    const existing = this.leaderOfTerm.get(term);
    if (existing !== undefined && existing !== node) {
      throw new InvariantViolation('election safety', `${node} and ${existing} are both leader of term ${term}`);
    }
    if (existing !== undefined) return false;
    this.leaderOfTerm.set(term, node);
    this.counters.leadersElected++;
    for (let index = log.snapshotIndex + 1; index <= this.committedIndexMax; index++) {
      const committed = this.committed[index];
      if (committed === undefined || committed.commitTerm >= term) continue;
      const held = log.entry(index);
      if (held === undefined || !samePayload(held, committed)) {
        throw new InvariantViolation('leader completeness',
          `${node} became leader of term ${term} without committed entry ${index} (${describeEntry(committed)}); its log has ${held === undefined ? 'nothing' : describeEntry(held)} there`);
      }
    }
    return true;
  }

  /**
   * A node reports whether it holds a leader lease at real time `nowUs`. Two nodes holding a
   * lease at the same instant could both serve lease reads: the leases overlap.
   */
  onLease(node: NodeId, held: boolean, term: number, nowUs: number): void {
    const holding = this.leaseHolders.get(node);
    if (!held) {
      if (holding !== undefined) {
        this.leaseHolders.delete(node);
        this.lastLeaseEnd = { node, atUs: nowUs };
      }
      return;
    }
    if (holding !== undefined && holding.term === term) return;
    for (const [other, otherHolding] of this.leaseHolders) {
      if (other === node) continue;
      throw new InvariantViolation('lease exclusivity',
        `${node} took a lease for term ${term} at ${nowUs}us while ${other} has held its lease for term ${otherHolding.term} since ${otherHolding.sinceUs}us`);
    }
    if (this.lastLeaseEnd !== null && this.lastLeaseEnd.node !== node) {
      this.counters.closestLeaseHandoverUs = Math.min(this.counters.closestLeaseHandoverUs, nowUs - this.lastLeaseEnd.atUs);
    }
    this.leaseHolders.set(node, { term, sinceUs: nowUs });
    this.counters.leaseIntervals++;
  }

  /**
   * A stalled process serves nothing, so it holds no lease while stalled; if its lease is
   * still good by its own clock when it resumes, it reports it again then. Not a lease end.
   */
  onStalled(node: NodeId): void {
    this.leaseHolders.delete(node);
  }

  /** A crashed node holds nothing any more: no lease, no pending reads. */
  onCrash(node: NodeId): void {
    this.leaseHolders.delete(node);
    for (const [id, read] of this.pendingReads) if (read.node === node) this.pendingReads.delete(id);
  }

  /** The durable commit index on a restarted node was already checked when it was written. */
  onRestart(node: NodeId, durableCommit: number): void {
    this.checkedCommit.set(node, durableCommit);
  }

  /**
   * A node persisted one Ready batch. `appended` are the entries written, `overwritten` the
   * stored entries they replaced; `log` is the node's log after the batch; `commit` the hard
   * state's commit index after it.
   */
  onPersisted(node: NodeId, appended: readonly Entry[], overwritten: readonly Entry[], log: LogView): void {
    for (const old of overwritten) {
      const committed = this.committed[old.index];
      if (committed !== undefined && samePayload(committed, old)) {
        const replacement = log.entry(old.index);
        throw new InvariantViolation('committed entries are never lost',
          `${node} overwrote committed entry ${old.index} (${describeEntry(old)}) with ${replacement === undefined ? 'nothing' : describeEntry(replacement)}`);
      }
    }
    for (const entry of appended) {
      const key = `${entry.index}/${entry.term}`;
      const prevTerm = log.termAt(entry.index - 1);
      const record = this.positions.get(key);
      if (record === undefined) {
        this.positions.set(key, { prevTerm, type: entry.type, data: entry.data, node });
        continue;
      }
      if (record.type !== entry.type || record.data !== entry.data) {
        throw new InvariantViolation('log matching',
          `${node} stores ${entry.type} '${entry.data}' at index ${entry.index} term ${entry.term}, but ${record.node} stored ${record.type} '${record.data}' at the same index and term`);
      }
      if (record.prevTerm !== undefined && prevTerm !== undefined && record.prevTerm !== prevTerm) {
        throw new InvariantViolation('log matching',
          `${node} stores index ${entry.index} term ${entry.term} after an entry of term ${prevTerm}, but ${record.node} had it after term ${record.prevTerm}: the logs agree at ${entry.index} but not before`);
      }
    }
    this.onCommit(node, log);
  }

  /** Compares a node's log up to the commit index it reached with the global committed log. */
  onCommit(node: NodeId, log: LogView): void {
    const commit = log.commit;
    const checked = this.checkedCommit.get(node) ?? 0;
    if (commit < checked) {
      throw new InvariantViolation('commit index is monotonic', `${node} reached commit ${commit} after having reached ${checked}`);
    }
    for (let index = Math.max(checked, log.snapshotIndex) + 1; index <= commit; index++) {
      const held = log.entry(index);
      if (held === undefined) {
        throw new InvariantViolation('commit within log', `${node} claims commit index ${commit} but its log ends at ${log.lastIndex} (snapshot at ${log.snapshotIndex})`);
      }
      this.recordCommitted(node, held, log.hardState.term);
    }
    this.checkedCommit.set(node, commit);
  }

  /**
   * A node applies `entries` that its core counts committed (up to `commit`) before a durable
   * commit index covers them (the daemon's early apply). They become the committed entries
   * at their indexes; one that differs from an entry committed there before is a violation.
   */
  onCommittedInMemory(node: NodeId, entries: readonly Entry[], commit: number, term: number): void {
    for (const entry of entries) {
      if (entry.index > commit) throw new InvariantViolation('apply only committed', `${node} applies entry ${entry.index} early, but its core's commit index is ${commit}`);
      this.recordCommitted(node, entry, term);
    }
  }

  /** A node installed a snapshot (from a leader or its own disk); `chain` is its applied-history hash. */
  onSnapshotInstalled(node: NodeId, snapshot: Snapshot, chain: number | null): void {
    const committed = this.committed[snapshot.index];
    if (committed !== undefined && committed.term !== snapshot.term) {
      throw new InvariantViolation('snapshot consistency', `${node} installed a snapshot at ${snapshot.index} of term ${snapshot.term}, but the committed entry there has term ${committed.term}`);
    }
    const applied = this.appliedChain.get(snapshot.index);
    if (applied !== undefined && chain !== applied.chain) {
      throw new InvariantViolation('snapshot consistency', `${node} installed a snapshot at ${snapshot.index} whose state differs from what ${applied.node} applied up to ${snapshot.index}`);
    }
  }

  /**
   * A node applied `entry` and its state machine's history hash is now `chain`. `commit` is
   * the commit index it has reached (LogView.commit).
   */
  onApplied(node: NodeId, entry: Entry, chain: number, commit: number): void {
    if (entry.index > commit) {
      throw new InvariantViolation('apply only committed', `${node} applied entry ${entry.index} but its commit index is ${commit}`);
    }
    const committed = this.committed[entry.index];
    if (committed === undefined) {
      throw new InvariantViolation('apply only committed', `${node} applied entry ${entry.index} (${describeEntry(entry)}) that no node's durable commit covers`);
    }
    if (!samePayload(committed, entry)) {
      throw new InvariantViolation('state machine safety', `${node} applied ${describeEntry(entry)} at ${entry.index}, but the committed entry there is ${describeEntry(committed)}`);
    }
    const previous = this.appliedChain.get(entry.index);
    if (previous === undefined) this.appliedChain.set(entry.index, { chain, node });
    else if (previous.chain !== chain) {
      throw new InvariantViolation('state machine safety', `${node} and ${previous.node} applied different histories up to entry ${entry.index}`);
    }
  }

  /** The client of a write learned it succeeded: every later read must reflect it. */
  onWriteAcknowledged(key: string, value: string): void {
    const index = this.valueIndex.get(value);
    if (index === undefined) {
      throw new InvariantViolation('acknowledged writes are committed', `write ${key}=${value} was acknowledged but is not in the committed log`);
    }
    this.counters.writesAcknowledged++;
    if (index > (this.ackedIndexByKey.get(key) ?? 0)) this.ackedIndexByKey.set(key, index);
  }

  /** A client starts a linearizable read of `key`. Returns false if too many are pending. */
  onReadStarted(readId: string, key: string, node: NodeId, nowUs: number): boolean {
    if (this.pendingReads.size >= this.pendingReadsMax) return false;
    const lowerBound = Math.max(this.ackedIndexByKey.get(key) ?? 0, this.observedIndexByKey.get(key) ?? 0);
    this.pendingReads.set(readId, { key, node, startUs: nowUs, lowerBound });
    return true;
  }

  /** A read was abandoned (timed out, refused, node crashed): it asserts nothing. */
  onReadAbandoned(readId: string): void {
    this.pendingReads.delete(readId);
  }

  /** A read finished with `value` (undefined: key absent). */
  onReadServed(readId: string, value: string | undefined, nowUs: number): void {
    const read = this.pendingReads.get(readId);
    if (read === undefined) throw new Error(`read ${readId} was served but never started (simulator bug)`);
    this.pendingReads.delete(readId);
    let index = 0;
    if (value !== undefined) {
      const found = this.valueIndex.get(value);
      if (found === undefined) {
        throw new InvariantViolation('linearizable reads', `read of ${read.key} on ${read.node} returned ${value}, which was never committed`);
      }
      index = found;
    }
    if (index < read.lowerBound) {
      const expected = this.committed[read.lowerBound];
      throw new InvariantViolation('linearizable reads',
        `read of ${read.key} on ${read.node} (started ${read.startUs}us, served ${nowUs}us) returned ${value ?? 'nothing'} (entry ${index}), but the write at entry ${read.lowerBound} ('${expected?.data ?? '?'}') was acknowledged or observed before the read started`);
    }
    this.counters.readsChecked++;
    if (index > (this.observedIndexByKey.get(read.key) ?? 0)) this.observedIndexByKey.set(read.key, index);
  }

  private recordCommitted(node: NodeId, entry: Entry, nodeTerm: number): void {
    const existing = this.committed[entry.index];
    if (existing !== undefined) {
      if (!samePayload(existing, entry)) {
        throw new InvariantViolation('committed entries never change',
          `${node} commits ${describeEntry(entry)} at ${entry.index}, but ${describeEntry(existing)} was committed there before`);
      }
      if (nodeTerm < existing.commitTerm) existing.commitTerm = nodeTerm;
      return;
    }
    this.committed[entry.index] = { term: entry.term, type: entry.type, data: entry.data, commitTerm: nodeTerm };
    if (entry.index > this.committedIndexMax) this.committedIndexMax = entry.index;
    if (entry.type === 'normal') {
      const command = decodeSet(entry.data);
      if (command !== null) this.valueIndex.set(command.value, entry.index);
    }
  }
}
