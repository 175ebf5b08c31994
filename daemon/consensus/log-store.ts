// Durable Raft state in LevelDB: hard state, log entries, the latest snapshot and the
// cluster identity this disk belongs to. Each Ready is written as ONE synced batch, so
// a crash leaves either all of it or none of it, and nothing is acknowledged (sent)
// before the batch has reached the disk. One kind of Ready is not written at all: one
// that only raises the commit index. Raft needs term, vote and entries durable, not the
// commit index (a restarted node learns it again from the leader; one lower than the
// truth only delays applying, and a snapshot on disk proves its own index committed).
// The raised commit index rides along with the next write instead, or is written at stop.
// About half of all Readys under load are commit-only; each write, even unsynced, is a
// trip through LevelDB's thread pool on the path of every commit (the leader answers and
// a follower applies only after it).
import { open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Entry, HardState, Ready, RaftRestore, Snapshot, ClusterConfig } from '../../scheduler/consensus/types.ts';
import type { Storage } from '../storage.ts';

const hardStateKey = 'hs';
const snapshotKey = 'snap';
const identityKey = 'identity';
const entryPrefix = 'e:';
/**
 * Where disks written by earlier versions keep the snapshot's image in one record (older ones
 * kept it inside the JSON of 'snap'); read, never written. 'snap' holds index, term, config
 * and the number of pieces.
 */
const snapshotDataKey = 'snapdata';
/**
 * A snapshot's image (our own compaction's, or one the leader sent) is written in pieces
 * under keys of its own index, one piece per turn of the event loop, then named by the
 * synced metadata: handing a multi-megabyte string to LevelDB in one call (UTF-8
 * conversion and copies on the main thread) blocked the loop 8-57 ms under load. A crash
 * before the metadata leaves the previous snapshot, whose pieces have other keys; stray
 * pieces are removed after the next save (or cleared before a save at their index).
 */
const snapshotPiecePrefix = 'snapdata:';
const snapshotPieceChars = 256 * 1024;

/**
 * `<data-dir>/membership.json`, beside the db and outside it: which cluster this node id has
 * been a member of. It outlives a deleted db, so a node that comes back without its log
 * knows that it lost one (RaftRestore.lostLog) instead of taking itself for a new node.
 */
export const MEMBERSHIP_FILE = 'membership.json';

function piecePrefix(index: number): string {
  return `${snapshotPiecePrefix}${index.toString(16).padStart(13, '0')}:`;
}

/** The image cut into pieces of about `size` characters, never between the halves of a surrogate pair. */
export function cutIntoPieces(data: string, size: number): string[] {
  const pieces: string[] = [];
  let start = 0;
  while (start < data.length) {
    let end = Math.min(data.length, start + size);
    const last = data.charCodeAt(end - 1);
    if (end < data.length && last >= 0xd800 && last <= 0xdbff) end += 1;
    pieces.push(data.slice(start, end));
    start = end;
  }
  return pieces.length > 0 ? pieces : [''];
}

/** Index keys sort in numeric order as strings. */
function entryKey(index: number): string {
  return entryPrefix + index.toString(16).padStart(13, '0');
}

/** Which cluster this disk belongs to; written once, before the first Raft write. */
export interface ClusterIdentity {
  clusterId: string;
  /** Config to start from when the log holds none yet (only the founder has one). */
  initialConfig: ClusterConfig;
  joinedAt: string;
}

export class RaftLogStore {
  private readonly storage: Storage;
  /** Highest entry index on disk, to delete a replaced suffix without reading it back. */
  private lastIndex = 0;
  private firstIndex = 1;
  /** Term and vote last written: a hard state that changes neither is not written on its own. */
  private storedTerm = 0;
  private storedVote: string | null = null;
  /** A hard state that raised only the commit index, not written yet (see above). */
  private unwritten: HardState | null = null;
  /** Index of the snapshot on disk (0: none), whose pieces a new write must leave alone. */
  private storedSnapshotIndex = 0;
  /** Our own snapshot being written (saveSnapshot), which a snapshot from the leader waits for. */
  private snapshotWrite: Promise<void> | null = null;

  constructor(storage: Storage) {
    this.storage = storage;
  }

  /** Term and vote as last written (what a restart would read). */
  get durable(): { term: number; vote: string | null } {
    return { term: this.storedTerm, vote: this.storedVote };
  }

  async identity(): Promise<ClusterIdentity | null> {
    const value = await this.storage.raft.get(identityKey);
    return value === undefined ? null : (JSON.parse(value) as ClusterIdentity);
  }

  async saveIdentity(identity: ClusterIdentity): Promise<void> {
    await this.storage.db.batch([{ type: 'put', sublevel: this.storage.raft, key: identityKey, value: JSON.stringify(identity) }], { sync: true });
    await this.rememberMembership(identity.clusterId);
  }

  private get membershipPath(): string {
    return join(dirname(this.storage.path), MEMBERSHIP_FILE);
  }

  /** The cluster this node id was last a member of (membership.json), or null. */
  async formerCluster(): Promise<string | null> {
    try {
      const parsed = JSON.parse(await readFile(this.membershipPath, 'utf8')) as { clusterId?: unknown };
      return typeof parsed.clusterId === 'string' ? parsed.clusterId : null;
    } catch {
      return null; // never written (a new node, or one from before this file), or unreadable
    }
  }

  /** Records (synced, replaced whole) that this node id is a member of `clusterId`. */
  async rememberMembership(clusterId: string): Promise<void> {
    if (await this.formerCluster() === clusterId) return;
    const path = this.membershipPath;
    const temporaryPath = `${path}.tmp-${process.pid}`;
    const handle = await open(temporaryPath, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify({ clusterId, since: new Date().toISOString() })}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporaryPath, path);
  }

  /** Forgets the cluster: identity, hard state, log and snapshot. */
  async clear(): Promise<void> {
    await this.storage.raft.clear();
    this.firstIndex = 1;
    this.lastIndex = 0;
    this.storedTerm = 0;
    this.storedVote = null;
    this.unwritten = null;
    this.storedSnapshotIndex = 0;
  }

  /**
   * Reads everything a restarted node needs to rebuild its consensus core. `lostLog`: the
   * node is rejoining a cluster it was a member of with an empty disk (RaftRestore.lostLog).
   */
  async load(initialConfig: ClusterConfig, lostLog = false): Promise<RaftRestore> {
    const hardStateText = await this.storage.raft.get(hardStateKey);
    const snapshotText = await this.storage.raft.get(snapshotKey);
    const hardState: HardState = hardStateText === undefined ? { term: 0, vote: null, commit: 0 } : (JSON.parse(hardStateText) as HardState);
    let snapshot: Snapshot | null = null;
    if (snapshotText !== undefined) {
      const stored = JSON.parse(snapshotText) as Snapshot | (Omit<Snapshot, 'data'> & { pieces?: number });
      if ('data' in stored) {
        snapshot = stored;
      } else if (stored.pieces !== undefined) {
        const prefix = piecePrefix(stored.index);
        const pieces: string[] = [];
        for await (const piece of this.storage.raft.values({ gte: prefix, lt: `${prefix}~` })) pieces.push(piece);
        if (pieces.length !== stored.pieces) {
          throw new Error(`the raft snapshot at index ${stored.index} has ${pieces.length} of its ${stored.pieces} image pieces on disk; the data dir is damaged`);
        }
        const { pieces: _count, ...meta } = stored;
        snapshot = { ...meta, data: pieces.join('') };
      } else {
        const data = await this.storage.raft.get(snapshotDataKey);
        if (data === undefined) throw new Error(`the raft snapshot at index ${stored.index} has no state image on disk; the data dir is damaged`);
        snapshot = { ...stored, data };
      }
    }
    this.storedSnapshotIndex = snapshot?.index ?? 0;
    // A snapshot holds only committed entries, and the commit index on disk is often older
    // (a raised one is held back until the next write): the snapshot itself proves the commit.
    if (snapshot !== null && hardState.commit < snapshot.index) hardState.commit = snapshot.index;
    this.storedTerm = hardState.term;
    this.storedVote = hardState.vote;
    const entries: Entry[] = [];
    const after = snapshot === null ? 0 : snapshot.index;
    for await (const value of this.storage.raft.values({ gt: entryKey(after), lt: entryPrefix + '~' })) {
      const entry = JSON.parse(value) as Entry;
      if (entries.length > 0 && entry.index !== entries[entries.length - 1]!.index + 1) {
        throw new Error(`raft log on disk has a gap after index ${entries[entries.length - 1]!.index} (found ${entry.index}); the data dir is damaged`);
      }
      entries.push(entry);
    }
    if (entries.length > 0 && entries[0]!.index !== after + 1) {
      throw new Error(`raft log on disk starts at ${entries[0]!.index} but the snapshot ends at ${after}; the data dir is damaged`);
    }
    this.firstIndex = after + 1;
    this.lastIndex = entries.length > 0 ? entries[entries.length - 1]!.index : after;
    return { hardState, snapshot, entries, initialConfig, ...(lostLog ? { lostLog } : {}) };
  }

  /**
   * Persists a Ready's snapshot, entries and hard state in one synced batch; a Ready that
   * only raises the commit index is kept in memory until the next write (or `flush`).
   */
  async persist(ready: Ready): Promise<void> {
    // Both write the snapshot keys and move the start of the log: one after the other.
    if (ready.snapshot !== null && this.snapshotWrite !== null) await this.snapshotWrite.catch(() => undefined);
    const hard = ready.hardState ?? this.unwritten;
    if (ready.snapshot === null && ready.entries.length === 0) {
      if (hard === null) return;
      if (hard.term === this.storedTerm && hard.vote === this.storedVote) {
        this.unwritten = hard;
        return;
      }
    }
    const raft = this.storage.raft;
    const operations: Array<{ type: 'put'; sublevel: typeof raft; key: string; value: string } | { type: 'del'; sublevel: typeof raft; key: string }> = [];
    let lastIndex = this.lastIndex;
    let firstIndex = this.firstIndex;
    if (ready.snapshot !== null) {
      // The leader's image goes down in pieces first, as our own (saveSnapshot); the synced
      // batch below names them, so a crash before it leaves the previous snapshot.
      const pieces = await this.writePieces(ready.snapshot.index, ready.snapshot.data);
      operations.push(...this.snapshotNamed(ready.snapshot, pieces));
      // A snapshot from the leader replaces the whole stored log, entries after its index too:
      // the core discarded them, and a restart must not bring them back.
      for (let index = firstIndex; index <= lastIndex; index += 1) operations.push({ type: 'del', sublevel: raft, key: entryKey(index) });
      firstIndex = ready.snapshot.index + 1;
      lastIndex = ready.snapshot.index;
    }
    if (ready.entries.length > 0) {
      const first = ready.entries[0]!.index;
      // A new leader may replace our uncommitted suffix: delete what the new entries do not overwrite.
      const newLast = ready.entries[ready.entries.length - 1]!.index;
      for (let index = newLast + 1; index <= lastIndex; index += 1) operations.push({ type: 'del', sublevel: raft, key: entryKey(index) });
      for (const entry of ready.entries) operations.push({ type: 'put', sublevel: raft, key: entryKey(entry.index), value: JSON.stringify(entry) });
      lastIndex = newLast;
      if (first < firstIndex) firstIndex = first;
    }
    if (hard !== null) operations.push({ type: 'put', sublevel: raft, key: hardStateKey, value: JSON.stringify(hard) });
    await this.storage.db.batch(operations, { sync: true });
    if (ready.snapshot !== null) await this.snapshotStored(ready.snapshot.index);
    this.lastIndex = lastIndex;
    // Our own compaction (saveSnapshot, in the background) may have moved the start meanwhile.
    if (ready.snapshot !== null || firstIndex < this.firstIndex) this.firstIndex = firstIndex;
    if (hard !== null) {
      this.storedTerm = hard.term;
      this.storedVote = hard.vote;
    }
    // What was written is the newest hard state (the Ready's own, or the one held back).
    this.unwritten = null;
  }

  /** Writes a commit index held back by `persist` (at stop: a restart then applies up to it at once). */
  async flush(): Promise<void> {
    const hard = this.unwritten;
    if (hard === null) return;
    await this.storage.db.batch([{ type: 'put', sublevel: this.storage.raft, key: hardStateKey, value: JSON.stringify(hard) }], { sync: false });
    if (this.unwritten === hard) this.unwritten = null;
  }

  /**
   * Drops entries up to `index` after the core compacted its log (the snapshot is persisted
   * via Ready). One range deletion, which LevelDB walks off the event loop: a batch of one
   * delete per entry (10,000 at each compaction) blocked it for 15-30 ms to build. The range
   * starts at the first possible entry, so entries a crash left behind a snapshot go too.
   */
  async compactTo(index: number): Promise<void> {
    if (index < this.firstIndex) return;
    await this.storage.raft.clear({ gte: entryKey(0), lte: entryKey(index) });
    this.firstIndex = index + 1;
  }

  /**
   * Persists a snapshot the application made itself (compaction), synced, then drops the
   * entries it covers. May run beside persist() of later Readies: its keys and entries are
   * not theirs, and a crash before it completes leaves the previous snapshot and every
   * entry after it (entries are dropped only once the new snapshot is on disk).
   */
  saveSnapshot(snapshot: Snapshot): Promise<void> {
    const write = (async () => {
      const pieces = await this.writePieces(snapshot.index, snapshot.data);
      await this.storage.db.batch(this.snapshotNamed(snapshot, pieces), { sync: true });
      await this.snapshotStored(snapshot.index);
      await this.compactTo(snapshot.index);
    })();
    this.snapshotWrite = write;
    const forget = () => {
      if (this.snapshotWrite === write) this.snapshotWrite = null;
    };
    write.then(forget, forget);
    return write;
  }

  /**
   * Writes an image in pieces under keys of its own index, unsynced, one piece per call:
   * each call waits for LevelDB's thread, so the event loop runs between them (one call with
   * a multi-megabyte string converts and copies it on the main thread). The synced batch that
   * names them (snapshotNamed) makes them durable. Returns how many pieces there are.
   */
  private async writePieces(index: number, data: string): Promise<number> {
    const prefix = piecePrefix(index);
    // Pieces a save cut short left under this index go first, so that what load() counts is this image.
    if (index !== this.storedSnapshotIndex) await this.storage.raft.clear({ gte: prefix, lt: `${prefix}~` });
    const pieces = cutIntoPieces(data, snapshotPieceChars);
    for (const [position, piece] of pieces.entries()) {
      await this.storage.db.batch([{ type: 'put', sublevel: this.storage.raft, key: `${prefix}${position.toString(16).padStart(6, '0')}`, value: piece }], { sync: false });
    }
    return pieces.length;
  }

  /** The batch operations that make a snapshot whose pieces are written the one on disk. */
  private snapshotNamed(snapshot: Snapshot, pieces: number): Array<{ type: 'put'; sublevel: Storage['raft']; key: string; value: string } | { type: 'del'; sublevel: Storage['raft']; key: string }> {
    const meta = { index: snapshot.index, term: snapshot.term, config: snapshot.config, pieces };
    return [
      { type: 'put', sublevel: this.storage.raft, key: snapshotKey, value: JSON.stringify(meta) },
      { type: 'del', sublevel: this.storage.raft, key: snapshotDataKey },
    ];
  }

  /** After the snapshot at `index` is on disk: the pieces of every other (earlier ones, saves cut short) go. */
  private async snapshotStored(index: number): Promise<void> {
    this.storedSnapshotIndex = index;
    const prefix = piecePrefix(index);
    await this.storage.raft.clear({ gte: snapshotPiecePrefix, lt: prefix });
    await this.storage.raft.clear({ gt: `${prefix}~`, lt: `${snapshotPiecePrefix}~` });
  }
}
