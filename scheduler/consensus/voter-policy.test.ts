// Unit tests for the voter policy: which single membership change a leader proposes next.
import { describe, expect, it } from 'vitest';
import { effectiveVotersTarget, nextConfigChange } from './voter-policy.ts';
import type { KnownNode, VoterPolicyInput } from './voter-policy.ts';
import type { ClusterConfig } from './types.ts';

const lastIndex = 100_000;
const minute = 60_000;

function alive(id: string, match = lastIndex): KnownNode {
  return { id, alive: true, deadForMs: 0, match };
}

function dead(id: string, deadForMs: number): KnownNode {
  return { id, alive: false, deadForMs, match: 0 };
}

function input(config: ClusterConfig, nodes: KnownNode[], extra: Partial<VoterPolicyInput> = {}): VoterPolicyInput {
  return { config, nodes, leader: 'a', replaceDeadAfterMs: minute, lastIndex, ...extra };
}

describe('effectiveVotersTarget', () => {
  it.each([
    [3, 1, 1], [3, 2, 1], [3, 3, 3], [3, 10, 3], [5, 4, 3], [5, 5, 5], [5, 9, 5], [4, 9, 3],
  ])('target %i with %i alive nodes aims for %i voters (odd, no more than alive)', (target, aliveCount, expected) => {
    expect(effectiveVotersTarget(target, aliveCount)).toBe(expected);
  });
});

describe('nextConfigChange', () => {
  it('does nothing when the config is already right', () => {
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: [] }, [alive('a'), alive('b'), alive('c')]))).toBeNull();
  });

  it('adds new alive nodes as learners, lowest id first', () => {
    const nodes = [alive('a'), alive('c'), alive('b')];
    expect(nextConfigChange(input({ voters: ['a'], learners: [] }, nodes))).toEqual({ type: 'add-learner', node: 'b' });
  });

  it('does not add dead nodes', () => {
    expect(nextConfigChange(input({ voters: ['a'], learners: [] }, [alive('a'), dead('b', 1_000)]))).toBeNull();
  });

  it('promotes a caught-up learner while voters are below target', () => {
    const nodes = [alive('a'), alive('b'), alive('c')];
    expect(nextConfigChange(input({ voters: ['a'], learners: ['b', 'c'] }, nodes))).toEqual({ type: 'promote', node: 'b' });
    // With three alive nodes the target is three voters: after b, c follows.
    expect(nextConfigChange(input({ voters: ['a', 'b'], learners: ['c'] }, nodes))).toEqual({ type: 'promote', node: 'c' });
  });

  it('does not promote a learner that is far behind', () => {
    const nodes = [alive('a'), alive('b', lastIndex - 5_000), alive('c', lastIndex - 10)];
    expect(nextConfigChange(input({ voters: ['a'], learners: ['b', 'c'] }, nodes))).toEqual({ type: 'promote', node: 'c' });
    expect(nextConfigChange(input({ voters: ['a'], learners: ['b'] }, nodes.slice(0, 2)))).toBeNull();
  });

  it('keeps a single voter with two alive nodes (two voters would tolerate no more failures)', () => {
    expect(nextConfigChange(input({ voters: ['a'], learners: ['b'] }, [alive('a'), alive('b')]))).toBeNull();
  });

  it('grows to five voters when at least five nodes are alive', () => {
    const nodes = ['a', 'b', 'c', 'd', 'e'].map((id) => alive(id));
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: ['d', 'e'] }, nodes))).toEqual({ type: 'promote', node: 'd' });
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: ['d', 'e'] }, nodes, { votersTarget: 3 }))).toBeNull();
  });

  it('replaces a voter dead beyond the threshold: promote a replacement first, then demote the dead one', () => {
    const nodes = [alive('a'), alive('b'), dead('c', 2 * minute), alive('d')];
    const config = { voters: ['a', 'b', 'c'], learners: ['d'] };
    expect(nextConfigChange(input(config, nodes))).toEqual({ type: 'promote', node: 'd' });
    const after = { voters: ['a', 'b', 'c', 'd'], learners: [] };
    expect(nextConfigChange(input(after, nodes))).toEqual({ type: 'demote', node: 'c' });
  });

  it('leaves a voter that died recently alone', () => {
    const nodes = [alive('a'), alive('b'), dead('c', minute / 2), alive('d')];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: ['d'] }, nodes))).toBeNull();
  });

  it('without a replacement, demotes dead voters only when that raises failure tolerance', () => {
    // Three voters, one dead, nobody to promote: two voters tolerate no more than three did.
    const three = [alive('a'), alive('b'), dead('c', 2 * minute)];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: [] }, three))).toBeNull();
    // Five voters, two dead: three live voters tolerate one failure, five with two dead none.
    const five = [alive('a'), alive('b'), alive('c'), dead('d', 2 * minute), dead('e', 3 * minute)];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c', 'd', 'e'], learners: [] }, five))).toEqual({ type: 'demote', node: 'd' });
  });

  it('does not shrink five voters when one of them died only recently', () => {
    const nodes = [alive('a'), alive('b'), alive('c'), alive('d'), dead('e', minute / 10)];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c', 'd', 'e'], learners: [] }, nodes))).toBeNull();
  });

  it('treats voters the failure detector forgot as dead for good', () => {
    const nodes = [alive('a'), alive('b'), alive('d')];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: ['d'] }, nodes))).toEqual({ type: 'promote', node: 'd' });
  });

  it('never demotes the leader, and never below a quorum of live voters', () => {
    // The leader itself is reported dead (stale view): it is not written off.
    const nodes = [dead('a', 5 * minute), alive('b'), alive('c')];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: [] }, nodes))).toBeNull();
    // Two of three voters dead: no quorum of live voters exists; the policy changes nothing.
    const lost = [alive('a'), dead('b', 5 * minute), dead('c', 5 * minute), alive('d')];
    expect(nextConfigChange(input({ voters: ['a', 'b', 'c'], learners: ['d'] }, lost))).toBeNull();
  });

  it('shrinks alive voters above target, highest id first, never the leader', () => {
    const nodes = ['a', 'b', 'c', 'd', 'e'].map((id) => alive(id));
    const config = { voters: ['a', 'b', 'c', 'd', 'e'], learners: [] };
    expect(nextConfigChange(input(config, nodes, { votersTarget: 3 }))).toEqual({ type: 'demote', node: 'e' });
    expect(nextConfigChange(input(config, nodes, { votersTarget: 3, leader: 'e' }))).toEqual({ type: 'demote', node: 'd' });
  });

  it('removes learners the failure detector forgot', () => {
    expect(nextConfigChange(input({ voters: ['a'], learners: ['z'] }, [alive('a')]))).toEqual({ type: 'remove', node: 'z' });
  });

  it('is deterministic: the order of the node list does not matter', () => {
    const nodes = [alive('a'), alive('e'), alive('c'), alive('d'), alive('b')];
    const config = { voters: ['a'], learners: ['e', 'c'] };
    const first = nextConfigChange(input(config, nodes));
    const second = nextConfigChange(input(config, [...nodes].reverse()));
    expect(first).toEqual(second);
    expect(first).toEqual({ type: 'promote', node: 'c' });
  });

  it('converges: applying its changes one by one reaches a stable config', () => {
    const nodes = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((id) => alive(id));
    let config: ClusterConfig = { voters: ['a'], learners: [] };
    for (let step = 0; step < 20; step += 1) {
      const change = nextConfigChange(input(config, nodes));
      if (change === null) break;
      const voters = config.voters.filter((id) => id !== change.node);
      const learners = config.learners.filter((id) => id !== change.node);
      if (change.type === 'add-learner' || change.type === 'demote') learners.push(change.node);
      if (change.type === 'promote') voters.push(change.node);
      config = { voters, learners };
    }
    expect(nextConfigChange(input(config, nodes))).toBeNull();
    expect(config.voters.sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(config.learners.sort()).toEqual(['f', 'g']);
  });
});
