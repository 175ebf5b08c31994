// The checker on hand-made histories: each invariant accepts a correct history and throws
// on the smallest history that breaks it, so a silent checker cannot pass unnoticed.
import { describe, expect, it } from 'vitest';
import type { Entry } from '../consensus/types.ts';
import { Checker, InvariantViolation } from './checker.ts';
import { SimDisk } from './disk.ts';
import { chainStep, encodeSet } from './kv.ts';
import { fnvOffset } from './hash.ts';

const config = { voters: ['n1', 'n2', 'n3'], learners: [] };
const entry = (index: number, term: number, data = encodeSet('k', `v${index}t${term}`)): Entry => ({ index, term, type: 'normal', data });

function diskWith(entries: Entry[], commit = 0, term = 1): SimDisk {
  const disk = new SimDisk(config);
  disk.persist(null, entries, { term, vote: null, commit });
  return disk;
}

function violation(action: () => void): InvariantViolation {
  try {
    action();
  } catch (error) {
    if (error instanceof InvariantViolation) return error;
    throw error;
  }
  throw new Error('expected an invariant violation, got none');
}

describe('Checker', () => {
  it('allows one leader per term and refuses a second', () => {
    const checker = new Checker();
    const disk = diskWith([]);
    expect(checker.onLeader('n1', 1, disk)).toBe(true);
    expect(checker.onLeader('n1', 1, disk)).toBe(false);
    expect(checker.onLeader('n2', 2, disk)).toBe(true);
    expect(violation(() => checker.onLeader('n3', 2, disk)).invariant).toBe('election safety');
  });

  it('refuses a leader that lacks a committed entry', () => {
    const checker = new Checker();
    const full = diskWith([entry(1, 1), entry(2, 1)], 2);
    checker.onPersisted('n1', [entry(1, 1), entry(2, 1)], [], full);
    expect(checker.commitIndex).toBe(2);
    expect(checker.onLeader('n2', 2, diskWith([entry(1, 1), entry(2, 1), entry(3, 2)]))).toBe(true);
    expect(violation(() => checker.onLeader('n3', 3, diskWith([entry(1, 1)]))).invariant).toBe('leader completeness');
  });

  it('lets a stale leader of an older term lack what a newer term committed', () => {
    const checker = new Checker();
    // Entry 2 became committed while its committer was in term 4 ...
    checker.onPersisted('n1', [entry(1, 1), entry(2, 4)], [], diskWith([entry(1, 1), entry(2, 4)], 2, 4));
    // ... and votes granted long before reach n2 only now: it leads term 3 without entry 2.
    expect(checker.onLeader('n2', 3, diskWith([entry(1, 1)]))).toBe(true);
    expect(violation(() => checker.onLeader('n3', 5, diskWith([entry(1, 1)]))).invariant).toBe('leader completeness');
  });

  it('refuses two nodes holding leases at the same time, and accepts handovers', () => {
    const checker = new Checker();
    checker.onLease('n1', true, 1, 100);
    checker.onLease('n1', true, 1, 200);
    checker.onLease('n1', false, 1, 300);
    checker.onLease('n2', true, 2, 300);
    checker.onCrash('n2');
    checker.onLease('n3', true, 3, 400);
    expect(checker.counters.leaseIntervals).toBe(3);
    expect(violation(() => checker.onLease('n1', true, 4, 450)).invariant).toBe('lease exclusivity');
  });

  it('refuses the same index and term holding different entries, or different predecessors', () => {
    const checker = new Checker();
    checker.onPersisted('n1', [entry(1, 1), entry(2, 1)], [], diskWith([entry(1, 1), entry(2, 1)]));
    checker.onPersisted('n2', [entry(1, 1), entry(2, 1)], [], diskWith([entry(1, 1), entry(2, 1)]));
    expect(violation(() => checker.onPersisted('n3', [entry(2, 1, 'set k other')], [], diskWith([entry(1, 1), entry(2, 1, 'set k other')]))).invariant).toBe('log matching');
    const otherPrefix = [entry(1, 2, 'set k x'), entry(2, 1)];
    expect(violation(() => checker.onPersisted('n4', otherPrefix.slice(1), [], diskWith(otherPrefix))).invariant).toBe('log matching');
  });

  it('refuses overwriting a committed entry and a commit index that goes back', () => {
    const checker = new Checker();
    const disk = diskWith([entry(1, 1), entry(2, 1)], 2);
    checker.onPersisted('n1', [entry(1, 1), entry(2, 1)], [], disk);
    expect(violation(() => checker.onPersisted('n2', [entry(2, 2)], [entry(2, 1)], diskWith([entry(1, 1), entry(2, 2)]))).invariant).toBe('committed entries are never lost');
    expect(violation(() => checker.onCommit('n1', diskWith([entry(1, 1), entry(2, 1)], 1))).invariant).toBe('commit index is monotonic');
  });

  it('refuses a node committing a different entry at a committed index, or beyond its log', () => {
    const checker = new Checker();
    checker.onPersisted('n1', [entry(1, 1)], [], diskWith([entry(1, 1)], 1));
    expect(violation(() => checker.onPersisted('n2', [entry(1, 2)], [], diskWith([entry(1, 2)], 1, 2))).invariant).toBe('committed entries never change');
    expect(violation(() => checker.onCommit('n3', diskWith([entry(1, 1)], 5))).invariant).toBe('commit within log');
  });

  it('checks applied entries against the committed log and the applied history', () => {
    const checker = new Checker();
    const first = entry(1, 1);
    checker.onPersisted('n1', [first], [], diskWith([first], 1));
    const chain = chainStep(fnvOffset, first);
    checker.onApplied('n1', first, chain, 1);
    checker.onApplied('n2', first, chain, 1);
    expect(violation(() => checker.onApplied('n3', first, chain + 1, 1)).invariant).toBe('state machine safety');
    expect(violation(() => checker.onApplied('n3', entry(1, 1, 'set k other'), chain, 1)).invariant).toBe('state machine safety');
    expect(violation(() => checker.onApplied('n3', entry(2, 1), chain, 1)).invariant).toBe('apply only committed');
    expect(violation(() => checker.onApplied('n3', entry(2, 1), chain, 2)).invariant).toBe('apply only committed');
  });

  it('checks snapshots against the committed log and the applied history', () => {
    const checker = new Checker();
    const first = entry(1, 1);
    checker.onPersisted('n1', [first], [], diskWith([first], 1));
    const chain = chainStep(fnvOffset, first);
    checker.onApplied('n1', first, chain, 1);
    checker.onSnapshotInstalled('n2', { index: 1, term: 1, config, data: '' }, chain);
    expect(violation(() => checker.onSnapshotInstalled('n2', { index: 1, term: 2, config, data: '' }, chain)).invariant).toBe('snapshot consistency');
    expect(violation(() => checker.onSnapshotInstalled('n2', { index: 1, term: 1, config, data: '' }, chain + 1)).invariant).toBe('snapshot consistency');
  });

  it('accepts linearizable reads and refuses stale or uncommitted ones', () => {
    const checker = new Checker();
    const write1 = entry(1, 1, encodeSet('a', 'v1'));
    const write2 = entry(2, 1, encodeSet('a', 'v2'));
    checker.onPersisted('n1', [write1, write2], [], diskWith([write1, write2], 2));
    // Before any acknowledgement, any committed value (or none) is fine.
    checker.onReadStarted('r1', 'a', 'n1', 10);
    checker.onReadServed('r1', undefined, 20);
    checker.onWriteAcknowledged('a', 'v1');
    checker.onReadStarted('r2', 'a', 'n1', 30);
    checker.onReadServed('r2', 'v2', 40);
    // r2 observed v2, so a read that starts after it finished must not go back to v1.
    checker.onReadStarted('r3', 'a', 'n2', 50);
    expect(violation(() => checker.onReadServed('r3', 'v1', 60)).invariant).toBe('linearizable reads');
    checker.onReadStarted('r4', 'a', 'n2', 70);
    expect(violation(() => checker.onReadServed('r4', 'never-written', 80)).invariant).toBe('linearizable reads');
    checker.onReadStarted('r5', 'b', 'n2', 90);
    checker.onReadAbandoned('r5');
    expect(checker.counters.readsChecked).toBe(2);
  });

  it('refuses acknowledging a write that is not committed', () => {
    const checker = new Checker();
    expect(violation(() => checker.onWriteAcknowledged('a', 'v9')).invariant).toBe('acknowledged writes are committed');
  });

  it('bounds the reads it tracks', () => {
    const checker = new Checker({ pendingReadsMax: 2 });
    expect(checker.onReadStarted('r1', 'a', 'n1', 0)).toBe(true);
    expect(checker.onReadStarted('r2', 'a', 'n1', 0)).toBe(true);
    expect(checker.onReadStarted('r3', 'a', 'n1', 0)).toBe(false);
  });
});
