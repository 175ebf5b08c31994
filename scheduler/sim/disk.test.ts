// The simulated disk and the small pieces around it: atomic batches, overwrite reports,
// compaction, restore copies; the KV model; clock drift bounds; the event agenda's order.
import { describe, expect, it } from 'vitest';
import type { Entry } from '../consensus/types.ts';
import { describeDriftBreach, drawTickPeriods, periodRatioMax } from './clock.ts';
import { SimDisk, StorageViolation } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { KvStateMachine, encodeSet } from './kv.ts';
import { Prng } from './prng.ts';

const config = { voters: ['n1'], learners: [] };
const entry = (index: number, term: number, data = `set k v${index}`): Entry => ({ index, term, type: 'normal', data });

describe('SimDisk', () => {
  it('appends, truncates on conflict and reports overwritten entries', () => {
    const disk = new SimDisk(config);
    expect(disk.persist(null, [entry(1, 1), entry(2, 1), entry(3, 1)], { term: 1, vote: 'n1', commit: 1 })).toEqual([]);
    const overwritten = disk.persist(null, [entry(2, 2)], null);
    expect(overwritten.map((old) => old.index)).toEqual([2, 3]);
    expect(disk.lastIndex).toBe(2);
    expect(disk.termAt(2)).toBe(2);
    expect(disk.hardState).toEqual({ term: 1, vote: 'n1', commit: 1 });
  });

  it('refuses gaps, non-contiguous batches and writes under the snapshot', () => {
    const disk = new SimDisk(config);
    expect(() => disk.persist(null, [entry(2, 1)], null)).toThrow(StorageViolation);
    expect(() => disk.persist(null, [entry(1, 1), entry(3, 1)], null)).toThrow(/not contiguous/);
    disk.persist(null, [entry(1, 1), entry(2, 1)], null);
    disk.compact({ index: 2, term: 1, config, data: '' });
    expect(() => disk.persist(null, [entry(2, 1)], null)).toThrow(/overwrite the snapshot/);
  });

  it('compacts, installs leader snapshots over the whole log, and restores copies', () => {
    const disk = new SimDisk(config);
    disk.persist(null, [entry(1, 1), entry(2, 1), entry(3, 1)], { term: 1, vote: null, commit: 3 });
    disk.compact({ index: 2, term: 1, config, data: 'image' });
    expect([disk.firstIndex, disk.lastIndex, disk.termAt(2), disk.entry(2)]).toEqual([3, 3, 1, undefined]);
    // A snapshot from the leader replaces the whole log, even entries after its index.
    disk.persist(null, [entry(4, 1), entry(5, 1)], null);
    disk.persist({ index: 4, term: 2, config, data: 'other' }, [], null);
    expect([disk.snapshotIndex, disk.lastIndex, disk.entry(5)]).toEqual([4, 4, undefined]);
    expect(() => disk.persist({ index: 3, term: 2, config, data: 'older' }, [], null)).toThrow(/not newer/);
    const restored = disk.restore();
    restored.entries.push(entry(9, 9));
    restored.hardState.term = 99;
    expect(disk.hardState.term).toBe(1);
    expect(disk.lastIndex).toBe(4);
  });
});

describe('KvStateMachine', () => {
  it('applies in order, refuses gaps and foreign commands, and round-trips its image', () => {
    const kv = new KvStateMachine();
    expect(kv.apply({ index: 1, term: 1, type: 'noop', data: '' })).toBeNull();
    expect(kv.apply({ index: 2, term: 1, type: 'normal', data: encodeSet('a', 'v1') })).toBeNull();
    expect(kv.apply({ index: 4, term: 1, type: 'normal', data: encodeSet('a', 'v2') })).toMatch(/in order/);
    expect(kv.apply({ index: 3, term: 1, type: 'normal', data: 'rm a' })).toMatch(/no client proposed/);
    const image = kv.image();
    const copy = new KvStateMachine();
    expect(copy.restore(image, 2)).toBeNull();
    expect([copy.get('a'), copy.appliedIndex, copy.chain]).toEqual(['v1', 2, kv.chain]);
    expect(copy.restore(image, 3)).toMatch(/as of 2/);
    expect(copy.restore('not json', 3)).toMatch(/not a state-machine image/);
  });

  it('gives different chains to different histories', () => {
    const a = new KvStateMachine();
    const b = new KvStateMachine();
    a.apply({ index: 1, term: 1, type: 'normal', data: encodeSet('a', 'v1') });
    b.apply({ index: 1, term: 2, type: 'normal', data: encodeSet('a', 'v1') });
    expect(a.chain).not.toBe(b.chain);
  });
});

describe('clocks', () => {
  it('draws tick periods within the drift bound and reports periods beyond it', () => {
    const bound = { electionTicks: 10, driftTicks: 2 };
    expect(periodRatioMax(bound)).toBeCloseTo(1.2);
    const random = new Prng(11);
    for (let run = 0; run < 200; run++) {
      const periods = drawTickPeriods(random, 5, 10_000, bound);
      expect(describeDriftBreach(periods, bound)).toBeNull();
      expect(Math.min(...periods)).toBeGreaterThanOrEqual(10_000);
    }
    expect(describeDriftBreach([10_000, 12_500], bound)).toMatch(/more than/);
    expect(() => periodRatioMax({ electionTicks: 10, driftTicks: 10 })).toThrow(RangeError);
  });
});

describe('EventQueue', () => {
  it('pops in time order, ties in insertion order, and stays bounded', () => {
    const queue = new EventQueue<string>(100);
    const random = new Prng(4);
    const pushed: [number, string][] = [];
    for (let count = 0; count < 100; count++) {
      const time = random.int(20);
      queue.push(time, `e${count}`);
      pushed.push([time, `e${count}`]);
    }
    expect(() => queue.push(0, 'overflow')).toThrow(/full/);
    const expected = [...pushed].sort((a, b) => a[0] - b[0]).map(([, name]) => name);
    const popped: string[] = [];
    for (let item = queue.pop(); item !== undefined; item = queue.pop()) popped.push(item.event);
    expect(popped).toEqual(expected);
  });
});
