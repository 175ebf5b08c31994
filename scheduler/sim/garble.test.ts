// Every garbled message is one the core's own check calls malformed, so the simulator's
// "malformed messages are dropped" invariant never blames the core for a lie it cannot see.
import { describe, expect, it } from 'vitest';
import { messageProblem } from '../consensus/raft.ts';
import type { Message } from '../consensus/types.ts';
import { garble } from './garble.ts';
import { Prng } from './prng.ts';

const config = { voters: ['n1', 'n2', 'n3'], learners: [] };
const samples: Message[] = [
  { type: 'append', from: 'n1', to: 'n2', term: 3, logIndex: 4, logTerm: 2, commit: 4, context: '1:1',
    entries: [{ index: 5, term: 2, type: 'normal', data: 'set a v1' }, { index: 6, term: 3, type: 'noop', data: '' }] },
  { type: 'append', from: 'n1', to: 'n2', term: 3, logIndex: 0, logTerm: 0, commit: 0, entries: [{ index: 1, term: 1, type: 'normal', data: 'set a v1' }] },
  { type: 'append-response', from: 'n2', to: 'n1', term: 3, reject: true, logIndex: 4, hintIndex: 2, hintTerm: 1 },
  { type: 'append-response', from: 'n2', to: 'n1', term: 3, reject: false, hintIndex: 6 },
  { type: 'heartbeat', from: 'n1', to: 'n2', term: 3, commit: 4, context: '2:5' },
  { type: 'snapshot', from: 'n1', to: 'n2', term: 3, context: '3:5', snapshot: { index: 4, term: 2, config, data: '{}' } },
  { type: 'vote', from: 'n3', to: 'n2', term: 4, logIndex: 6, logTerm: 3 },
  { type: 'vote-response', from: 'n2', to: 'n3', term: 4, reject: false },
  { type: 'timeout-now', from: 'n1', to: 'n3', term: 3 },
];

describe('garble', () => {
  it('produces only messages the core must call malformed', () => {
    const random = new Prng(21);
    for (const sample of samples) expect(messageProblem(sample)).toBeNull();
    const seen = new Set<string>();
    for (let round = 0; round < 2_000; round++) {
      const sample = random.pick(samples);
      const garbled = garble(sample, random);
      expect(garbled).not.toBeNull();
      seen.add(garbled?.how.replace(/\d+/g, '#') ?? '');
      expect(messageProblem(garbled?.message as Message), `${garbled?.how} of ${sample.type}`).not.toBeNull();
    }
    expect(seen.size).toBeGreaterThanOrEqual(9);
  });
});
