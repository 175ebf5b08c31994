// The Raft paper's rules, one test each (in the spirit of etcd's raft_paper_test.go):
// §5.1 terms, §5.2 election, §5.3 log replication, §5.4 safety (election restriction,
// Figure 8), Figure 7 log repair, plus this core's bounds (batching, pipelining, limits).
import { describe, expect, it } from 'vitest';
import { raftPendingReadsMax } from '../../protocol/limits.ts';
import { Raft, committedEntriesPerReadyMax, messageProblem, uncommittedBytesMax } from './raft.ts';
import { Harness, defaultOptions } from './script.ts';
import type { Entry, Message, NodeId, RaftOptions, RaftRestore, Ready } from './types.ts';

const voters3 = ['1', '2', '3'];

function makeRaft(id: NodeId, voters: NodeId[], overrides: Partial<RaftOptions> = {}, restore: Partial<RaftRestore> = {}): Raft {
  return new Raft({ ...defaultOptions(id), ...overrides, id }, {
    hardState: restore.hardState ?? { term: 0, vote: null, commit: 0 },
    snapshot: restore.snapshot ?? null,
    entries: restore.entries ?? [],
    initialConfig: restore.initialConfig ?? { voters, learners: [] },
    ...(restore.applied === undefined ? {} : { applied: restore.applied }),
    ...(restore.lostLog === undefined ? {} : { lostLog: restore.lostLog }),
  });
}

/** Runs one Ready through (nothing to persist in memory-only tests) and returns it. */
function drainReady(raft: Raft): Ready | null {
  if (!raft.hasReady()) return null;
  const ready = raft.ready();
  raft.advance(ready);
  return ready;
}

function drainMessages(raft: Raft): Message[] {
  const messages: Message[] = [];
  for (let ready = drainReady(raft); ready !== null; ready = drainReady(raft)) messages.push(...ready.messages);
  return messages;
}

/** Makes `raft` leader of `voters` by granting it every vote; returns it with messages drained. */
function electLeader(raft: Raft, voters: NodeId[]): Raft {
  raft.campaign();
  const term = raft.status().term;
  drainMessages(raft);
  for (const voter of voters) {
    if (voter === raft.id) continue;
    raft.step({ type: 'vote-response', from: voter, to: raft.id, term, reject: false });
  }
  expect(raft.status().role).toBe('leader');
  drainMessages(raft);
  return raft;
}

function entriesOfTerms(terms: number[]): Entry[] {
  return terms.map((term, offset) => ({ term, index: offset + 1, type: 'normal', data: `i${offset + 1}t${term}` }));
}

/** The leader's acknowledgement of everything it sent: echo context, report match. */
function acceptAll(leader: Raft, messages: Message[]): void {
  for (const message of messages) {
    if (message.type !== 'append') continue;
    const match = (message.logIndex ?? 0) + (message.entries?.length ?? 0);
    leader.step({ type: 'append-response', from: message.to, to: leader.id, term: message.term, reject: false, hintIndex: match, context: message.context });
  }
}

describe('§5.1 terms', () => {
  it.each(['follower', 'candidate', 'leader'] as const)('a %s that sees a higher term adopts it and becomes follower', (role) => {
    const raft = makeRaft('1', voters3);
    if (role === 'candidate') raft.campaign();
    if (role === 'leader') electLeader(raft, voters3);
    const term = raft.status().term;
    raft.step({ type: 'append', from: '2', to: '1', term: term + 1, logIndex: 0, logTerm: 0, entries: [], commit: 0 });
    const status = raft.status();
    expect(status.role).toBe('follower');
    expect(status.term).toBe(term + 1);
    expect(status.leader).toBe('2');
  });

  it('ignores messages of a lower term', () => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 2, vote: null, commit: 0 } });
    raft.step({ type: 'append', from: '2', to: '1', term: 1, logIndex: 0, logTerm: 0, entries: [{ term: 1, index: 1, type: 'normal', data: 'x' }], commit: 0 });
    expect(raft.status()).toMatchObject({ term: 2, lastIndex: 0, leader: null });
    expect(drainMessages(raft)).toEqual([]);
  });

  it('tells a stale leader the newer term when pre-vote or check-quorum is on', () => {
    const raft = makeRaft('1', voters3, { preVote: true }, { hardState: { term: 2, vote: null, commit: 0 } });
    raft.step({ type: 'heartbeat', from: '2', to: '1', term: 1, commit: 0 });
    expect(drainMessages(raft)).toEqual([{ type: 'append-response', from: '1', to: '2', term: 2 }]);
  });

  it('starts as a follower', () => {
    expect(makeRaft('1', voters3).status()).toMatchObject({ role: 'follower', term: 0, leader: null });
  });
});

describe('§5.2 leader election', () => {
  it('a leader sends heartbeats every heartbeatTicks', () => {
    const raft = electLeader(makeRaft('1', voters3, { heartbeatTicks: 3 }), voters3);
    raft.tick();
    raft.tick();
    expect(drainMessages(raft).filter((message) => message.type === 'heartbeat')).toEqual([]);
    raft.tick();
    const heartbeats = drainMessages(raft).filter((message) => message.type === 'heartbeat');
    expect(heartbeats.map((message) => message.to).sort()).toEqual(['2', '3']);
    expect(heartbeats.every((message) => message.term === 1)).toBe(true);
  });

  it.each(['follower', 'candidate'] as const)('a %s that hears nothing for an election timeout starts an election', (role) => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 1, vote: null, commit: 0 }, entries: entriesOfTerms([1]) });
    if (role === 'candidate') {
      raft.campaign();
      drainMessages(raft);
    }
    const term = raft.status().term;
    for (let tick = 0; tick < 10; tick += 1) raft.tick();
    const status = raft.status();
    expect(status).toMatchObject({ role: 'candidate', term: term + 1, vote: '1' });
    const votes = drainMessages(raft).filter((message) => message.type === 'vote');
    expect(votes.map((message) => [message.to, message.term, message.logIndex, message.logTerm])).toEqual([
      ['2', term + 1, 1, 1], ['3', term + 1, 1, 1],
    ]);
  });

  it.each([
    // [cluster size, granted (besides self), rejected, expected role]
    [1, 0, 0, 'leader'],
    [3, 1, 0, 'leader'],
    [3, 2, 0, 'leader'],
    [5, 2, 0, 'leader'],
    [5, 1, 0, 'candidate'],
    [5, 1, 2, 'candidate'],
    [5, 0, 3, 'follower'],
    [3, 0, 2, 'follower'],
  ] as const)('in a cluster of %i, %i grants and %i rejections make a %s', (size, granted, rejected, role) => {
    const voters = Array.from({ length: size }, (_, index) => String(index + 1));
    const raft = makeRaft('1', voters);
    raft.campaign();
    const others = voters.slice(1);
    others.slice(0, granted).forEach((voter) => raft.step({ type: 'vote-response', from: voter, to: '1', term: 1, reject: false }));
    others.slice(granted, granted + rejected).forEach((voter) => raft.step({ type: 'vote-response', from: voter, to: '1', term: 1, reject: true }));
    expect(raft.status().role).toBe(role);
  });

  it.each([
    // [already voted for, candidate, rejected?]
    [null, '2', false],
    [null, '3', false],
    ['2', '2', false],
    ['3', '3', false],
    ['2', '3', true],
    ['3', '2', true],
  ] as const)('a follower that voted for %s answers %s: rejected=%s (one vote per term)', (vote, candidate, rejected) => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 1, vote, commit: 0 } });
    raft.step({ type: 'vote', from: candidate, to: '1', term: 1, logIndex: 0, logTerm: 0 });
    const [response] = drainMessages(raft);
    expect(response).toMatchObject({ type: 'vote-response', to: candidate, term: 1, reject: rejected });
  });

  it('a candidate that hears from a leader of its term steps back', () => {
    const raft = makeRaft('1', voters3);
    raft.campaign();
    raft.step({ type: 'append', from: '2', to: '1', term: 1, logIndex: 0, logTerm: 0, entries: [], commit: 0 });
    expect(raft.status()).toMatchObject({ role: 'follower', term: 1, leader: '2' });
  });

  it('election timeouts are drawn from [electionTicks, 2*electionTicks)', () => {
    for (let draw = 0; draw < 10; draw += 1) {
      const raft = makeRaft('1', voters3, { randomInt: () => draw });
      let ticks = 0;
      while (raft.status().role === 'follower') {
        raft.tick();
        ticks += 1;
        expect(ticks).toBeLessThan(20);
      }
      expect(ticks).toBe(10 + draw);
    }
  });

  describe('a split vote is settled in a tick or two, not another election timeout', () => {
    // The daemon's settings: pre-vote and check-quorum on. Node 1, the leader, is dead; 2 and
    // 3 time out together, grant each other's pre-votes and split the vote of term 2.
    const options = { preVote: true, checkQuorum: true };
    function splitBetween(log2: number[], log3: number[], overrides: Partial<RaftOptions> = options): Map<NodeId, Raft> {
      const nodes = new Map<NodeId, Raft>([
        ['2', makeRaft('2', voters3, overrides, { hardState: { term: 1, vote: null, commit: 0 }, entries: entriesOfTerms(log2) })],
        ['3', makeRaft('3', voters3, overrides, { hardState: { term: 1, vote: null, commit: 0 }, entries: entriesOfTerms(log3) })],
      ]);
      for (const raft of nodes.values()) for (let tick = 0; tick < 10; tick += 1) raft.tick();
      exchange(nodes);
      expect([...nodes.values()].map((raft) => raft.status().role)).toEqual(['candidate', 'candidate']);
      return nodes;
    }
    /** Delivers messages between the live nodes until none is left (those to node 1 are lost). */
    function exchange(nodes: Map<NodeId, Raft>): void {
      for (let round = 0; round < 10; round += 1) {
        const messages = [...nodes.values()].flatMap((raft) => drainMessages(raft));
        if (messages.length === 0) return;
        for (const message of messages) nodes.get(message.to)?.step(message);
      }
    }
    /** Ticks both nodes, delivering messages after each tick, until one leads; returns the ticks taken. */
    function ticksToLeader(nodes: Map<NodeId, Raft>): { ticks: number; leader: NodeId; term: number } {
      for (let ticks = 1; ticks <= 40; ticks += 1) {
        for (const raft of nodes.values()) raft.tick();
        exchange(nodes);
        const leader = [...nodes.values()].find((raft) => raft.status().role === 'leader');
        if (leader !== undefined) return { ticks, leader: leader.id, term: leader.status().term };
      }
      throw new Error('no leader after 40 ticks');
    }

    it('with equal logs the smaller id retries at once and wins the next term', () => {
      const nodes = splitBetween([1, 1], [1, 1]);
      expect(ticksToLeader(nodes)).toEqual({ ticks: 1, leader: '2', term: 3 });
    });

    it('the candidate whose log is ahead retries first, whatever the ids', () => {
      // With pre-vote the one behind never becomes a candidate; without it, it splits the vote.
      const nodes = splitBetween([1], [1, 1], { preVote: false, checkQuorum: true });
      expect(ticksToLeader(nodes)).toEqual({ ticks: 1, leader: '3', term: 3 });
    });

    it('without the rival\'s request (lost), both wait a normal timeout, split again, and settle that one at once', () => {
      const nodes = new Map<NodeId, Raft>([
        ['2', makeRaft('2', voters3, options, { hardState: { term: 1, vote: null, commit: 0 }, entries: entriesOfTerms([1]) })],
        ['3', makeRaft('3', voters3, options, { hardState: { term: 1, vote: null, commit: 0 }, entries: entriesOfTerms([1]) })],
      ]);
      for (const raft of nodes.values()) for (let tick = 0; tick < 10; tick += 1) raft.tick();
      // Pre-votes and their grants cross, then each vote request is lost: nobody learns of the split.
      for (let round = 0; round < 2; round += 1) {
        const messages = [...nodes.values()].flatMap((raft) => drainMessages(raft));
        for (const message of messages) nodes.get(message.to)?.step(message);
      }
      const lost = [...nodes.values()].flatMap((raft) => drainMessages(raft));
      expect(lost.filter((message) => message.to !== '1').map((message) => [message.type, message.term])).toEqual([['vote', 2], ['vote', 2]]);
      expect([...nodes.values()].map((raft) => raft.status().role)).toEqual(['candidate', 'candidate']);
      expect(ticksToLeader(nodes)).toEqual({ ticks: 11, leader: '2', term: 4 });
    });
  });

  it('refuses a randomInt outside [0, n) as a broken invariant', () => {
    expect(() => makeRaft('1', voters3, { randomInt: (n) => n })).toThrow(/randomInt/);
  });
});

describe('§5.3 log replication', () => {
  it('a leader appends a proposal and sends it with the previous index and term', () => {
    const raft = electLeader(makeRaft('1', voters3), voters3);
    // Follower 2 acknowledged the no-op (replicate state); 3 has not (probe, one append in flight).
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    drainMessages(raft);
    const result = raft.propose('some data');
    expect(result).toEqual({ ok: true, index: 2, term: 1 });
    const appends = drainMessages(raft).filter((message) => message.type === 'append');
    expect(appends.map((message) => [message.to, message.logIndex, message.logTerm, message.commit, message.entries?.map((entry) => entry.data)])).toEqual([
      ['2', 1, 1, 1, ['some data']],
    ]);
  });

  it('a leader commits an entry once a majority stored it and hands it out to apply', () => {
    const raft = makeRaft('1', voters3);
    raft.campaign();
    drainMessages(raft);
    raft.step({ type: 'vote-response', from: '2', to: '1', term: 1, reject: false });
    const first = drainReady(raft) as Ready;
    expect(raft.status().commit).toBe(0);
    acceptAll(raft, first.messages.filter((message) => message.to === '2'));
    expect(raft.status().commit).toBe(1);
    const ready = drainReady(raft) as Ready;
    expect(ready.committed.map((entry) => entry.index)).toEqual([1]);
    expect(ready.hardState?.commit).toBe(1);
  });

  it.each([
    // [cluster size, acknowledgements (besides self), committed?]
    [1, 0, true],
    [3, 0, false],
    [3, 1, true],
    [3, 2, true],
    [5, 1, false],
    [5, 2, true],
    [5, 4, true],
  ] as const)('in a cluster of %i, %i acknowledgements commit: %s', (size, acks, committed) => {
    const voters = Array.from({ length: size }, (_, index) => String(index + 1));
    const raft = electLeader(makeRaft('1', voters), voters);
    const noopIndex = 1;
    voters.slice(1, 1 + acks).forEach((voter) => {
      raft.step({ type: 'append-response', from: voter, to: '1', term: 1, reject: false, hintIndex: noopIndex });
    });
    expect(raft.status().commit).toBe(committed ? noopIndex : 0);
  });

  it('committing an entry of the current term commits all entries before it', () => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 2, vote: null, commit: 0 }, entries: entriesOfTerms([1, 2]) });
    electLeader(raft, voters3);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 3, reject: false, hintIndex: 3 });
    const ready = drainReady(raft) as Ready;
    expect(ready.committed.map((entry) => [entry.index, entry.term])).toEqual([[1, 1], [2, 2], [3, 3]]);
  });

  it('a follower commits up to the leader commit, but never past the entries the append matched', () => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 1, vote: null, commit: 0 } });
    raft.step({ type: 'append', from: '2', to: '1', term: 1, logIndex: 0, logTerm: 0, entries: entriesOfTerms([1, 1]), commit: 5 });
    expect(raft.status().commit).toBe(2);
    const ready = drainReady(raft) as Ready;
    expect(ready.entries.map((entry) => entry.index)).toEqual([1, 2]);
    expect(ready.committed.map((entry) => entry.index)).toEqual([1, 2]);
    expect(ready.messages).toMatchObject([{ type: 'append-response', to: '2', reject: false, hintIndex: 2 }]);
  });

  it.each([
    // Follower log terms [1, 2]; [append prev term, prev index, rejected?, hint term, hint index]
    // An accepted append reports as matched only what it proved: prev index + its entries.
    [0, 0, false, undefined, 0],
    [1, 1, false, undefined, 1],
    [2, 2, false, undefined, 2],
    [1, 2, true, 2, 2], // conflicting term 2 starts at index 2
    [3, 3, true, 0, 3], // our log is too short: probe from our end
  ] as const)('log matching: append after %i/%i rejected=%s hint=%s/%s', (logTerm, logIndex, rejected, hintTerm, hintIndex) => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 2, vote: null, commit: 0 }, entries: entriesOfTerms([1, 2]) });
    raft.step({ type: 'append', from: '2', to: '1', term: 2, logIndex, logTerm, entries: [], commit: 0 });
    const [response] = drainMessages(raft);
    expect(response).toMatchObject({ type: 'append-response', reject: rejected, hintIndex });
    if (rejected) expect(response?.hintTerm).toBe(hintTerm);
  });

  it.each([
    // [prev index, prev term, new entry terms, resulting log terms]
    [2, 2, [3], [1, 2, 3]],
    [1, 1, [3, 4], [1, 3, 4]],
    [0, 0, [1], [1, 2]], // an entry we already hold changes nothing
    [0, 0, [1, 2, 3], [1, 2, 3]],
  ] as const)('a follower after %i/%i appending %j holds %j (conflicts are truncated)', (logIndex, logTerm, terms, expected) => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 4, vote: null, commit: 0 }, entries: entriesOfTerms([1, 2]) });
    const entries = terms.map((term, offset) => ({ term, index: logIndex + 1 + offset, type: 'normal' as const, data: 'new' }));
    raft.step({ type: 'append', from: '2', to: '1', term: 4, logIndex, logTerm, entries, commit: 0 });
    // What the follower persists: the stored log with the Ready's entries written over it.
    let stored = entriesOfTerms([1, 2]);
    const ready = drainReady(raft);
    if (ready !== null && ready.entries.length > 0) {
      const first = (ready.entries[0] as Entry).index;
      stored = stored.filter((entry) => entry.index < first).concat(ready.entries);
    }
    expect(stored.map((entry) => entry.term)).toEqual(expected);
    expect(raft.status().lastIndex).toBe(expected.length);
  });
});

describe('Figure 7: the leader brings any follower log in line with its own', () => {
  const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const cases: [string, number[], number][] = [
    // [case, follower log terms, at most this many rejections]
    ['a', [1, 1, 1, 4, 4, 5, 5, 6, 6], 1],
    ['b', [1, 1, 1, 4], 1],
    ['c', [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0],
    ['d', [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 1],
    ['e', [1, 1, 1, 4, 4, 4, 4], 2],
    ['f', [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 2],
  ];
  it.each(cases)('case (%s) converges with fast back-off', (_name, followerTerms, rejectionsMax) => {
    const harness = new Harness();
    const config = { voters: voters3, learners: [] };
    const lastFollowerTerm = followerTerms[followerTerms.length - 1] as number;
    harness.addNode('1', config, {}, { hardState: { term: 7, vote: null, commit: 0 }, entries: entriesOfTerms(leaderTerms) });
    harness.addNode('2', config, {}, { hardState: { term: Math.max(7, lastFollowerTerm), vote: null, commit: 0 }, entries: entriesOfTerms(followerTerms) });
    harness.addNode('3', config, {}, { hardState: { term: 7, vote: null, commit: 0 }, entries: entriesOfTerms(leaderTerms) });
    // The follower must not vote in this election (case d would refuse anyway).
    harness.partition([['1', '3'], ['2']]);
    harness.node('1').raft.campaign();
    harness.stabilize();
    expect(harness.node('1').raft.status().role).toBe('leader');
    harness.takeOutput();
    harness.heal();
    for (let tick = 0; tick < 2; tick += 1) {
      harness.tick('1', 1);
      harness.stabilize();
    }
    const rejections = harness.takeOutput().filter((line) => line.startsWith('2->1 append-response') && line.includes('rejected'));
    expect(rejections.length).toBeLessThanOrEqual(rejectionsMax);
    const leaderLog = harness.node('1').storage.entries.map((entry) => [entry.index, entry.term]);
    expect(harness.node('2').storage.entries.map((entry) => [entry.index, entry.term])).toEqual(leaderLog);
    expect(harness.node('2').raft.status().commit).toBe(11);
  });
});

describe('§5.4 safety', () => {
  it.each([
    // Voter's log terms [1, 2] (last 2/2); [candidate last term, last index, granted?]
    [2, 2, true],
    [2, 3, true],
    [2, 1, false], // same last term, shorter log
    [3, 1, true], // higher last term wins regardless of length
    [1, 5, false], // lower last term loses regardless of length
  ] as const)('election restriction: candidate with last %i/%i gets the vote: %s', (logTerm, logIndex, granted) => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 2, vote: null, commit: 0 }, entries: entriesOfTerms([1, 2]) });
    raft.step({ type: 'vote', from: '2', to: '1', term: 3, logIndex, logTerm });
    const [response] = drainMessages(raft);
    expect(response).toMatchObject({ type: 'vote-response', reject: !granted });
  });

  it('Figure 8: a leader never commits an entry of an earlier term by counting replicas', () => {
    // Leader of term 3 holds entries of terms 1 and 2 plus its own no-op at index 3.
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 2, vote: null, commit: 0 }, entries: entriesOfTerms([1, 2]) });
    electLeader(raft, voters3);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 3, reject: false, hintIndex: 1 });
    expect(raft.status().commit).toBe(0);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 3, reject: false, hintIndex: 2 });
    expect(raft.status().commit).toBe(0);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 3, reject: false, hintIndex: 3 });
    expect(raft.status().commit).toBe(3);
  });

  it('Figure 8 as a run: an old-term entry on a majority is not committed, and is indeed overwritten', () => {
    // Figure 8 (c): S1 leads term 4 holding entry 2 of term 2, which S2 and S3 also hold;
    // S5 holds entry 2 of term 3. Entry 2/2 is on a majority but must not count as committed.
    const harness = new Harness();
    const config = { voters: ['1', '2', '3', '4', '5'], learners: [] };
    const logs: [NodeId, number[], number][] = [['1', [1, 2], 3], ['2', [1, 2], 3], ['3', [1, 2], 3], ['4', [1], 3], ['5', [1, 3], 3]];
    for (const [id, terms, term] of logs) harness.addNode(id, config, {}, { hardState: { term, vote: null, commit: 1 }, entries: entriesOfTerms(terms) });
    harness.partition([['1', '2', '3'], ['4'], ['5']]);
    harness.node('1').raft.campaign();
    harness.processReady('1');
    harness.deliver();
    harness.processReady('2');
    harness.processReady('3');
    harness.deliver();
    expect(harness.node('1').raft.status()).toMatchObject({ role: 'leader', term: 4, commit: 1 });
    // S1 crashes before any append is acknowledged: nothing beyond index 1 is committed.
    harness.processReady('1');
    harness.network = [];
    expect(harness.node('1').raft.status().commit).toBe(1);
    // S5 is elected (its last term 3 beats everyone's 2) and overwrites entry 2 everywhere.
    harness.partition([['1'], ['2', '3', '4', '5']]);
    harness.node('5').raft.campaign(); // term 4: S2 and S3 already voted in term 4
    harness.stabilize();
    harness.node('5').raft.campaign(); // term 5
    harness.stabilize();
    expect(harness.node('5').raft.status()).toMatchObject({ role: 'leader', term: 5 });
    harness.heal();
    harness.tick('5', 1);
    harness.stabilize();
    const expectedLog = harness.node('5').storage.entries.map((entry) => `${entry.index}/${entry.term}`);
    expect(expectedLog.slice(0, 2)).toEqual(['1/1', '2/3']);
    for (const id of ['1', '2', '3', '4']) {
      expect(harness.node(id).storage.entries.map((entry) => `${entry.index}/${entry.term}`)).toEqual(expectedLog);
      expect(harness.node(id).applied).not.toContain('i2t2');
    }
  });
});

describe('bounds', () => {
  it('batches at most maxEntriesPerAppend entries and maxBytesPerAppend bytes per append', () => {
    const raft = electLeader(makeRaft('1', voters3, { maxEntriesPerAppend: 3, maxBytesPerAppend: 200, maxInflightAppends: 100 }), voters3);
    // Bring follower 2 into replicate state.
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    drainMessages(raft);
    for (let index = 0; index < 7; index += 1) expect(raft.propose('x'.repeat(10)).ok).toBe(true);
    const toTwo = drainMessages(raft).filter((message) => message.type === 'append' && message.to === '2');
    expect(toTwo.map((message) => message.entries?.length)).toEqual([3, 3, 1]);
    for (let index = 0; index < 3; index += 1) expect(raft.propose('y'.repeat(80)).ok).toBe(true);
    const big = drainMessages(raft).filter((message) => message.type === 'append' && message.to === '2');
    // 80 bytes + 32 framing each: two would exceed 200 bytes.
    expect(big.map((message) => message.entries?.length)).toEqual([1, 1, 1]);
  });

  it('pipelines at most maxInflightAppends appends per follower, then waits for acknowledgements', () => {
    const raft = electLeader(makeRaft('1', voters3, { maxEntriesPerAppend: 1, maxInflightAppends: 2 }), voters3);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    drainMessages(raft);
    for (let index = 0; index < 5; index += 1) raft.propose(`p${index}`);
    const first = drainMessages(raft).filter((message) => message.type === 'append' && message.to === '2');
    expect(first.map((message) => message.entries?.[0]?.index)).toEqual([2, 3]);
    expect(raft.status().progress['2']).toMatchObject({ state: 'replicate', inflight: 2 });
    // One acknowledgement frees one slot.
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 2 });
    const next = drainMessages(raft).filter((message) => message.type === 'append' && message.to === '2');
    expect(next.map((message) => message.entries?.[0]?.index)).toEqual([4]);
  });

  it('a follower in probe state gets one append at a time', () => {
    const raft = electLeader(makeRaft('1', voters3), voters3);
    for (let index = 0; index < 3; index += 1) raft.propose(`p${index}`);
    const toThree = drainMessages(raft).filter((message) => message.type === 'append' && message.to === '3');
    // The no-op probe is still unanswered: nothing more goes to 3.
    expect(toThree).toEqual([]);
    expect(raft.status().progress['3']?.state).toBe('probe');
  });

  it('refuses proposals larger than one append, saying why', () => {
    const raft = electLeader(makeRaft('1', voters3, { maxBytesPerAppend: 1000 }), voters3);
    const result = raft.propose('z'.repeat(1000));
    expect(result).toMatchObject({ ok: false, reason: 'too-large' });
    if (!result.ok) expect(result.message).toMatch(/1032 bytes, over the 1000-byte/);
    // Multi-byte characters count as their UTF-8 size.
    expect(raft.propose('é'.repeat(490))).toMatchObject({ ok: false, reason: 'too-large' });
    expect(raft.propose('é'.repeat(480)).ok).toBe(true);
  });

  it('refuses proposals and reads on a follower, naming the leader', () => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 1, vote: null, commit: 0 } });
    raft.step({ type: 'heartbeat', from: '2', to: '1', term: 1, commit: 0 });
    expect(raft.propose('x')).toMatchObject({ ok: false, reason: 'not-leader', leader: '2' });
    expect(raft.readIndex('r')).toMatchObject({ ok: false, reason: 'not-leader', leader: '2' });
  });

  it('bounds pending reads', () => {
    const raft = electLeader(makeRaft('1', voters3), voters3);
    for (let index = 0; index < raftPendingReadsMax; index += 1) expect(raft.readIndex(`r${index}`).ok).toBe(true);
    expect(raft.readIndex('one-too-many')).toMatchObject({ ok: false, reason: 'busy' });
  });

  it('drops malformed messages from the network instead of crashing, and counts them', () => {
    const raft = makeRaft('1', voters3, {}, { hardState: { term: 1, vote: null, commit: 0 } });
    const malformed: Message[] = [
      { type: 'append', from: '2', to: '1', term: 1, logIndex: 0, logTerm: 0, commit: 0, entries: [{ term: 1, index: 2, type: 'normal', data: 'gap' }] },
      { type: 'append', from: '2', to: '1', term: 1, logIndex: 0, logTerm: 0, commit: 0, entries: [{ term: 5, index: 1, type: 'normal', data: 'future term' }] },
      { type: 'snapshot', from: '2', to: '1', term: 1 },
      { type: 'vote', from: '2', to: '1', term: -1, logIndex: 0, logTerm: 0 },
      { type: 'gossip' as Message['type'], from: '2', to: '1', term: 1 },
    ];
    for (const message of malformed) expect(messageProblem(message)).not.toBeNull();
    for (const message of malformed) raft.step(message);
    expect(raft.status()).toMatchObject({ lastIndex: 0, term: 1, malformedMessagesDropped: malformed.length });
    expect(drainMessages(raft)).toEqual([]);
  });

  it('refuses proposals as busy once too much data waits to commit', () => {
    const raft = electLeader(makeRaft('1', voters3, { maxBytesPerAppend: 8 * 1024 * 1024 }), voters3);
    const chunk = 'c'.repeat(4 * 1024 * 1024);
    let accepted = 0;
    while (raft.propose(chunk).ok) accepted += 1;
    expect(accepted).toBe(uncommittedBytesMax / chunk.length);
    expect(raft.propose('small but still refused'.repeat(1000))).toMatchObject({ ok: false, reason: 'busy' });
    // A quorum acknowledging everything frees the room again.
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: raft.status().lastIndex });
    expect(raft.propose(chunk).ok).toBe(true);
  });

  it('hands out committed entries in Readys bounded by count and size', () => {
    const raft = makeRaft('1', ['1'], { maxBytesPerAppend: 8 * 1024 * 1024 });
    raft.campaign();
    drainReady(raft);
    const chunk = 'd'.repeat(3 * 1024 * 1024);
    for (let index = 0; index < 12; index += 1) expect(raft.propose(chunk).ok).toBe(true);
    const sizes: number[] = [];
    for (let ready = drainReady(raft); ready !== null; ready = drainReady(raft)) if (ready.committed.length > 0) sizes.push(ready.committed.length);
    // 16 MiB per Ready: five 3 MiB entries fit, the sixth would not.
    expect(sizes).toEqual([5, 5, 2]);
    for (let index = 0; index < committedEntriesPerReadyMax + 10; index += 1) raft.propose('e');
    const counts: number[] = [];
    for (let ready = drainReady(raft); ready !== null; ready = drainReady(raft)) if (ready.committed.length > 0) counts.push(ready.committed.length);
    expect(counts).toEqual([committedEntriesPerReadyMax, 10]);
  });

  it('treats ready() twice without advance() as a driver bug', () => {
    const raft = makeRaft('1', ['1']);
    raft.campaign();
    raft.ready();
    expect(() => raft.ready()).toThrow(/before advance/);
  });

  it('after a restart hands out committed entries again from the snapshot, or from restore.applied', () => {
    const restore = { hardState: { term: 1, vote: '1', commit: 3 }, entries: entriesOfTerms([1, 1, 1, 1]) };
    const fromSnapshot = drainReady(makeRaft('1', voters3, {}, restore)) as Ready;
    expect(fromSnapshot.committed.map((entry) => entry.index)).toEqual([1, 2, 3]);
    const fromApplied = drainReady(makeRaft('1', voters3, {}, { ...restore, applied: 2 })) as Ready;
    expect(fromApplied.committed.map((entry) => entry.index)).toEqual([3]);
    expect(() => makeRaft('1', voters3, {}, { ...restore, applied: 4 })).toThrow(/applied 4/);
  });

  it('a single voter elects itself and commits alone', () => {
    const raft = makeRaft('1', ['1']);
    raft.campaign();
    expect(raft.status().role).toBe('leader');
    expect(raft.propose('solo')).toMatchObject({ ok: true, index: 2 });
    const ready = drainReady(raft) as Ready;
    expect(ready.committed.map((entry) => entry.data)).toEqual(['', 'solo']);
  });
});

describe('membership rules', () => {
  it('learners and nodes outside the config never campaign', () => {
    const learner = makeRaft('4', voters3, {}, { initialConfig: { voters: voters3, learners: ['4'] } });
    const outsider = makeRaft('9', voters3);
    for (let tick = 0; tick < 100; tick += 1) {
      learner.tick();
      outsider.tick();
    }
    expect(learner.campaign()).toBe(false);
    expect(outsider.campaign()).toBe(false);
    expect(drainMessages(learner)).toEqual([]);
    expect(drainMessages(outsider)).toEqual([]);
    expect(learner.status()).toMatchObject({ role: 'follower', learner: true, term: 0 });
  });

  it('a learner does not count for commit', () => {
    const raft = electLeader(makeRaft('1', ['1', '2', '3'], {}, { initialConfig: { voters: ['1', '2', '3'], learners: ['4'] } }), voters3);
    raft.step({ type: 'append-response', from: '4', to: '1', term: 1, reject: false, hintIndex: 1 });
    expect(raft.status().commit).toBe(0);
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    expect(raft.status().commit).toBe(1);
  });

  it('a new leader refuses membership changes until it committed an entry of its term', () => {
    const raft = electLeader(makeRaft('1', voters3), voters3);
    expect(raft.proposeConfigChange({ type: 'add-learner', node: '4' })).toMatchObject({ ok: false, reason: 'busy' });
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    expect(raft.proposeConfigChange({ type: 'add-learner', node: '4' })).toMatchObject({ ok: true, index: 2 });
    expect(raft.status().config).toEqual({ voters: voters3, learners: ['4'] });
  });

  it('a follower reverts a config change when its entry is truncated', () => {
    const raft = makeRaft('2', voters3, {}, { hardState: { term: 1, vote: null, commit: 0 } });
    const change = { term: 1, index: 1, type: 'config' as const, data: JSON.stringify({ type: 'add-learner', node: '4', config: { voters: voters3, learners: ['4'] } }) };
    raft.step({ type: 'append', from: '1', to: '2', term: 1, logIndex: 0, logTerm: 0, entries: [change], commit: 0 });
    expect(raft.status().config.learners).toEqual(['4']);
    raft.step({ type: 'append', from: '3', to: '2', term: 2, logIndex: 0, logTerm: 0, entries: [{ term: 2, index: 1, type: 'noop', data: '' }], commit: 0 });
    expect(raft.status().config).toEqual({ voters: voters3, learners: [] });
  });
});

describe('a voter that lost its log', () => {
  /** 1 leads and commits x with 2 while 3 is cut off; then 2 loses its disk. */
  function committedWithoutThree(): Harness {
    const harness = new Harness();
    harness.quiet = true;
    const config = { voters: voters3, learners: [] };
    // As the daemon runs its cores.
    for (const id of voters3) harness.addNode(id, config, { preVote: true, checkQuorum: true });
    harness.node('1').raft.campaign();
    harness.stabilize();
    expect(harness.node('1').raft.status().role).toBe('leader');
    harness.partition([['1', '2'], ['3']]);
    harness.node('1').raft.propose('x');
    harness.stabilize();
    expect(harness.node('1').raft.status().commit).toBe(harness.node('1').raft.status().lastIndex);
    expect(harness.node('2').applied).toContain('x');
    expect(harness.node('3').applied).not.toContain('x');
    harness.wipe('2');
    return harness;
  }

  it('does not vote with the log it lost: the committed entry survives the leader\'s death', () => {
    const harness = committedWithoutThree();
    // The leader dies; 3 (which never had x) and the wiped 2 can talk. Granting 3 the vote
    // with an empty log would elect a leader without x, losing a committed entry.
    harness.partition([['1'], ['2', '3']]);
    for (let round = 0; round < 5; round += 1) {
      harness.node('3').raft.campaign();
      harness.stabilize();
    }
    expect(harness.node('3').raft.status().role).not.toBe('leader');
    // The old leader restarts (its progress for 2 forgotten; in the daemon, the leader removes
    // and re-adds such a member instead) and is elected again: 2 catches up, then votes again.
    harness.heal();
    harness.restart('1');
    harness.tick('3', 20); // past leader stickiness
    harness.node('1').raft.campaign();
    harness.stabilize();
    expect(harness.node('1').raft.status().role).toBe('leader');
    harness.node('1').raft.propose('y');
    harness.stabilize();
    expect(harness.node('2').applied).toEqual(expect.arrayContaining(['x', 'y']));
    // 1 dies again: now 2 and 3 elect one of them, which holds x and y.
    harness.partition([['1'], ['2', '3']]);
    for (let round = 0; round < 40 && !['2', '3'].some((id) => harness.node(id).raft.status().role === 'leader'); round += 1) {
      harness.tick('2', 1);
      harness.tick('3', 1);
      harness.stabilize();
    }
    const leader = ['2', '3'].find((id) => harness.node(id).raft.status().role === 'leader');
    expect(leader).toBeDefined();
    expect(harness.node(leader as string).applied).toEqual(expect.arrayContaining(['x', 'y']));
  });

  it('holds its votes and its candidacy until it has what the leader had committed when it first heard from it', () => {
    const raft = makeRaft('2', voters3, {}, { lostLog: true });
    raft.step({ type: 'pre-vote', from: '3', to: '2', term: 1, logIndex: 0, logTerm: 0 });
    raft.step({ type: 'vote', from: '3', to: '2', term: 1, logIndex: 0, logTerm: 0 });
    expect(drainMessages(raft).map((message) => [message.type, message.reject])).toEqual([['pre-vote-response', true], ['vote-response', true]]);
    for (let tick = 0; tick < 100; tick += 1) raft.tick();
    expect(raft.campaign()).toBe(false);
    // A leader of term 2 has committed 3 entries; its first append carries 2 of them.
    const log = entriesOfTerms([2, 2, 2]);
    raft.step({ type: 'append', from: '1', to: '2', term: 2, logIndex: 0, logTerm: 0, entries: log.slice(0, 2), commit: 3 });
    drainMessages(raft);
    expect(raft.status()).toMatchObject({ commit: 2, leaderCommit: 3, votesHeld: true });
    raft.step({ type: 'vote', from: '3', to: '2', term: 3, logIndex: 3, logTerm: 2 });
    expect(drainMessages(raft).find((message) => message.type === 'vote-response')).toMatchObject({ reject: true });
    raft.step({ type: 'append', from: '1', to: '2', term: 3, logIndex: 2, logTerm: 2, entries: log.slice(2), commit: 3 });
    drainMessages(raft);
    expect(raft.status().commit).toBe(3);
    raft.step({ type: 'vote', from: '3', to: '2', term: 4, logIndex: 3, logTerm: 2 });
    expect(drainMessages(raft).find((message) => message.type === 'vote-response')).toMatchObject({ reject: false });
  });
});

describe('leader lease', () => {
  it('leases never overlap: a follower that hears from the leader ignores a cut-off node\'s pre-votes', () => {
    // Links 1<->3 are cut; node 3 times out first (offset 0) while 2 still hears from leader 1.
    // Without stickiness 2 would elect 3 while 1 still holds its lease.
    const harness = new Harness();
    harness.quiet = true;
    const offsets: [NodeId, number][] = [['1', 5], ['2', 5], ['3', 0]];
    for (const [id, offset] of offsets) {
      harness.addNode(id, { voters: voters3, learners: [] }, { preVote: true, checkQuorum: true, randomInt: (n) => Math.min(offset, n - 1) });
    }
    harness.node('1').raft.campaign();
    harness.stabilize();
    harness.cutLinks.add('1->3');
    harness.cutLinks.add('3->1');
    for (let tick = 0; tick < 60; tick += 1) {
      for (const id of voters3) harness.node(id).raft.tick();
      harness.stabilize();
      const holders = voters3.filter((id) => harness.node(id).raft.leaseRemainingTicks() > 0);
      expect(holders.length).toBeLessThanOrEqual(1);
    }
    expect(harness.node('1').raft.status()).toMatchObject({ role: 'leader', term: 1 });
    expect(harness.node('3').raft.status()).toMatchObject({ role: 'pre-candidate', term: 1 });
  });

  it('a cut-off leader\'s lease ends before the quickest possible new leader takes one', () => {
    // Every clock ticks together; node 2 times out after exactly electionTicks, the earliest
    // any follower may; the old leader's lease must be gone by then.
    const harness = new Harness();
    harness.quiet = true;
    const offsets: [NodeId, number][] = [['1', 9], ['2', 0], ['3', 9]];
    for (const [id, offset] of offsets) {
      harness.addNode(id, { voters: voters3, learners: [] }, { preVote: true, checkQuorum: true, randomInt: (n) => Math.min(offset, n - 1) });
    }
    harness.node('1').raft.campaign();
    harness.stabilize();
    harness.partition([['1'], ['2', '3']]);
    let newLeaderAt = -1;
    for (let tick = 1; tick <= 30; tick += 1) {
      for (const id of voters3) harness.node(id).raft.tick();
      harness.stabilize();
      const holders = voters3.filter((id) => harness.node(id).raft.leaseRemainingTicks() > 0);
      expect(holders.length, `tick ${tick}: ${holders.join(', ')} hold leases`).toBeLessThanOrEqual(1);
      if (newLeaderAt < 0 && harness.node('2').raft.status().role === 'leader') newLeaderAt = tick;
    }
    expect(newLeaderAt).toBe(10);
  });

  it('lasts electionTicks - driftTicks - 1 ticks from the quorum-th most recent acknowledged send', () => {
    const raft = electLeader(makeRaft('1', ['1', '2', '3', '4', '5'], { checkQuorum: true, electionTicks: 20, driftTicks: 3 }), ['1', '2', '3', '4', '5']);
    expect(raft.leaseRemainingTicks()).toBe(0); // nothing committed in this term yet
    drainMessages(raft);
    raft.tick();
    raft.tick();
    // Heartbeats go out every tick; keep those sent at tick 2 (contexts are "seq:sendTick").
    const sentAtTwo = drainMessages(raft).filter((message) => message.type === 'heartbeat' && message.context?.endsWith(':2') === true);
    const ack = (message: Message): void => raft.step({ type: 'heartbeat-response', from: message.to, to: '1', term: 1, context: message.context });
    ack(sentAtTwo.find((message) => message.to === '2') as Message);
    expect(raft.leaseRemainingTicks()).toBe(0); // one follower is not a quorum, and no commit yet
    raft.step({ type: 'append-response', from: '2', to: '1', term: 1, reject: false, hintIndex: 1 });
    raft.step({ type: 'append-response', from: '3', to: '1', term: 1, reject: false, hintIndex: 1 });
    expect(raft.status().commit).toBe(1);
    expect(raft.leaseRemainingTicks()).toBe(0); // 3's acknowledgement carried no send tick
    ack(sentAtTwo.find((message) => message.to === '3') as Message);
    // Start = tick 2 (the third most recent of now=2, 2, 2); length 20 - 3 - 1 = 16.
    expect(raft.leaseRemainingTicks()).toBe(16);
    for (let tick = 0; tick < 10; tick += 1) raft.tick();
    expect(raft.leaseRemainingTicks()).toBe(6);
  });

  it('is revoked for the rest of the term once a timeout-now was sent', () => {
    const harness = new Harness();
    harness.quiet = true;
    for (const id of voters3) harness.addNode(id, { voters: voters3, learners: [] }, { preVote: true, checkQuorum: true });
    harness.node('1').raft.campaign();
    harness.stabilize();
    expect(harness.node('1').raft.leaseRemainingTicks()).toBeGreaterThan(0);
    harness.cutLinks.add('1->2'); // the timeout-now is lost; the transfer is abandoned later
    harness.node('1').raft.transferLeadership('2');
    harness.stabilize();
    for (let tick = 0; tick < 12; tick += 1) {
      harness.tick('1', 1);
      harness.stabilize();
    }
    expect(harness.node('1').raft.status()).toMatchObject({ role: 'leader', transferee: null });
    expect(harness.node('1').raft.leaseRemainingTicks()).toBe(0);
  });
});
