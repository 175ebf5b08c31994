// The Ready loop's compaction on a real LevelDB store: snapshots are taken at the node's own
// phase of the period, written in the background while commits go on, and what a restart
// reads back is the same state.
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Raft } from '../../scheduler/consensus/raft.ts';
import { tempDir } from '../../tests/support/processes.ts';
import { Storage } from '../storage.ts';
import { RaftLogStore } from './log-store.ts';
import { RaftNode, type StateMachine } from './raft-node.ts';
import { holdBatches } from './test-helpers.ts';

const config = { voters: ['n1'], learners: [] };

/** Appends every applied command to a list; its image is the list as JSON. */
class ListMachine implements StateMachine<number> {
  items: string[] = [];
  apply(_index: number, data: string): number {
    this.items.push(data);
    return this.items.length;
  }
  snapshot(): string {
    return JSON.stringify(this.items);
  }
  restore(data: string): void {
    this.items = JSON.parse(data) as string[];
  }
  reset(): void {
    this.items = [];
  }
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface NodeOptions {
  holdSnapshots?: () => Promise<void>;
  snapshotEveryChars?: number;
  idleCompactAfterMs?: number;
  idleCompactEntriesMin?: number;
}

async function startNode(dir: string, snapshotEveryEntries: number, options: NodeOptions = {}) {
  const storage = await Storage.open(dir);
  if (options.holdSnapshots !== undefined) holdBatches(storage, '"snapdata"', options.holdSnapshots);
  const store = new RaftLogStore(storage);
  const restore = await store.load(config);
  const raft = new Raft({
    id: 'n1', electionTicks: 4, heartbeatTicks: 1, driftTicks: 1, preVote: true, checkQuorum: true,
    maxEntriesPerAppend: 64, maxBytesPerAppend: 1 << 20, maxInflightAppends: 8, randomInt: () => 0,
  }, restore);
  const state = new ListMachine();
  if (restore.snapshot !== null) state.restore(restore.snapshot.data);
  const node = new RaftNode<number>({
    nodeId: 'n1', raft, store, state, send: () => undefined, tickMs: 5, snapshotEveryEntries,
    // Far away unless a test sets them.
    snapshotEveryChars: options.snapshotEveryChars ?? 1 << 30,
    idleCompactAfterMs: options.idleCompactAfterMs ?? 3_600_000,
    ...(options.idleCompactEntriesMin === undefined ? {} : { idleCompactEntriesMin: options.idleCompactEntriesMin }),
  });
  node.start(restore.snapshot?.index ?? 0);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await node.stop();
    await storage.close();
  };
  cleanups.push(stop);
  return { node, state, storage, stop };
}

async function waitLeader(node: RaftNode<number>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (node.brief().role !== 'leader') {
    if (Date.now() > deadline) throw new Error('a single voter did not become leader');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function snapshotIndexOnDisk(storage: Storage): Promise<number | null> {
  const meta = await storage.raft.get('snap');
  return meta === undefined ? null : (JSON.parse(meta) as { index: number }).index;
}

/** The snapshot index on disk once it is past `after`, or null when none comes within `timeoutMs`. */
async function waitSnapshot(storage: Storage, timeoutMs: number, after = 0): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const index = await snapshotIndexOnDisk(storage);
    if (index !== null && index > after) return index;
    if (Date.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('RaftNode compaction', () => {
  it('keeps committing while a snapshot is written, and a restart reads back the same state', async () => {
    const dir = tempDir('raft-node');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    // Snapshot writes are held until released: commits must not wait for them.
    let release: () => void = () => undefined;
    let held = 0;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    cleanups.push(async () => release());
    const first = await startNode(dir, 40, { holdSnapshots: async () => { held += 1; await gate; } });
    await waitLeader(first.node);
    // Several periods pass while the first snapshot is held: one save at a time, and
    // proposals keep committing and applying meanwhile.
    for (let n = 0; n < 120; n += 1) await first.node.propose(`item-${n}`);
    expect(held).toBe(1);
    expect(first.state.items).toHaveLength(120);
    expect(await snapshotIndexOnDisk(first.storage)).toBeNull();
    release();
    for (let n = 120; n < 150; n += 1) await first.node.propose(`item-${n}`);
    await first.stop();

    const second = await startNode(dir, 40);
    // The last snapshot on disk plus the entries after it: every item, in order, once.
    await waitLeader(second.node);
    await second.node.propose('item-150');
    expect(second.state.items).toEqual(Array.from({ length: 151 }, (_, n) => `item-${n}`));
  });

  it('compacts once per period, the first time at the node\'s own phase of it', async () => {
    const dir = tempDir('raft-node');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const { node, storage, stop } = await startNode(dir, 1_000);
    await waitLeader(node);
    // n1's phase in a period of 1,000 entries puts its first snapshot before entry 1,000 or
    // exactly at it; a second follows 1,000 entries later.
    const indices: number[] = [];
    for (let n = 0; n < 2_100; n += 1) {
      await node.propose(`item-${n}`);
      const index = await snapshotIndexOnDisk(storage);
      if (index !== null && indices.at(-1) !== index) indices.push(index);
    }
    await stop();
    expect(indices.length).toBeGreaterThanOrEqual(2);
    expect(indices[0]).toBeLessThanOrEqual(1_001);
    expect(indices[1]! - indices[0]!).toBeGreaterThanOrEqual(999);
    expect(indices[1]! - indices[0]!).toBeLessThanOrEqual(1_001);
  });
});

describe('RaftNode compaction by data size and when idle', () => {
  it('compacts sooner than the entry period once the commands hold snapshotEveryChars', async () => {
    const dir = tempDir('raft-node');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const { node, state, storage, stop } = await startNode(dir, 1_000_000, { snapshotEveryChars: 100_000 });
    await waitLeader(node);
    const big = 'x'.repeat(10_000);
    // n1 starts its count at its phase of the period, so the first snapshot comes within
    // ten commands of 10,000 units; never before any command was applied.
    let first: number | null = null;
    for (let n = 0; n < 25 && first === null; n += 1) {
      await node.propose(`${n}:${big}`);
      first = await waitSnapshot(storage, 200);
    }
    expect(first).not.toBeNull();
    expect(first!).toBeLessThanOrEqual(state.items.length + 1);
    // From then on every ten commands (100,000 units), not every million entries.
    for (let n = 0; n < 10; n += 1) await node.propose(`next-${n}:${big}`);
    const second = await waitSnapshot(storage, 2_000, first!);
    expect(second).not.toBeNull();
    expect(second! - first!).toBeGreaterThanOrEqual(9);
    expect(second! - first!).toBeLessThanOrEqual(11);
    await stop();
  });

  it('compacts a node that applied nothing for idleCompactAfterMs, once, and only with enough entries', async () => {
    const dir = tempDir('raft-node');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const { node, storage, stop } = await startNode(dir, 1_000_000, { idleCompactAfterMs: 100, idleCompactEntriesMin: 50 });
    await waitLeader(node);
    // Too few entries: idle, but nothing worth compacting.
    for (let n = 0; n < 20; n += 1) await node.propose(`item-${n}`);
    expect(await waitSnapshot(storage, 400)).toBeNull();
    // Enough: a snapshot of everything applied, about idleCompactAfterMs after the last write.
    for (let n = 20; n < 60; n += 1) await node.propose(`item-${n}`);
    const lastWrite = Date.now();
    const index = await waitSnapshot(storage, 3_000);
    expect(index).not.toBeNull();
    expect(Date.now() - lastWrite).toBeGreaterThanOrEqual(90);
    expect(index).toBe(node.applied);
    // Still idle: no second snapshot of the same entries.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await snapshotIndexOnDisk(storage)).toBe(index);
    await stop();
    // A restart reads the snapshot back with nothing after it.
    const again = await startNode(dir, 1_000_000);
    await waitLeader(again.node);
    await again.node.propose('item-60');
    expect(again.state.items).toEqual(Array.from({ length: 61 }, (_, n) => `item-${n}`));
  });
});

describe('RaftNode after a failed disk write', () => {
  it('stops, answers waiting and later writes with the reason at once, and no longer calls itself leader', async () => {
    const dir = tempDir('raft-node-enospc');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const { node, storage } = await startNode(dir, 1_000_000);
    await waitLeader(node);
    expect(await node.propose('before')).toBe(1);
    // The next batch fails as LevelDB reports a full disk.
    const batch = storage.db.batch.bind(storage.db);
    let failed = 0;
    (storage.db as { batch: unknown }).batch = (...args: unknown[]) => {
      if (args.length === 0) return batch();
      failed += 1;
      return Promise.reject(new Error('Write failed', { cause: new Error('IO error: /tmp/x/db/000005.log: No space left on device') }));
    };
    const started = Date.now();
    const error = await node.propose('during').then(() => null, (caught: unknown) => caught as Error & { code?: string });
    expect(failed).toBeGreaterThan(0);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(error?.code).toBe('unavailable');
    expect(error?.message).toMatch(/disk write failed \(Write failed: IO error: .*No space left on device\)/);
    expect(error?.message).toMatch(/outcome of this write is unknown: retry it with the same idempotencyKey on another node/);
    expect(error?.message).toMatch(/Free disk space in its data dir, then restart the daemon/);
    expect(node.storageFailure?.message).toBe('Write failed');
    expect(node.brief()).toMatchObject({ role: 'follower', leader: null });
    const later = await node.propose('after').then(() => null, (caught: unknown) => caught as Error & { code?: string });
    expect(later?.code).toBe('unavailable');
    expect(later?.message).toMatch(/send writes to another node/);
  });
});
