// Failure detector cases with injected time: each threshold, recovery, departure,
// forgetting (and peers kept past it), and the bound on the table.
import { describe, expect, it } from 'vitest';
import { FailureDetector, type FailureDetectorOptions } from './failure-detector.ts';

const options: FailureDetectorOptions = {
  suspectAfterMs: 2_500,
  deadAfterMs: 4_500,
  forgetAfterMs: 60_000,
  forgetLeftAfterMs: 10_000,
  peersMax: 3,
};

function states(detector: FailureDetector): Record<string, string> {
  return Object.fromEntries(detector.peers().map((entry) => [entry.peer, entry.state]));
}

describe('FailureDetector', () => {
  it('reports a join on first observation and nothing for a peer already alive', () => {
    const detector = new FailureDetector(options);
    expect(detector.observe('a', 0)).toEqual({ peer: 'a', from: null, to: 'alive', atMs: 0 });
    expect(detector.observe('a', 1_000)).toBeNull();
    expect(detector.lastSeenMs('a')).toBe(1_000);
  });

  it('moves a silent peer to suspect, then dead, exactly at the thresholds', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 1_000);
    expect(detector.evaluate(3_499)).toEqual([]);
    expect(detector.evaluate(3_500)).toEqual([{ peer: 'a', from: 'alive', to: 'suspect', atMs: 3_500 }]);
    expect(detector.evaluate(4_000)).toEqual([]);
    expect(detector.evaluate(5_499)).toEqual([]);
    expect(detector.evaluate(5_500)).toEqual([{ peer: 'a', from: 'suspect', to: 'dead', atMs: 5_500 }]);
    expect(detector.evaluate(6_000)).toEqual([]);
  });

  it('goes from alive straight to dead when evaluated late', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    expect(detector.evaluate(5_000)).toEqual([{ peer: 'a', from: 'alive', to: 'dead', atMs: 5_000 }]);
  });

  it('keeps a peer that keeps talking alive', () => {
    const detector = new FailureDetector(options);
    for (let t = 0; t <= 20_000; t += 1_000) {
      detector.observe('a', t);
      expect(detector.evaluate(t + 900)).toEqual([]);
    }
    expect(detector.state('a')).toBe('alive');
  });

  it('brings a suspect or dead peer back to alive when it is heard again', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    detector.evaluate(3_000);
    expect(detector.observe('a', 3_100)).toEqual({ peer: 'a', from: 'suspect', to: 'alive', atMs: 3_100 });
    detector.evaluate(10_000);
    expect(detector.state('a')).toBe('dead');
    expect(detector.observe('a', 10_500)).toEqual({ peer: 'a', from: 'dead', to: 'alive', atMs: 10_500 });
    expect(detector.evaluate(11_000)).toEqual([]);
  });

  it('marks a departing peer left at once and forgets it after forgetLeftAfterMs', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    expect(detector.markLeft('a', 500)).toEqual({ peer: 'a', from: 'alive', to: 'left', atMs: 500 });
    expect(detector.markLeft('a', 600)).toBeNull();
    // A left peer does not go suspect or dead: it said goodbye.
    expect(detector.evaluate(6_000)).toEqual([]);
    expect(detector.state('a')).toBe('left');
    expect(detector.evaluate(10_500)).toEqual([{ peer: 'a', from: 'left', to: 'forgotten', atMs: 10_500 }]);
    expect(detector.state('a')).toBeUndefined();
  });

  it('lets a left peer come back (a restart) as alive', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    detector.markLeft('a', 100);
    expect(detector.observe('a', 2_000)).toEqual({ peer: 'a', from: 'left', to: 'alive', atMs: 2_000 });
  });

  it('ignores markLeft for unknown peers', () => {
    const detector = new FailureDetector(options);
    expect(detector.markLeft('nobody', 0)).toBeNull();
  });

  it('forgets a dead peer after forgetAfterMs of silence', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    detector.evaluate(5_000);
    expect(detector.evaluate(59_999)).toEqual([]);
    expect(detector.evaluate(60_000)).toEqual([{ peer: 'a', from: 'dead', to: 'forgotten', atMs: 60_000 }]);
    expect(detector.size).toBe(0);
  });

  it('reports the dead step before forgetting a peer evaluated very late', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    expect(detector.evaluate(100_000)).toEqual([
      { peer: 'a', from: 'alive', to: 'dead', atMs: 100_000 },
      { peer: 'a', from: 'dead', to: 'forgotten', atMs: 100_000 },
    ]);
  });

  it('tracks each peer on its own clock', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    detector.observe('b', 2_000);
    detector.evaluate(3_000);
    expect(states(detector)).toEqual({ a: 'suspect', b: 'alive' });
    detector.evaluate(5_000);
    expect(states(detector)).toEqual({ a: 'dead', b: 'suspect' });
  });

  it('does not let an observation with an older timestamp make a peer look older', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 5_000);
    detector.observe('a', 1_000);
    expect(detector.lastSeenMs('a')).toBe(5_000);
    expect(detector.evaluate(7_000)).toEqual([]);
  });

  it('refuses new peers when full of live ones, and evicts the longest-silent dead or left one otherwise', () => {
    const detector = new FailureDetector(options);
    detector.observe('a', 0);
    detector.observe('b', 0);
    detector.observe('c', 1_000);
    expect(detector.isFull()).toBe(true);
    expect(detector.observe('d', 1_000)).toBeNull();
    expect(detector.state('d')).toBeUndefined();
    detector.evaluate(5_000); // a and b dead, c suspect
    detector.markLeft('c', 5_000);
    expect(detector.observe('d', 5_100)?.to).toBe('alive');
    expect(detector.size).toBe(3);
    expect(detector.state('a') === undefined || detector.state('b') === undefined).toBe(true);
    expect(detector.state('c')).toBe('left');
  });

  it('keeps a dead peer that keep() holds past the forget time, and forgets it once let go', () => {
    const voters = new Set(['voter']);
    const detector = new FailureDetector({ ...options, keep: (peer) => voters.has(peer) });
    detector.observe('voter', 0);
    detector.observe('other', 0);
    detector.evaluate(5_000);
    // The forget time is up for both: only the peer that is not held goes.
    expect(detector.evaluate(60_000)).toEqual([{ peer: 'other', from: 'dead', to: 'forgotten', atMs: 60_000 }]);
    expect(detector.peers()).toEqual([{ peer: 'voter', state: 'dead', lastSeenMs: 0, sinceMs: 5_000, kept: true }]);
    expect(detector.evaluate(3_600_000)).toEqual([]);
    expect(detector.state('voter')).toBe('dead');
    // Heard again: alive, and no longer marked kept.
    expect(detector.observe('voter', 3_600_100)).toEqual({ peer: 'voter', from: 'dead', to: 'alive', atMs: 3_600_100 });
    expect(detector.peers()[0]!.kept).toBe(false);
    // Silent again past the forget time, then removed from the configuration: forgotten at the next evaluation.
    detector.evaluate(3_700_000);
    expect(detector.peers()[0]!.kept).toBe(true);
    voters.delete('voter');
    expect(detector.evaluate(3_700_100)).toEqual([{ peer: 'voter', from: 'dead', to: 'forgotten', atMs: 3_700_100 }]);
    expect(detector.size).toBe(0);
  });

  it('reports the dead step for a held peer evaluated very late, without forgetting it', () => {
    const detector = new FailureDetector({ ...options, keep: () => true });
    detector.observe('a', 0);
    expect(detector.evaluate(100_000)).toEqual([{ peer: 'a', from: 'alive', to: 'dead', atMs: 100_000 }]);
    expect(detector.peers()[0]).toMatchObject({ peer: 'a', state: 'dead', kept: true });
  });

  it('keeps a held peer that left, and never evicts a held peer to make room', () => {
    const held = new Set(['a', 'b']);
    const detector = new FailureDetector({ ...options, keep: (peer) => held.has(peer) });
    detector.observe('a', 0);
    detector.observe('b', 0);
    detector.observe('c', 0);
    detector.markLeft('a', 100);
    expect(detector.evaluate(70_000)).toEqual([
      { peer: 'b', from: 'alive', to: 'dead', atMs: 70_000 },
      { peer: 'c', from: 'alive', to: 'dead', atMs: 70_000 },
      { peer: 'c', from: 'dead', to: 'forgotten', atMs: 70_000 },
    ]);
    expect(states(detector)).toEqual({ a: 'left', b: 'dead' });
    detector.observe('d', 70_000);
    // Full of held and live peers: a newcomer is refused rather than a held peer dropped.
    expect(detector.observe('e', 70_000)).toBeNull();
    expect(states(detector)).toEqual({ a: 'left', b: 'dead', d: 'alive' });
    held.delete('a');
    expect(detector.evaluate(70_100)).toEqual([{ peer: 'a', from: 'left', to: 'forgotten', atMs: 70_100 }]);
  });

  it('rejects inconsistent thresholds', () => {
    expect(() => new FailureDetector({ ...options, deadAfterMs: 2_000 })).toThrow(/suspectAfterMs/);
    expect(() => new FailureDetector({ ...options, forgetAfterMs: 1_000 })).toThrow(/forgetAfterMs/);
  });
});
