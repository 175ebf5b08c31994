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

async function startNode(dir: string, snapshotEveryEntries: number, options: { holdSnapshots?: () => Promise<void> } = {}) {
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
  const node = new RaftNode<number>({ nodeId: 'n1', raft, store, state, send: () => undefined, tickMs: 5, snapshotEveryEntries });
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
