// Drives the pure consensus core at the daemon's edge: one tick timer, messages in from
// the network, and the Ready loop (a leader's replication messages -> persist in one
// batch -> send the rest -> apply -> advance). It also turns proposals and linearizable
// reads into promises.
import { committedBeforeBatch, sendableBeforePersist, type Raft } from '../../scheduler/consensus/raft.ts';
import type { ConfigChange, Entry, Message, NodeId, Ready, Snapshot } from '../../scheduler/consensus/types.ts';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import { raftIdleCompactAfterMs, raftIdleCompactEntriesMin, raftPendingProposalsMax, raftPendingReadsMax, raftSnapshotEveryChars, raftSnapshotEveryEntriesDefault } from '../../protocol/limits.ts';
import { logger } from '../log.ts';
import type { RaftLogStore } from './log-store.ts';

const log = logger('raft');

/** The application's state machine, fed committed entries in order. */
export interface StateMachine<Result> {
  apply(index: number, data: string): Result;
  /**
   * An entry that is no command (a new leader's no-op, a configuration change) was
   * committed at `index`: a state that tracks its applied index advances it, so that
   * "applied everything committed" holds right after an election too.
   */
  skip?(index: number): void;
  snapshot(): string;
  restore(data: string): void;
  /** Back to the empty state (the node gives up a cluster that held nothing). */
  reset(): void;
}

export interface RaftNodeOptions<Result> {
  nodeId: NodeId;
  raft: Raft;
  store: RaftLogStore;
  state: StateMachine<Result>;
  send(to: NodeId, message: Message): void;
  tickMs: number;
  snapshotEveryEntries?: number;
  /** Also snapshot once the commands applied since the last snapshot hold this many UTF-16 units. */
  snapshotEveryChars?: number;
  /** Snapshot after applying nothing for this long (with at least idleCompactEntriesMin entries to drop). */
  idleCompactAfterMs?: number;
  idleCompactEntriesMin?: number;
  /** Called after each Ready with the entries just applied (for events and caches). */
  onApplied?: (entries: Array<{ entry: Entry; result: Result | null }>) => void;
  onSoftState?: () => void;
}

interface PendingProposal<Result> {
  term: number;
  resolve(result: Result | null): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

interface PendingRead {
  resolve(index: number): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class RaftNode<Result> {
  readonly nodeId: NodeId;
  private readonly raft: Raft;
  private readonly options: RaftNodeOptions<Result>;
  private tickTimer: NodeJS.Timeout | null = null;
  private processing = false;
  private scheduled = false;
  /** A Ready's batch is being written (see scheduleMidWrite). */
  private writing = false;
  private midWriteScheduled = false;
  private stopped = false;
  private appliedIndex = 0;
  /** Index of the last snapshot taken or installed (or where this run started applying). */
  private snapshotBase = 0;
  /** This node's offset in the compaction period (see maybeCompact). */
  private readonly snapshotPhase: number;
  /** Command data (UTF-16 units) applied since the last snapshot, started at this node's phase. */
  private charsSinceSnapshot = 0;
  /** The applied index the idle check saw last, and since when it has not moved. */
  private idleWatchIndex = 0;
  private idleSince = 0;
  /** The snapshot being written in the background, if any. */
  private snapshotSave: Promise<void> | null = null;
  private readonly proposals = new Map<number, PendingProposal<Result>>();
  private readonly reads = new Map<string, PendingRead>();
  private readonly readWaiters: Array<{ index: number; resolve(): void }> = [];
  private readCounter = 0;
  private failure: Error | null = null;
  private lastTickAt = 0;
  /** Several election timeouts' worth (the core's election ticks are at most a few dozen). */
  private readonly ticksCatchUpMax = 200;

  constructor(options: RaftNodeOptions<Result>) {
    this.options = options;
    this.nodeId = options.nodeId;
    this.raft = options.raft;
    this.snapshotPhase = phaseOf(options.nodeId, this.snapshotEvery);
  }

  private get snapshotEvery(): number {
    return this.options.snapshotEveryEntries ?? raftSnapshotEveryEntriesDefault;
  }

  private get snapshotEveryChars(): number {
    return this.options.snapshotEveryChars ?? raftSnapshotEveryChars;
  }

  start(appliedIndex: number): void {
    this.appliedIndex = appliedIndex;
    this.snapshotBase = appliedIndex;
    this.charsSinceSnapshot = Math.floor(this.snapshotPhase / this.snapshotEvery * this.snapshotEveryChars);
    this.lastTickAt = performance.now();
    this.idleWatchIndex = appliedIndex;
    this.idleSince = this.lastTickAt;
    this.tickTimer = setInterval(() => {
      this.catchUpTicks();
      this.compactIfIdle();
      this.schedule();
    }, this.options.tickMs);
    this.schedule();
  }

  /**
   * Ticks come from the monotonic clock, not from timer callbacks: after a stall (GC, a
   * blocked loop, SIGSTOP) the timer does not deliver the callbacks it missed, and a leader
   * that lost them would believe its lease still runs while others have elected a new
   * leader (the simulator's finding, `npm run sim -- --seed 13 --skip-missed-ticks`). So
   * every entry point first delivers the ticks that elapsed. Past a few election timeouts
   * more ticks change nothing (elections and leases have all expired), hence the cap.
   */
  private catchUpTicks(): void {
    const now = performance.now();
    const elapsed = Math.floor((now - this.lastTickAt) / this.options.tickMs);
    if (elapsed <= 0) return;
    this.lastTickAt += elapsed * this.options.tickMs;
    const ticks = Math.min(elapsed, this.ticksCatchUpMax);
    for (let tick = 0; tick < ticks; tick += 1) this.raft.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.rejectPending(new HivemeshError(ErrorCode.unavailable, 'the node is stopping', { retryAfterSeconds: 1 }));
    while (this.processing) await new Promise((resolve) => setTimeout(resolve, 5));
    if (this.snapshotSave !== null) await this.snapshotSave;
    // A commit index held back in memory (log-store.ts): a restart then applies up to it at once.
    if (this.failure === null) await this.options.store.flush().catch((error: unknown) => log.warn('could not write the commit index at stop', { error: error as Error }));
  }

  get applied(): number {
    return this.appliedIndex;
  }

  /** The disk write that stopped this node's consensus, or null. */
  get storageFailure(): Error | null {
    return this.failure;
  }

  /** After a storage failure the node leads nothing and follows no one: it says so. */
  status(): ReturnType<Raft['status']> {
    if (!this.stopped) this.catchUpTicks();
    const status = this.raft.status();
    return this.failure === null ? status : { ...status, role: 'follower', leader: null };
  }

  /** Role, term, leader and commit index, as status() has them, without its copies. */
  brief(): ReturnType<Raft['brief']> {
    if (!this.stopped) this.catchUpTicks();
    const brief = this.raft.brief();
    return this.failure === null ? brief : { ...brief, role: 'follower', leader: null };
  }

  receive(message: Message): void {
    if (this.stopped) return;
    this.catchUpTicks();
    this.raft.step(message);
    this.schedule();
  }

  campaign(): void {
    this.raft.campaign();
    this.schedule();
  }

  transferLeadership(to: NodeId): void {
    this.raft.transferLeadership(to);
    this.schedule();
  }

  /** Proposes a command; resolves with its apply result once committed and applied here. */
  propose(data: string, timeoutMs = 5_000): Promise<Result | null> {
    return this.proposeWith((raft) => raft.propose(data), timeoutMs);
  }

  proposeConfigChange(change: ConfigChange, timeoutMs = 5_000): Promise<Result | null> {
    return this.proposeWith((raft) => raft.proposeConfigChange(change), timeoutMs);
  }

  private proposeWith(call: (raft: Raft) => ReturnType<Raft['propose']>, timeoutMs: number): Promise<Result | null> {
    if (this.failure !== null) return Promise.reject(storageFailedError(this.failure, false));
    if (this.proposals.size >= raftPendingProposalsMax) {
      return Promise.reject(new HivemeshError(ErrorCode.rateLimited, `over ${raftPendingProposalsMax} proposals are waiting for commit; slow down`, { retryAfterSeconds: 1 }));
    }
    this.catchUpTicks();
    const outcome = call(this.raft);
    if (!outcome.ok) {
      switch (outcome.reason) {
        case 'too-large':
          return Promise.reject(new HivemeshError(ErrorCode.payloadTooLarge, 'the command is too large to replicate'));
        case 'busy':
          return Promise.reject(new HivemeshError(ErrorCode.rateLimited, 'the leader is busy; retry shortly', { retryAfterSeconds: 1 }));
        default:
          return Promise.reject(new NotLeaderError(outcome.leader, outcome.reason));
      }
    }
    this.schedule();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.proposals.delete(outcome.index);
        reject(new HivemeshError(ErrorCode.noQuorum,
          `no quorum committed the write within ${timeoutMs} ms; its outcome is unknown: retry with the same idempotencyKey`, { retryAfterSeconds: 1 }));
      }, timeoutMs);
      this.proposals.set(outcome.index, { term: outcome.term, resolve, reject, timer });
    });
  }

  /**
   * A linearizable read barrier: resolves once this node has applied everything committed
   * before the call, confirmed by the leader with a quorum (or, with `lease`, by its lease).
   * On a follower use readIndexFromLeader and waitApplied instead.
   */
  readIndex(options: { lease?: boolean; timeoutMs?: number } = {}): Promise<number> {
    if (this.reads.size >= raftPendingReadsMax) {
      return Promise.reject(new HivemeshError(ErrorCode.rateLimited, 'too many reads are waiting; slow down', { retryAfterSeconds: 1 }));
    }
    const context = `${this.nodeId}:${++this.readCounter}`;
    const timeoutMs = options.timeoutMs ?? 3_000;
    const promise = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.reads.delete(context);
        reject(new HivemeshError(ErrorCode.noQuorum, `leadership could not be confirmed by a quorum within ${timeoutMs} ms`, { retryAfterSeconds: 1 }));
      }, timeoutMs);
      this.reads.set(context, { resolve, reject, timer });
    });
    this.catchUpTicks();
    const outcome = this.raft.readIndex(context, { lease: options.lease === true });
    if (!outcome.ok) {
      const pending = this.reads.get(context);
      if (pending !== undefined) {
        clearTimeout(pending.timer);
        this.reads.delete(context);
      }
      return Promise.reject(outcome.reason === 'not-leader'
        ? new NotLeaderError(outcome.leader, outcome.reason)
        : new HivemeshError(ErrorCode.rateLimited, outcome.message, { retryAfterSeconds: 1 }));
    }
    this.schedule();
    return promise;
  }

  /** Resolves when the local state machine has applied `index`. */
  waitApplied(index: number, timeoutMs = 3_000): Promise<void> {
    if (this.appliedIndex >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new HivemeshError(ErrorCode.unavailable, `this node did not catch up to index ${index} within ${timeoutMs} ms`, { retryAfterSeconds: 1 })), timeoutMs);
      this.readWaiters.push({ index, resolve: () => { clearTimeout(timer); resolve(); } });
    });
  }

  private schedule(): void {
    if (this.writing) {
      this.scheduleMidWrite();
      return;
    }
    if (this.scheduled || this.processing || this.stopped) return;
    if (!this.raft.hasReady()) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.process();
    });
  }

  private async process(): Promise<void> {
    if (this.processing || this.stopped) return;
    this.processing = true;
    try {
      while (this.raft.hasReady() && !this.stopped) {
        const ready = this.raft.ready();
        await this.handle(ready);
        this.raft.advance(ready);
        this.maybeCompact();
      }
    } catch (error) {
      this.fail(error as Error);
    } finally {
      this.processing = false;
    }
    if (!this.stopped) this.schedule();
  }

  private async handle(ready: Ready): Promise<void> {
    // 1. A leader's replication messages leave at once, so followers write the new entries
    //    while the leader writes them too (Raft thesis 10.2.1); everything else waits until
    //    the batch is on disk.
    const early = sendableBeforePersist(ready, this.options.store.durable);
    for (const message of early) this.options.send(message.to, message);
    // 2. Committed entries already on this node's disk are applied before the batch is
    //    written (committedBeforeBatch). Under load the loop is always writing, so a commit
    //    learned while one batch was being written would otherwise wait for the next batch's
    //    synced write too.
    const durable = committedBeforeBatch(ready);
    if (durable > 0) this.applyEntries(durable === ready.committed.length ? ready.committed : ready.committed.slice(0, durable));
    this.writing = true;
    try {
      await this.options.store.persist(ready);
    } finally {
      this.writing = false;
    }
    // 3. Send the rest.
    for (const message of ready.messages) if (!early.includes(message)) this.options.send(message.to, message);
    // 4. Apply the rest.
    if (ready.snapshot !== null) this.installSnapshot(ready.snapshot);
    if (durable < ready.committed.length) this.applyEntries(durable === 0 ? ready.committed : ready.committed.slice(durable));
    else if (ready.snapshot !== null) this.wakeReadWaiters();
    for (const readState of ready.readStates) {
      const pending = this.reads.get(readState.context);
      if (pending === undefined) continue;
      this.reads.delete(readState.context);
      clearTimeout(pending.timer);
      pending.resolve(readState.index);
    }
    // Proposals stay pending across a change to a known new leader: the entry may still
    // commit (then it is applied and resolved) or be replaced (then the term check above
    // rejects it), which that leader settles within moments. With no leader in sight (this
    // node was cut off), nothing will settle them before their timeout: answer now.
    if (ready.softState !== null && ready.softState.role !== 'leader' && ready.softState.leader === null) this.abandonPending();
    if (ready.softState !== null) this.options.onSoftState?.();
  }

  /**
   * Input taken while a batch is being written (a message, a proposal, a tick) may have
   * committed entries that are already on this node's disk: they are applied at once
   * (Raft.committedWhileWriting) rather than after this write and the next Ready. Inputs
   * of the same turn of the event loop are looked at together.
   */
  private scheduleMidWrite(): void {
    if (this.midWriteScheduled || this.stopped) return;
    this.midWriteScheduled = true;
    setImmediate(() => {
      this.midWriteScheduled = false;
      if (!this.writing || this.stopped || this.failure !== null) return;
      try {
        const committed = this.raft.committedWhileWriting();
        if (committed.length === 0) return;
        if (committed[0]!.index !== this.appliedIndex + 1) throw new Error(`committed entries handed out during a write start at ${committed[0]!.index}, after applied ${this.appliedIndex}`);
        this.applyEntries(committed);
      } catch (error) {
        // A broken invariant, as in the Ready loop (process).
        this.fail(error as Error);
      }
    });
  }

  /** Applies committed entries in order (those applied already are skipped), answering their proposals and waiting readers. */
  private applyEntries(entries: readonly Entry[]): void {
    const applied: Array<{ entry: Entry; result: Result | null }> = [];
    for (const entry of entries) {
      if (entry.index <= this.appliedIndex) continue;
      let result: Result | null = null;
      if (entry.type === 'normal') {
        result = this.options.state.apply(entry.index, entry.data);
        this.charsSinceSnapshot += entry.data.length;
      } else {
        this.options.state.skip?.(entry.index);
      }
      this.appliedIndex = entry.index;
      applied.push({ entry, result });
      const pending = this.proposals.get(entry.index);
      if (pending !== undefined) {
        this.proposals.delete(entry.index);
        clearTimeout(pending.timer);
        if (pending.term === entry.term) pending.resolve(result);
        else pending.reject(new HivemeshError(ErrorCode.noLeader, 'leadership changed before the write committed; it was not applied, retry', { retryAfterSeconds: 1 }));
      }
    }
    this.wakeReadWaiters();
    if (applied.length > 0) this.options.onApplied?.(applied);
  }

  /** Answers the waitApplied() callers whose index is applied (by entries or an installed snapshot). */
  private wakeReadWaiters(): void {
    if (this.readWaiters.length === 0) return;
    for (let position = this.readWaiters.length - 1; position >= 0; position -= 1) {
      const waiter = this.readWaiters[position]!;
      if (waiter.index <= this.appliedIndex) {
        this.readWaiters.splice(position, 1);
        waiter.resolve();
      }
    }
  }

  /** Rejects every pending proposal and read: this node lost the leadership and knows no leader. */
  private abandonPending(): void {
    if (this.proposals.size === 0 && this.reads.size === 0) return;
    this.rejectPending(
      new HivemeshError(ErrorCode.noQuorum,
        'this node lost the leadership before the write committed and knows no leader now; its outcome is unknown: retry with the same idempotencyKey', { retryAfterSeconds: 1 }),
      new HivemeshError(ErrorCode.noLeader, 'this node lost the leadership and knows no leader now', { retryAfterSeconds: 1 }),
    );
  }

  /** A failed disk write must not be followed by sends: stop the node's consensus. */
  private fail(error: Error): void {
    if (this.failure !== null) return;
    this.failure = error;
    log.error('consensus stopped after a storage failure; restart the daemon', { reason: describeStorageFailure(error), error });
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.stopped = true;
    // Waiting writes and reads get the reason now, not a proposal timeout 5 s later; a write
    // may have reached the other nodes before the disk failed here, so its outcome is unknown.
    this.rejectPending(storageFailedError(error, true));
    this.options.onSoftState?.();
  }

  /** Every waiting proposal and read fails: the node stops, its disk failed, or it lost the leadership. */
  private rejectPending(proposalError: Error, readError: Error = proposalError): void {
    for (const pending of this.proposals.values()) {
      clearTimeout(pending.timer);
      pending.reject(proposalError);
    }
    this.proposals.clear();
    for (const pending of this.reads.values()) {
      clearTimeout(pending.timer);
      pending.reject(readError);
    }
    this.reads.clear();
  }

  /**
   * Compaction: snapshot the state machine every `snapshotEvery` applied entries (after
   * advance), or sooner once they hold `snapshotEveryChars` of command data: until then the
   * log stays in memory, so the count alone would let large prompts grow it without bound.
   * Each node compacts when its applied index passes a multiple of the period shifted by
   * its own phase (and starts its data count at the same fraction), so the nodes of a
   * cluster, which apply the same entries, do not all stall at once. The snapshot is
   * written in the background: the Ready loop goes on (writing the synced image and
   * dropping the compacted entries took 50-100 ms under load, and every node stopped
   * committing meanwhile). That is safe because the snapshot's keys and the entries it
   * covers are disjoint from what later Readies write, a crash before it is on disk leaves
   * the previous snapshot with every entry after it, and the store orders a snapshot
   * received from the leader after it (log-store.ts).
   *
   * The period is long (100,000 entries by default): each snapshot rewrites the whole
   * state image, and under load that I/O, on the disk every commit's fsync waits for, was
   * part of the submit latency's tail (scripts/bench/FINDINGS.md, 17 and 20). A node that
   * goes idle compacts at once instead (compactIfIdle), so a burst's log does not stay in
   * memory until the next one.
   */
  private maybeCompact(): void {
    const every = this.snapshotEvery;
    const period = (index: number) => Math.floor((index + this.snapshotPhase) / every);
    if (period(this.appliedIndex) === period(this.snapshotBase) && this.charsSinceSnapshot < this.snapshotEveryChars) return;
    this.compact();
  }

  /** From the tick timer: compacts once nothing was applied for idleCompactAfterMs. */
  private compactIfIdle(): void {
    const now = performance.now();
    if (this.appliedIndex !== this.idleWatchIndex) {
      this.idleWatchIndex = this.appliedIndex;
      this.idleSince = now;
      return;
    }
    if (now - this.idleSince < (this.options.idleCompactAfterMs ?? raftIdleCompactAfterMs)) return;
    if (this.appliedIndex - this.snapshotBase < (this.options.idleCompactEntriesMin ?? raftIdleCompactEntriesMin)) return;
    // Between Readies only: a Ready being handled may be applying entries right now.
    if (this.processing || this.stopped || this.failure !== null) return;
    this.compact();
  }

  private compact(): void {
    // One save at a time: if the previous one is still on its way (a slow disk), compact
    // after a later Ready instead of holding this one up.
    if (this.snapshotSave !== null) return;
    this.snapshotBase = this.appliedIndex;
    this.charsSinceSnapshot = 0;
    const snapshot = this.raft.compact(this.appliedIndex, this.options.state.snapshot());
    if (snapshot === null) return;
    this.snapshotSave = this.options.store.saveSnapshot(snapshot).then(
      () => { this.snapshotSave = null; },
      (error: unknown) => {
        this.snapshotSave = null;
        this.fail(error as Error);
      },
    );
  }

  private installSnapshot(snapshot: Snapshot): void {
    this.options.state.restore(snapshot.data);
    this.appliedIndex = snapshot.index;
    this.snapshotBase = snapshot.index;
    this.charsSinceSnapshot = 0;
  }
}

/** A node's offset in the compaction period, from its id: spread, and the same every run. */
function phaseOf(nodeId: string, every: number): number {
  let hash = 2_166_136_261;
  for (let position = 0; position < nodeId.length; position += 1) hash = Math.imul(hash ^ nodeId.charCodeAt(position), 16_777_619) >>> 0;
  return hash % every;
}

/** This node cannot take the write: it is not the leader (the caller forwards it). */
export class NotLeaderError extends Error {
  override name = 'NotLeaderError';
  readonly leader: NodeId | null;
  readonly reason: string;
  constructor(leader: NodeId | null, reason: string) {
    super(leader === null ? `no leader is known (${reason})` : `not the leader; the leader is ${leader}`);
    this.leader = leader;
    this.reason = reason;
  }
}

/** What a client hears from a node whose disk write failed (a full disk, most often). */
export function storageFailedError(failure: Error, outcomeUnknown: boolean): HivemeshError {
  const reason = describeStorageFailure(failure);
  return new HivemeshError(ErrorCode.unavailable,
    `this node's disk write failed (${reason}), so it has stopped taking part in consensus and accepts no writes until it is restarted` +
    `${outcomeUnknown ? '; the outcome of this write is unknown: retry it with the same idempotencyKey on another node' : '; send writes to another node'}. ` +
    `${/no space|ENOSPC|disk full/i.test(reason) ? 'Free disk space in its data dir, then restart the daemon.' : 'Check its data dir and disk, then restart the daemon.'}`,
    { retryAfterSeconds: 5 });
}

/** The error's message with its causes (LevelDB wraps the system error). */
export function describeStorageFailure(failure: Error): string {
  const parts: string[] = [];
  let current: unknown = failure;
  for (let depth = 0; depth < 4 && current instanceof Error; depth += 1) {
    if (current.message !== '' && !parts.some((part) => part.includes(current instanceof Error ? current.message : ''))) parts.push(current.message);
    current = current.cause;
  }
  return parts.join(': ') || failure.name;
}
