// Raft.committedWhileWriting: a commit learned while a node's batch is being written is
// applied at once when its entries are already on this node's disk, never when they are
// in the batch being written. The simulator runs the same rule with every write taking
// time and crashes right after such an apply.
import { describe, expect, it } from 'vitest';
import { Harness } from './script.ts';
import type { Ready } from './types.ts';

const voters = { voters: ['a', 'b', 'c'], learners: [] };

function cluster(): Harness {
  const harness = new Harness();
  harness.quiet = true;
  for (const id of ['a', 'b', 'c']) harness.addNode(id, voters);
  harness.node('a').raft.campaign();
  harness.stabilize();
  expect(harness.node('a').raft.status().role).toBe('leader');
  return harness;
}

/** Takes `id`'s Ready and leaves it outstanding, as while its batch is being written. */
function startWrite(harness: Harness, id: string): Ready {
  const raft = harness.node(id).raft;
  expect(raft.hasReady()).toBe(true);
  return raft.ready();
}

/** Delivers the messages in flight to `to` only; the rest stay in flight. */
function deliverTo(harness: Harness, to: string): number {
  return harness.deliver(new Set([to]));
}

const dataOf = (entries: Array<{ data: string }>) => entries.map((entry) => entry.data);

/** a replicates x to b and c, which write it; their acknowledgements stay in flight (returned). */
function replicateX(harness: Harness) {
  harness.node('a').raft.propose('x');
  harness.processReady('a');
  deliverTo(harness, 'b');
  deliverTo(harness, 'c');
  harness.processReady('b');
  harness.processReady('c');
  return harness.network.splice(0);
}

describe('Raft.committedWhileWriting', () => {
  it('refuses to run outside a write', () => {
    expect(() => cluster().node('a').raft.committedWhileWriting()).toThrow(/outside a write/);
  });

  it('on a leader: hands out a commit learned during the next batch\'s write, not the batch\'s own entries', () => {
    const harness = cluster();
    const a = harness.node('a');
    const acks = replicateX(harness);
    // The leader starts writing y; the acknowledgements of x arrive meanwhile.
    a.raft.propose('y');
    const writingY = startWrite(harness, 'a');
    expect(dataOf(writingY.entries)).toEqual(['y']);
    expect(writingY.committed).toEqual([]);
    harness.network.push(...acks);
    deliverTo(harness, 'a');
    const yIndex = writingY.entries[0]!.index;
    expect(dataOf(a.raft.committedWhileWriting())).toEqual(['x']);
    expect(a.raft.status().applied).toBe(yIndex - 1);
    expect(a.raft.committedWhileWriting()).toEqual([]);
    // Both followers acknowledge y while the leader is still writing it: y commits, but it
    // is not on the leader's disk, so it is not handed out.
    harness.network.push(...writingY.messages);
    for (const id of ['b', 'c']) {
      deliverTo(harness, id);
      while (harness.processReady(id)) { /* write, acknowledge */ }
    }
    deliverTo(harness, 'a');
    expect(a.raft.status().commit).toBe(yIndex);
    expect(a.raft.committedWhileWriting()).toEqual([]);
    // Once written, the next Ready hands out y, and x only once.
    a.raft.advance(writingY);
    expect(dataOf(a.raft.ready().committed)).toEqual(['y']);
  });

  it('on a follower: hands out a commit of entries already on its disk, never of the batch being written', () => {
    const harness = cluster();
    const a = harness.node('a');
    const b = harness.node('b');
    const acks = replicateX(harness);
    // a replicates z to b, which starts writing it; then a hears the acknowledgements of x
    // and tells b, still writing z, that x is committed.
    a.raft.propose('z');
    harness.processReady('a');
    deliverTo(harness, 'b');
    const writingZ = startWrite(harness, 'b');
    expect(dataOf(writingZ.entries)).toEqual(['z']);
    harness.network.push(...acks);
    deliverTo(harness, 'a');
    harness.processReady('a');
    deliverTo(harness, 'b');
    expect(dataOf(b.raft.committedWhileWriting())).toEqual(['x']);
    // z commits too (a and c), but b is still writing it: not handed out until written.
    harness.network = harness.network.filter((message) => message.to !== 'b');
    deliverTo(harness, 'c');
    while (harness.processReady('c')) { /* write, acknowledge */ }
    deliverTo(harness, 'a');
    harness.processReady('a');
    deliverTo(harness, 'b');
    expect(b.raft.status().commit).toBe(writingZ.entries[0]!.index);
    expect(b.raft.committedWhileWriting()).toEqual([]);
    b.raft.advance(writingZ);
    expect(dataOf(b.raft.ready().committed)).toEqual(['z']);
  });

  it('hands out nothing while a snapshot from the leader is being written', () => {
    const harness = cluster();
    const a = harness.node('a');
    // c misses entries that a then compacts away: a sends it a snapshot.
    harness.partition([['a', 'b'], ['c']]);
    for (let n = 0; n < 5; n += 1) a.raft.propose(`e${n}`);
    harness.stabilize();
    const applied = a.raft.status().applied;
    a.raft.compact(applied, 'image');
    harness.heal();
    harness.tick('a', 3);
    for (let round = 0; round < 10; round += 1) {
      while (harness.processReady('a')) { /* send */ }
      deliverTo(harness, 'c');
      if (harness.node('c').raft.hasReady()) {
        const ready = harness.node('c').raft.ready();
        if (ready.snapshot !== null) {
          expect(harness.node('c').raft.committedWhileWriting()).toEqual([]);
          return;
        }
        harness.node('c').raft.advance(ready);
        harness.network.push(...ready.messages);
      }
      deliverTo(harness, 'a');
    }
    throw new Error('c never received a snapshot');
  });
});
