// The voter policy: which single membership change the leader should propose next, given
// the current config and what the failure detector knows. Pure and deterministic (every
// choice is by node id), so any leader facing the same facts chooses the same change.
//
// Order of concern, first match wins:
//   1. promote an alive, caught-up learner while live voters are below target
//      (this is also the first half of replacing a dead voter);
//   2. demote a voter dead beyond the threshold, when the cluster is above target or
//      dropping the dead voters raises the number of failures it tolerates;
//   3. demote alive voters above the configured target (never the leader);
//   4. add alive nodes outside the config as learners;
//   5. remove learners the failure detector has forgotten.
// It never proposes a change after which the live voters would fall short of a quorum.
import { votersTargetDefault } from '../../protocol/limits.ts';
import type { ClusterConfig, ConfigChange, NodeId } from './types.ts';

export interface KnownNode {
  id: NodeId;
  alive: boolean;
  /** Milliseconds since the node was last heard from (0 when alive). */
  deadForMs: number;
  /** The leader's match index for this node (the leader reports its own last index). */
  match: number;
}

export interface VoterPolicyInput {
  config: ClusterConfig;
  /** Every node the failure detector knows, the leader included. */
  nodes: KnownNode[];
  /** The leader's id: never demoted by the policy's own choice. */
  leader: NodeId;
  /** Wanted voter count; default 5 when at least 5 nodes are not written off, else 3 (votersTargetDefault). */
  votersTarget?: number;
  /** A voter dead at least this long is replaced. */
  replaceDeadAfterMs: number;
  /** The leader's last log index, to judge whether a learner has caught up. */
  lastIndex: number;
  /** A learner this many entries behind or fewer counts as caught up. */
  learnerLagEntriesMax?: number;
}

/**
 * Under a steady write load (thousands of entries/s) a healthy learner is always some
 * entries behind; a lag of a fraction of a second of writes is caught up within a few
 * appends, so promoting it does not stall commits.
 */
export const learnerLagEntriesMaxDefault = 1_000;

/** Votes (or acknowledgements) a majority of `voterCount` voters needs. */
export function quorumOf(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

function byId(a: NodeId, b: NodeId): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The voter count to aim for: the target, but no more than the nodes alive to fill it, and
 * odd, because an even count tolerates no more failures than the odd count below it.
 */
export function effectiveVotersTarget(target: number, aliveNodeCount: number): number {
  let count = Math.max(1, Math.min(target, aliveNodeCount));
  if (count % 2 === 0) count -= 1;
  return count;
}

/** The next single ConfigChange to propose, or null when the config is where it should be. */
export function nextConfigChange(input: VoterPolicyInput): ConfigChange | null {
  const known = new Map(input.nodes.map((node) => [node.id, node]));
  const aliveIds = input.nodes.filter((node) => node.alive).map((node) => node.id);
  // Nodes not written off (alive, or dead for less than the threshold) set the default, so
  // a brief failure does not shrink the voter set.
  const standing = input.nodes.filter((node) => node.alive || node.deadForMs < input.replaceDeadAfterMs).length;
  const configuredTarget = input.votersTarget ?? (standing >= 5 ? 5 : votersTargetDefault);
  // What we can reach now; shrinking decisions use the configured target instead, so that
  // few alive nodes never make the policy give up voters that are alive.
  const target = effectiveVotersTarget(configuredTarget, aliveIds.length);
  const lagMax = input.learnerLagEntriesMax ?? learnerLagEntriesMaxDefault;
  const voters = [...input.config.voters].sort(byId);
  const learners = [...input.config.learners].sort(byId);

  const isAlive = (id: NodeId): boolean => known.get(id)?.alive === true;
  // A voter the failure detector forgot counts as dead for ever.
  const isReplaceable = (id: NodeId): boolean => {
    const node = known.get(id);
    return node === undefined || (!node.alive && node.deadForMs >= input.replaceDeadAfterMs);
  };
  const liveVoters = voters.filter(isAlive);
  const replaceable = voters.filter((id) => id !== input.leader && isReplaceable(id));

  // 1. Promote, while the voters that are not written off are below target.
  const caughtUp = learners.filter((id) => isAlive(id) && input.lastIndex - (known.get(id)?.match ?? 0) <= lagMax);
  if (voters.length - replaceable.length < target && caughtUp.length > 0) {
    if (liveVoters.length + 1 >= quorumOf(voters.length + 1)) return { type: 'promote', node: caughtUp[0] as NodeId };
  }

  // 2. Demote a written-off voter if we are above target or it raises failure tolerance.
  if (replaceable.length > 0) {
    const aboveTarget = voters.length > configuredTarget;
    const toleranceNow = liveVoters.length - quorumOf(voters.length);
    const toleranceAfter = liveVoters.length - quorumOf(voters.length - replaceable.length);
    if ((aboveTarget || toleranceAfter > toleranceNow) && liveVoters.length >= quorumOf(voters.length - 1)) {
      return { type: 'demote', node: replaceable[0] as NodeId };
    }
  }

  // 3. Shrink alive voters above the configured target, highest id first, never the leader.
  if (replaceable.length === 0 && voters.length > configuredTarget) {
    const extra = liveVoters.filter((id) => id !== input.leader).sort(byId).reverse()[0];
    if (extra !== undefined && liveVoters.length - 1 >= quorumOf(voters.length - 1)) return { type: 'demote', node: extra };
  }

  // 4. New nodes join as learners: they replicate the state without slowing commits.
  const newcomer = aliveIds.filter((id) => !voters.includes(id) && !learners.includes(id)).sort(byId)[0];
  if (newcomer !== undefined) return { type: 'add-learner', node: newcomer };

  // 5. Learners the failure detector no longer knows are gone for good.
  const forgotten = learners.find((id) => !known.has(id));
  if (forgotten !== undefined) return { type: 'remove', node: forgotten };

  return null;
}
