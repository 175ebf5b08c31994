// Which messages of a Ready may leave before the batch is on disk (Raft thesis 10.2.1).
// The simulator drives the same rule with crashes between the early sends and the write.
import { describe, expect, it } from 'vitest';
import { Raft, sendableBeforePersist } from './raft.ts';
import { defaultOptions } from './script.ts';
import type { HardState, Message, Ready } from './types.ts';

function ready(messages: Message[], hardState: HardState | null = null): Ready {
  return { softState: null, hardState, snapshot: null, entries: [], messages, committed: [], readStates: [] };
}

const append: Message = { type: 'append', from: 'a', to: 'b', term: 3, logIndex: 9, logTerm: 3, entries: [{ index: 10, term: 3, type: 'normal', data: 'x' }], commit: 9 };
const heartbeat: Message = { type: 'heartbeat', from: 'a', to: 'c', term: 3, commit: 9 };
const durable = { term: 3, vote: 'a' };

describe('sendableBeforePersist', () => {
  it('lets a leader\'s appends and heartbeats of its durable term go first', () => {
    const batch = ready([append, heartbeat], { term: 3, vote: 'a', commit: 9 });
    expect(sendableBeforePersist(batch, durable)).toEqual([append, heartbeat]);
  });

  it('holds everything when the batch changes term or vote', () => {
    expect(sendableBeforePersist(ready([append], { term: 4, vote: 'a', commit: 9 }), durable)).toEqual([]);
    expect(sendableBeforePersist(ready([append], { term: 3, vote: null, commit: 9 }), durable)).toEqual([]);
  });

  it('holds messages of a term not yet on disk (a single voter that just won)', () => {
    expect(sendableBeforePersist(ready([{ ...append, term: 4 }]), durable)).toEqual([]);
  });

  it('holds messages whose commit covers the batch\'s own entries (a single voter commits what it appends)', () => {
    const entries = [{ index: 10, term: 3, type: 'normal' as const, data: 'x' }];
    const toLearner: Message = { ...append, commit: 10 };
    const batch: Ready = { ...ready([toLearner, heartbeat], { term: 3, vote: 'a', commit: 10 }), entries };
    expect(sendableBeforePersist(batch, durable)).toEqual([heartbeat]);
  });

  it('holds votes, vote requests and acknowledgements', () => {
    const held: Message[] = [
      { type: 'vote', from: 'a', to: 'b', term: 3, logIndex: 9, logTerm: 3 },
      { type: 'vote-response', from: 'a', to: 'b', term: 3, reject: false },
      { type: 'append-response', from: 'a', to: 'b', term: 3, reject: false, hintIndex: 10 },
      { type: 'heartbeat-response', from: 'a', to: 'b', term: 3 },
      { type: 'timeout-now', from: 'a', to: 'b', term: 3 },
    ];
    expect(sendableBeforePersist(ready([...held, heartbeat]), durable)).toEqual([heartbeat]);
  });
});

describe('Raft.brief', () => {
  it('agrees with status() on role, term, leader and commit, before and after an election', () => {
    const raft = new Raft(defaultOptions('a'), { hardState: { term: 2, vote: null, commit: 0 }, snapshot: null, entries: [], initialConfig: { voters: ['a'], learners: [] } });
    const pick = () => {
      const status = raft.status();
      return { role: status.role, term: status.term, leader: status.leader, commit: status.commit };
    };
    expect(raft.brief()).toEqual(pick());
    raft.campaign();
    while (raft.hasReady()) raft.advance(raft.ready());
    expect(raft.brief()).toEqual(pick());
    expect(raft.brief()).toMatchObject({ role: 'leader', leader: 'a', term: 3 });
    expect(raft.brief().commit).toBeGreaterThan(0);
  });
});
