// One node's durable storage as the daemon keeps it: hard state, the log after the latest
// snapshot, and that snapshot. A Ready's persistence is one atomic synced batch, so a crash
// keeps a batch whole or not at all; whatever the process held only in memory is lost. As
// in daemon/consensus/log-store.ts, a Ready that only raises the commit index is not
// written: it is held in memory and rides along with the next write, so a crash can
// restart a node with an older commit index than it had reached.
import type { ClusterConfig, Entry, HardState, RaftRestore, Snapshot } from '../consensus/types.ts';

/** A batch the core asked for that no real store could honour: a core bug. */
export class StorageViolation extends Error {
  override name = 'StorageViolation';
}

export function copySnapshot(snapshot: Snapshot): Snapshot {
  return {
    index: snapshot.index,
    term: snapshot.term,
    config: { voters: [...snapshot.config.voters], learners: [...snapshot.config.learners] },
    data: snapshot.data,
  };
}

export class SimDisk {
  hardState: HardState = { term: 0, vote: null, commit: 0 };
  snapshot: Snapshot | null = null;
  /** entries[i] has index firstIndex + i. */
  private entries: Entry[] = [];
  readonly initialConfig: ClusterConfig;
  /** Counts of synced batches, for statistics. */
  syncs = 0;
  /** A commit-only hard state held back in the process's memory (lost at a crash). */
  private unwritten: HardState | null = null;

  constructor(initialConfig: ClusterConfig) {
    this.initialConfig = initialConfig;
  }

  /** The commit index reached: held back in memory, or else the durable one (a snapshot proves its own index). */
  get commit(): number {
    return Math.max((this.unwritten ?? this.hardState).commit, this.snapshotIndex);
  }

  get snapshotIndex(): number {
    return this.snapshot?.index ?? 0;
  }

  get firstIndex(): number {
    return this.snapshotIndex + 1;
  }

  get lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  /** The stored entry at `index`, or undefined if compacted away or beyond the end. */
  entry(index: number): Entry | undefined {
    return this.entries[index - this.firstIndex];
  }

  /** Term at `index`: the snapshot's term at its index, 0 at index 0, undefined if unknown. */
  termAt(index: number): number | undefined {
    if (index === 0) return 0;
    if (this.snapshot !== null && index === this.snapshot.index) return this.snapshot.term;
    return this.entry(index)?.term;
  }

  /**
   * Persists one Ready's durable part atomically: snapshot, then entries, then hard state.
   * Returns the entries that were overwritten (same index, different entry), which the
   * checker uses to catch a core that rewrites committed history.
   */
  persist(snapshot: Snapshot | null, entries: readonly Entry[], readyHardState: HardState | null): Entry[] {
    const hardState = readyHardState ?? this.unwritten;
    if (snapshot === null && entries.length === 0) {
      if (hardState === null) return [];
      if (hardState.term === this.hardState.term && hardState.vote === this.hardState.vote) {
        this.unwritten = { ...hardState };
        return [];
      }
    }
    const overwritten: Entry[] = [];
    if (snapshot !== null) this.installSnapshot(snapshot);
    if (entries.length > 0) {
      const first = (entries[0] as Entry).index;
      if (first <= this.snapshotIndex) {
        throw new StorageViolation(`entries from ${first} would overwrite the snapshot at ${this.snapshotIndex}`);
      }
      if (first > this.lastIndex + 1) {
        throw new StorageViolation(`entries from ${first} leave a gap after the stored log ending at ${this.lastIndex}`);
      }
      for (let offset = 1; offset < entries.length; offset++) {
        if ((entries[offset] as Entry).index !== first + offset) {
          throw new StorageViolation(`entries to append are not contiguous at position ${offset} (index ${(entries[offset] as Entry).index}, expected ${first + offset})`);
        }
      }
      for (let index = first; index <= this.lastIndex; index++) {
        const old = this.entry(index) as Entry;
        const replacement = entries[index - first];
        if (replacement === undefined || replacement.term !== old.term || replacement.data !== old.data || replacement.type !== old.type) {
          overwritten.push(old);
        }
      }
      this.entries.length = first - this.firstIndex;
      for (const entry of entries) this.entries.push({ ...entry });
    }
    if (hardState !== null) this.hardState = { ...hardState };
    this.unwritten = null;
    this.syncs++;
    return overwritten;
  }

  /** The process died: what it held in memory only is gone. */
  crashed(): void {
    this.unwritten = null;
  }

  /**
   * The application compacted its log: store its snapshot and drop the entries it covers.
   * The entries after it stay.
   */
  compact(snapshot: Snapshot): void {
    if (snapshot.index <= this.snapshotIndex) return;
    if (snapshot.index > this.lastIndex) {
      throw new StorageViolation(`snapshot at ${snapshot.index} is beyond the stored log ending at ${this.lastIndex}`);
    }
    this.entries = this.entries.slice(snapshot.index - this.snapshotIndex);
    this.snapshot = copySnapshot(snapshot);
    this.syncs++;
  }

  /** What a restart reads back. Copies, so the restarted core cannot alias the disk. */
  restore(): RaftRestore {
    // As the daemon's load: a snapshot proves its index committed, whatever the hard state says.
    return {
      hardState: { ...this.hardState, commit: Math.max(this.hardState.commit, this.snapshotIndex) },
      snapshot: this.snapshot === null ? null : copySnapshot(this.snapshot),
      entries: this.entries.map((entry) => ({ ...entry })),
      initialConfig: { voters: [...this.initialConfig.voters], learners: [...this.initialConfig.learners] },
    };
  }

  /**
   * A snapshot from the leader replaces the whole stored log, entries after its index
   * included (types.ts, Ready.snapshot): the core installs one only when its log disagrees
   * with the leader's at the snapshot's index, so nothing stored after it can be kept.
   */
  private installSnapshot(snapshot: Snapshot): void {
    if (snapshot.index <= this.snapshotIndex) {
      throw new StorageViolation(`snapshot at ${snapshot.index} is not newer than the stored snapshot at ${this.snapshotIndex}`);
    }
    this.entries = [];
    this.snapshot = copySnapshot(snapshot);
  }
}
