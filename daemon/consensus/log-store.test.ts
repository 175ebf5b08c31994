// The durable Raft log in LevelDB: what a restart reads back after appends, a replaced
// suffix, compaction and an installed snapshot.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Entry, RaftRestore, Ready } from '../../scheduler/consensus/types.ts';
import { Storage } from '../storage.ts';
import { tempDir } from '../../tests/support/processes.ts';
import { cutIntoPieces, RaftLogStore } from './log-store.ts';
import { holdBatches } from './test-helpers.ts';

const config = { voters: ['n1'], learners: [] };

function ready(part: Partial<Ready>): Ready {
  return { softState: null, hardState: null, snapshot: null, entries: [], messages: [], committed: [], readStates: [], ...part };
}

function entries(from: number, to: number, term: number): Entry[] {
  return Array.from({ length: to - from + 1 }, (_, offset) => ({ index: from + offset, term, type: 'normal' as const, data: `e${from + offset}t${term}` }));
}

const dirs: string[] = [];
async function open(dir?: string): Promise<{ storage: Storage; store: RaftLogStore; dir: string }> {
  const path = dir ?? tempDir('log-store');
  if (dir === undefined) dirs.push(path);
  const storage = await Storage.open(path);
  return { storage, store: new RaftLogStore(storage), dir: path };
}

/** Databases opened again by restart(), closed after each test. */
const reopened: Storage[] = [];

/** Closes the database and opens it again, as a restarted daemon would: what load() reads back. */
async function restart(storage: Storage, dir: string): Promise<{ restored: RaftRestore; store: RaftLogStore; storage: Storage }> {
  await storage.close();
  const again = await open(dir);
  reopened.push(again.storage);
  return { restored: await again.store.load(config), store: again.store, storage: again.storage };
}

afterEach(async () => {
  for (const storage of reopened.splice(0)) await storage.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('RaftLogStore', () => {
  it('reads back hard state and entries, with a replaced suffix gone', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 'n1', commit: 5 } }));
    // A new leader replaces 6..10 with 6..7 of term 2: 8..10 must not come back.
    await store.persist(ready({ entries: entries(6, 7, 2), hardState: { term: 2, vote: null, commit: 6 } }));
    const { restored } = await restart(storage, dir);
    expect(restored.hardState).toEqual({ term: 2, vote: null, commit: 6 });
    expect(restored.entries.map((entry) => `${entry.index}:${entry.term}`)).toEqual(['1:1', '2:1', '3:1', '4:1', '5:1', '6:2', '7:2']);
  });

  it('keeps only what follows a compaction snapshot', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 20, 1), hardState: { term: 1, vote: 'n1', commit: 20 } }));
    await store.saveSnapshot({ index: 12, term: 1, config, data: 'state@12' });
    // The compacted entries are gone from the disk, not only skipped at load; the rest stay.
    const stored: string[] = [];
    for await (const key of storage.raft.keys()) stored.push(key);
    expect(stored.filter((key) => key.startsWith('e:')).length).toBe(8);
    const { restored } = await restart(storage, dir);
    expect(restored.snapshot?.data).toBe('state@12');
    expect(restored.entries.map((entry) => entry.index)).toEqual([13, 14, 15, 16, 17, 18, 19, 20]);
  });

  it('removes entries a crash left behind an earlier snapshot at the next compaction', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 20, 1), hardState: { term: 1, vote: 'n1', commit: 20 } }));
    // As if the process died after writing the snapshot and before dropping 1..12.
    await storage.db.batch([
      { type: 'put', sublevel: storage.raft, key: 'snap', value: JSON.stringify({ index: 12, term: 1, config }) },
      { type: 'put', sublevel: storage.raft, key: 'snapdata', value: 'state@12' },
    ], { sync: true });
    const after = await restart(storage, dir);
    expect(after.restored.entries[0]?.index).toBe(13);
    await after.store.saveSnapshot({ index: 15, term: 1, config, data: 'state@15' });
    const stored: string[] = [];
    for await (const key of after.storage.raft.keys()) stored.push(key);
    expect(stored.filter((key) => key.startsWith('e:')).length).toBe(5);
  });

  it('writes a compaction snapshot beside later Readies, and a leader snapshot after it', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 20, 1), hardState: { term: 1, vote: 'n1', commit: 20 } }));
    // The Ready loop does not wait for its own snapshot: entries 21..40 go down meanwhile.
    const saving = store.saveSnapshot({ index: 15, term: 1, config, data: 'state@15' });
    await store.persist(ready({ entries: entries(21, 30, 1) }));
    await store.persist(ready({ entries: entries(31, 40, 1) }));
    await saving;
    const { restored: first, store: again, storage: reopenedStorage } = await restart(storage, dir);
    expect(first.snapshot?.data).toBe('state@15');
    expect(first.entries.map((entry) => entry.index)).toEqual(Array.from({ length: 25 }, (_, offset) => 16 + offset));

    // A snapshot from the leader arriving while our own is being written is stored after it:
    // the leader's wins, and the log after it is what follows. (Our own write is held up
    // on its way to LevelDB, so the two would land in the wrong order if not serialised.)
    holdBatches(reopenedStorage, 'state@30', () => new Promise((resolve) => setTimeout(resolve, 50)));
    const own = again.saveSnapshot({ index: 30, term: 1, config, data: 'state@30' });
    await again.persist(ready({ snapshot: { index: 38, term: 2, config, data: 'leader@38' }, hardState: { term: 2, vote: null, commit: 38 } }));
    await own;
    await again.persist(ready({ entries: entries(39, 41, 2) }));
    const { restored } = await restart(reopenedStorage, dir);
    expect(restored.snapshot).toMatchObject({ index: 38, term: 2, data: 'leader@38' });
    expect(restored.entries.map((entry) => `${entry.index}:${entry.term}`)).toEqual(['39:2', '40:2', '41:2']);
  });

  it('drops the whole stored log when a snapshot from the leader is installed', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 30, 1) }));
    // The leader's snapshot ends at 25 in term 3: our 26..30 of term 1 were discarded by the core.
    await store.persist(ready({ snapshot: { index: 25, term: 3, config, data: 'leader@25' }, hardState: { term: 3, vote: null, commit: 25 } }));
    await store.persist(ready({ entries: entries(26, 27, 3) }));
    const { restored } = await restart(storage, dir);
    expect(restored.snapshot?.index).toBe(25);
    expect(restored.entries.map((entry) => `${entry.index}:${entry.term}`)).toEqual(['26:3', '27:3']);
  });

  it('forgets everything on clear, identity included', async () => {
    const { storage, store } = await open();
    await store.saveIdentity({ clusterId: 'c1', initialConfig: config, joinedAt: new Date(0).toISOString() });
    await store.persist(ready({ entries: entries(1, 3, 1), hardState: { term: 1, vote: 'n1', commit: 3 } }));
    await store.clear();
    expect(await store.identity()).toBeNull();
    const restored = await store.load(config);
    expect(restored.entries).toEqual([]);
    expect(restored.hardState).toEqual({ term: 0, vote: null, commit: 0 });
    await storage.close();
  });

  it('syncs every write, holds back one that only raises the commit index, and writes it with the next or at flush', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    const writes: Array<{ sync: boolean; hardState: string | undefined }> = [];
    const batch = storage.db.batch.bind(storage.db);
    storage.db.batch = ((operations: Array<{ key: string; value?: string }>, options: { sync?: boolean }) => {
      writes.push({ sync: options?.sync === true, hardState: operations.find((operation) => operation.key === 'hs')?.value });
      return batch(operations as never, options);
    }) as unknown as typeof storage.db.batch;
    await store.persist(ready({ entries: entries(1, 3, 1), hardState: { term: 1, vote: 'n1', commit: 0 } }));
    await store.persist(ready({ hardState: { term: 1, vote: 'n1', commit: 2 } }));
    await store.persist(ready({ hardState: { term: 1, vote: 'n1', commit: 3 } }));
    expect(writes).toHaveLength(1);
    // Entries without a hard state of their own carry the commit index held back.
    await store.persist(ready({ entries: entries(4, 4, 1) }));
    await store.persist(ready({ hardState: { term: 2, vote: null, commit: 3 } }));
    await store.persist(ready({ hardState: { term: 2, vote: 'n2', commit: 3 } }));
    await store.persist(ready({ hardState: { term: 2, vote: 'n2', commit: 4 } }));
    // A Ready without entries or hard state writes nothing, and does not lose what is held back.
    await store.persist(ready({}));
    expect(writes).toEqual([
      { sync: true, hardState: JSON.stringify({ term: 1, vote: 'n1', commit: 0 }) },
      { sync: true, hardState: JSON.stringify({ term: 1, vote: 'n1', commit: 3 }) },
      { sync: true, hardState: JSON.stringify({ term: 2, vote: null, commit: 3 }) },
      { sync: true, hardState: JSON.stringify({ term: 2, vote: 'n2', commit: 3 }) },
    ]);
    expect(store.durable).toEqual({ term: 2, vote: 'n2' });
    await store.flush();
    expect(writes.at(-1)).toEqual({ sync: false, hardState: JSON.stringify({ term: 2, vote: 'n2', commit: 4 }) });
    await store.flush();
    expect(writes).toHaveLength(5);
    const again = await restart(storage, dir);
    expect(again.restored.hardState).toEqual({ term: 2, vote: 'n2', commit: 4 });
    expect(again.store.durable).toEqual({ term: 2, vote: 'n2' });
  });

  it('restarts with the older commit index when the process died holding a newer one', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 5, 1), hardState: { term: 1, vote: 'n1', commit: 1 } }));
    await store.persist(ready({ hardState: { term: 1, vote: 'n1', commit: 5 } }));
    const { restored } = await restart(storage, dir);
    expect(restored.hardState).toEqual({ term: 1, vote: 'n1', commit: 1 });
    expect(restored.entries.map((entry) => entry.index)).toEqual([1, 2, 3, 4, 5]);
  });

  it('takes a snapshot as proof of commit when the commit index on disk is older', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    // As after a power loss that kept the synced snapshot but lost an unsynced commit write.
    await store.persist(ready({ entries: entries(1, 20, 1), hardState: { term: 1, vote: 'n1', commit: 4 } }));
    await store.saveSnapshot({ index: 12, term: 1, config, data: 'state@12' });
    const { restored } = await restart(storage, dir);
    expect(restored.hardState.commit).toBe(12);
    expect(restored.entries[0]?.index).toBe(13);
  });

  it('stores the snapshot image apart from its metadata, and still reads a disk that kept both in one record', async () => {
    const opened = await open();
    const { store, dir } = opened;
    let { storage } = opened;
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 6, 1), hardState: { term: 1, vote: 'n1', commit: 6 } }));
    const image = JSON.stringify({ tasks: ['quoted "text"'] });
    await store.saveSnapshot({ index: 4, term: 1, config, data: image });
    expect(await storage.raft.get('snapdata:0000000000004:000000')).toBe(image);
    expect(JSON.parse((await storage.raft.get('snap'))!)).toEqual({ index: 4, term: 1, config, pieces: 1 });
    // As a version of this morning wrote it: the image in one record beside the metadata.
    await storage.raft.put('snap', JSON.stringify({ index: 4, term: 1, config }));
    await storage.raft.put('snapdata', 'state@4');
    const middle = await restart(storage, dir);
    expect(middle.restored.snapshot).toEqual({ index: 4, term: 1, config, data: 'state@4' });
    storage = middle.storage;
    // As an older version wrote it: the image inside the 'snap' record.
    await storage.raft.put('snap', JSON.stringify({ index: 5, term: 1, config, data: 'state@5' }));
    await storage.raft.del('snapdata');
    const { restored } = await restart(storage, dir);
    expect(restored.snapshot).toEqual({ index: 5, term: 1, config, data: 'state@5' });
    expect(restored.entries.map((entry) => entry.index)).toEqual([6]);
  });

  it('writes a large image in pieces that never split a character, and a save cut short leaves the previous snapshot', async () => {
    // Surrogate pairs straddle every piece boundary of a naive cut.
    const emoji = '\u{1F41D}';
    const text = 'a' + emoji.repeat(9);
    expect(cutIntoPieces(text, 4).join('')).toBe(text);
    expect(cutIntoPieces(text, 4).every((piece) => !/[\ud800-\udbff]$/.test(piece))).toBe(true);
    expect(cutIntoPieces('', 4)).toEqual(['']);

    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 30, 1), hardState: { term: 1, vote: 'n1', commit: 30 } }));
    const image = JSON.stringify({ notes: Array.from({ length: 40_000 }, (_, n) => `note ${n} ${emoji} é`) });
    await store.saveSnapshot({ index: 10, term: 1, config, data: image });
    const pieces: string[] = [];
    for await (const key of storage.raft.keys({ gte: 'snapdata:', lt: 'snapdata:~' })) pieces.push(key);
    expect(pieces.length).toBeGreaterThan(1);
    // As if the process died while writing the pieces of the next snapshot (no metadata yet).
    await storage.raft.put('snapdata:0000000000014:000000', 'half of state@20');
    let again = await restart(storage, dir);
    expect(again.restored.snapshot).toEqual({ index: 10, term: 1, config, data: image });
    expect(again.restored.entries[0]?.index).toBe(11);
    // The next save removes every other snapshot's pieces.
    await again.store.saveSnapshot({ index: 20, term: 1, config, data: 'state@20' });
    const left: string[] = [];
    for await (const key of again.storage.raft.keys({ gte: 'snapdata:', lt: 'snapdata:~' })) left.push(key);
    expect(left).toEqual(['snapdata:0000000000014:000000']);
    again = await restart(again.storage, dir);
    expect(again.restored.snapshot?.data).toBe('state@20');
  });
  it('stores a snapshot from the leader in pieces too, replacing pieces a save cut short at the same index', async () => {
    const { storage, store, dir } = await open();
    await store.load(config);
    await store.persist(ready({ entries: entries(1, 10, 1), hardState: { term: 1, vote: 'n1', commit: 10 } }));
    await store.saveSnapshot({ index: 8, term: 1, config, data: 'state@8' });
    // As if this node had died writing its own snapshot at 40 (more pieces than the leader's).
    for (let position = 0; position < 5; position += 1) await storage.raft.put(`snapdata:0000000000028:00000${position}`, 'half of state@40');
    const image = JSON.stringify({ notes: Array.from({ length: 30_000 }, (_, n) => `note ${n} "\u{1F41D}" é`) });
    await store.persist(ready({ snapshot: { index: 40, term: 2, config, data: image }, hardState: { term: 2, vote: null, commit: 40 } }));
    expect(await storage.raft.get('snapdata')).toBeUndefined();
    const keys: string[] = [];
    for await (const key of storage.raft.keys({ gte: 'snapdata:', lt: 'snapdata:~' })) keys.push(key);
    expect(keys.length).toBeGreaterThan(1);
    expect(keys.every((key) => key.startsWith('snapdata:0000000000028:'))).toBe(true);
    const { restored } = await restart(storage, dir);
    expect(restored.snapshot).toEqual({ index: 40, term: 2, config, data: image });
    expect(restored.entries).toEqual([]);
  });
});

describe('membership.json', () => {
  it('outlives a deleted db, so a node that comes back without its log can tell', async () => {
    const { storage, store, dir } = await open();
    expect(await store.formerCluster()).toBeNull();
    await store.saveIdentity({ clusterId: 'c-1', initialConfig: config, joinedAt: new Date().toISOString() });
    expect(await store.formerCluster()).toBe('c-1');
    await storage.close();
    rmSync(join(dir, 'db'), { recursive: true, force: true });
    const again = await open(dir);
    reopened.push(again.storage);
    expect(await again.store.identity()).toBeNull();
    expect(await again.store.formerCluster()).toBe('c-1');
    expect((await again.store.load({ voters: [], learners: [] }, true)).lostLog).toBe(true);
    expect((await again.store.load({ voters: [], learners: [] })).lostLog).toBeUndefined();
  });
});
