// Deliberately broken wrappers around the real core. Each breaks one safety rule the way a
// real bug would; the tests (and `npm run sim -- --broken NAME`) show that the checker
// catches every one, so a passing simulation means something.
import type { ConfigChange, Entry, Message, NodeId, ProposeResult, RaftStatus, ReadIndexResult, ReadState, Ready, Snapshot, TransferResult } from '../consensus/types.ts';
import { Raft } from '../consensus/raft.ts';
import { raftCore, type CoreFactory, type SimCore } from './core.ts';

/** Passes everything through; subclasses override the one thing they break. */
class WrappedCore implements SimCore {
  protected readonly inner: SimCore;
  constructor(inner: SimCore) {
    this.inner = inner;
  }
  tick(): void { this.inner.tick(); }
  step(message: Message): void { this.inner.step(message); }
  propose(data: string): ProposeResult { return this.inner.propose(data); }
  proposeConfigChange(change: ConfigChange): ProposeResult { return this.inner.proposeConfigChange(change); }
  readIndex(context: string, options: { lease?: boolean }): ReadIndexResult { return this.inner.readIndex(context, options); }
  transferLeadership(to: NodeId): TransferResult { return this.inner.transferLeadership(to); }
  compact(index: number, data: string): Snapshot | null { return this.inner.compact(index, data); }
  hasReady(): boolean { return this.inner.hasReady(); }
  ready(): Ready { return this.inner.ready(); }
  advance(ready: Ready): void { this.inner.advance(ready); }
  committedWhileWriting(): Entry[] { return this.inner.committedWhileWriting(); }
  status(): RaftStatus { return this.inner.status(); }
  leaseRemainingTicks(): number { return this.inner.leaseRemainingTicks(); }
}

/**
 * Grants a vote it should refuse (one per batch) and records that vote durably, as a core
 * with a broken vote check would: two candidates can then win the same term.
 */
class DoubleVoteCore extends WrappedCore {
  override ready(): Ready {
    const ready = this.inner.ready();
    const position = ready.messages.findIndex((message) => message.type === 'vote-response' && message.reject === true);
    if (position < 0) return ready;
    const refused = ready.messages[position] as Message;
    // The refusal went out in our term; a granted vote must be answered in the candidate's.
    const status = this.inner.status();
    if (refused.term !== status.term) return ready;
    ready.messages = ready.messages.map((message, index) => index === position ? { ...message, reject: false } : message);
    ready.hardState = { term: status.term, vote: refused.to, commit: status.commit };
    return ready;
  }
}

/** Persists its hard state without the vote: after a restart it can vote twice in a term. */
class ForgetfulVoteCore extends WrappedCore {
  override ready(): Ready {
    const ready = this.inner.ready();
    if (ready.hardState !== null) ready.hardState = { ...ready.hardState, vote: null };
    return ready;
  }
}

/** Serves lease reads without checking the lease: a deposed leader answers stale reads. */
class StaleLeaseReadCore extends WrappedCore {
  private readonly extraReadStates: ReadState[] = [];
  override readIndex(context: string, options: { lease?: boolean }): ReadIndexResult {
    const status = this.inner.status();
    if (options.lease !== true || status.role !== 'leader') return this.inner.readIndex(context, options);
    this.extraReadStates.push({ index: status.commit, context });
    return { ok: true };
  }
  override hasReady(): boolean {
    return this.extraReadStates.length > 0 || this.inner.hasReady();
  }
  override ready(): Ready {
    if (!this.inner.hasReady()) {
      // Only our own read states are waiting: hand them out in an otherwise empty batch.
      const readStates = this.extraReadStates.splice(0);
      return { softState: null, hardState: null, snapshot: null, entries: [], messages: [], committed: [], readStates, [emptyMarker]: true } as Ready;
    }
    const ready = this.inner.ready();
    ready.readStates = [...ready.readStates, ...this.extraReadStates.splice(0)];
    return ready;
  }
  override advance(ready: Ready): void {
    if ((ready as Ready & { [emptyMarker]?: boolean })[emptyMarker] === true) return;
    this.inner.advance(ready);
  }
}
const emptyMarker = Symbol('empty ready');

/** Claims a lease for as long as it leads, ignoring acknowledgements and clocks. */
class EndlessLeaseCore extends WrappedCore {
  override leaseRemainingTicks(): number {
    return this.inner.status().role === 'leader' ? 1 : 0;
  }
  override status(): RaftStatus {
    const status = this.inner.status();
    return { ...status, leaseRemainingTicks: status.role === 'leader' ? 1 : 0 };
  }
}

/** Acknowledges appends without storing the entries: the leader counts copies that do not exist. */
class AckWithoutStoringCore extends WrappedCore {
  override ready(): Ready {
    const ready = this.inner.ready();
    // Drop the batch's entries on the floor while still answering as if they were stored.
    if (ready.entries.length > 0 && ready.messages.some((message) => message.type === 'append-response')) {
      ready.entries = [];
    }
    return ready;
  }
}

/** The private parts of the real core that the Figure 8 breakage replaces. */
interface CommitInternals {
  maybeCommit: () => boolean;
  quorumValue: (own: number, valueOf: (progress: { match: number }) => number) => number;
  lastIndex: () => number;
  commit: number;
}

/**
 * The classic mistake of Raft's Figure 8: a leader commits an entry of an earlier term as soon
 * as a majority stores it, instead of only through an entry of its own term. Reaches into the
 * real core's private commit rule, so it fails loudly if that rule is renamed.
 */
function oldTermCommitCore(options: Parameters<CoreFactory>[0], restore: Parameters<CoreFactory>[1]): SimCore {
  const raft = new Raft(options, restore);
  const internals = raft as unknown as CommitInternals;
  if (typeof internals.maybeCommit !== 'function' || typeof internals.quorumValue !== 'function') {
    throw new Error('the core no longer has maybeCommit/quorumValue: update faulty-cores.ts old-term-commit to its commit rule');
  }
  internals.maybeCommit = function maybeCommitAnyTerm(this: CommitInternals): boolean {
    const candidate = this.quorumValue(this.lastIndex(), (progress) => progress.match);
    if (candidate <= this.commit) return false;
    this.commit = candidate;
    return true;
  };
  return raft;
}

export const faultyCores: Record<string, { describe: string; factory: CoreFactory }> = {
  'double-vote': { describe: 'grants every vote request', factory: (options, restore) => new DoubleVoteCore(raftCore(options, restore)) },
  'forgetful-vote': { describe: 'does not persist its vote', factory: (options, restore) => new ForgetfulVoteCore(raftCore(options, restore)) },
  'stale-lease-read': { describe: 'serves lease reads without a lease', factory: (options, restore) => new StaleLeaseReadCore(raftCore(options, restore)) },
  'endless-lease': { describe: 'reports a lease whenever it leads', factory: (options, restore) => new EndlessLeaseCore(raftCore(options, restore)) },
  'old-term-commit': { describe: 'commits entries of earlier terms by counting replicas (Figure 8)', factory: oldTermCommitCore },
  // Not a bug in itself but missing defences: without PreVote and CheckQuorum's leader
  // stickiness, a server that was cut off (or removed without knowing it) comes back with a
  // higher term and deposes a healthy leader. Either defence alone keeps the leader here.
  'no-prevote': {
    describe: 'runs without PreVote and CheckQuorum',
    factory: (options, restore) => raftCore({ ...options, preVote: false, checkQuorum: false }, restore),
  },
  'ack-without-storing': { describe: 'acknowledges appends it did not persist', factory: (options, restore) => new AckWithoutStoringCore(raftCore(options, restore)) },
};
