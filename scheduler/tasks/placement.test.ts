// Unit tests of the leader's pure decisions: ready order and aging, prompt rendering,
// eligibility, estimates, late-binding placement, and recovery.
import { describe, expect, it } from 'vitest';
import * as limits from '../../protocol/limits.ts';
import type { Heartbeat } from '../../protocol/heartbeat.ts';
import { encodeCommand } from '../state/commands.ts';
import { Harness } from '../state/test-helpers.ts';
import { expectedTokensPerSecond, nodeViewFromHeartbeat, sameModel, type NodeView } from './node-view.ts';
import {
  assignmentCommand, candidateOn, clusterSpeedPrior, describeTask, eligibleNodes, estimateCompletionMs, estimateDefaults, fullWaitingReason, nodeModelKey, planAssignments, rankNodesForRequest, slotFreeInMs, waitingReason,
} from './placement.ts';
import { NodeHealth, nodeAvoidMs } from './node-health.ts';
import { effectivePriority, readyTasks, renderPrompt } from './ready.ts';
import { tasksToRequeue, timedOutTasks } from './recovery.ts';

function node(id: string, overrides: Partial<NodeView> = {}): NodeView {
  return {
    id, alive: true, modelsInstalled: ['llama3'], modelsLoaded: [], tokensPerSecond: {}, running: 0, concurrencyLimit: 2, agents: [],
    ...overrides,
  };
}

function record(h: Harness, id: string) {
  const found = h.state.getTaskRecord(id);
  if (found === undefined) throw new Error(`no task ${id}`);
  return found;
}

/** Commits a plan's assignments, as the leader would. */
function commit(h: Harness, plan: ReturnType<typeof planAssignments>, nowMs: number, term = 1): void {
  for (const assignment of plan.assignments) h.ok(assignmentCommand(assignment, term, nowMs));
}

describe('readyTasks and aging', () => {
  it('orders by priority, then age; skips unfinished dependencies and backoff', () => {
    const h = new Harness();
    h.submit('low', { priority: 1 }, 1_000);
    h.submit('high-late', { priority: 9 }, 3_000);
    h.submit('high-early', { priority: 9 }, 2_000);
    h.submit('blocked', { priority: 10, dependsOn: ['low'] }, 1_000);
    h.submit('backoff', { priority: 10 }, 1_000);
    h.assign('backoff', 'n1', 1, 1_500);
    h.fail('backoff', 1, true, 1_600);
    const order = readyTasks(h.state, 2_500, 1e9).map((ready) => ready.record.id);
    expect(order).toEqual(['high-early', 'high-late', 'low']);
    expect(readyTasks(h.state, 1_600 + limits.retryBackoffBaseMs, 1e9).map((ready) => ready.record.id)[0]).toBe('backoff');
  });

  it('raises effective priority by one per aging step waited', () => {
    const h = new Harness();
    h.submit('t', { priority: 2 }, 10_000);
    expect(effectivePriority(record(h, 't'), 10_000, 1_000)).toBe(2);
    expect(effectivePriority(record(h, 't'), 14_999, 1_000)).toBe(6);
    expect(effectivePriority(record(h, 't'), 5_000, 1_000)).toBe(2);
    expect(() => effectivePriority(record(h, 't'), 0, 0)).toThrow(/agingStepMs/);
  });

  /** Rounds until 'low' is placed while `perRound` priority-10 tasks arrive per round on one slot. */
  function roundsUntilLowRuns(perRound: number, agingStepMs: number, rounds: number): number {
    const h = new Harness();
    const nodes = [node('n1', { concurrencyLimit: 1 })];
    const roundMs = 1_000;
    let now = 0;
    h.submit('low', { priority: 0 }, now);
    for (let round = 0; round < rounds; round += 1) {
      for (let i = 0; i < perRound; i += 1) h.submit(`high-${round}-${i}`, { priority: 10 }, now);
      const plan = planAssignments(h.state, nodes, [], now, { agingStepMs });
      expect(plan.assignments.length).toBe(1);
      commit(h, plan, now);
      const placed = plan.assignments[0]!;
      if (placed.taskId === 'low') return round;
      h.complete(placed.taskId, 1, 'done', now + 1);
      now += roundMs;
    }
    return -1;
  }

  it('lets a low-priority task through a steady stream of high-priority ones', () => {
    // Without aging it never runs while the stream lasts.
    expect(roundsUntilLowRuns(1, 1e12, 60)).toBe(-1);
    // Arrivals at the service rate: it runs once it has aged 10 steps.
    expect(roundsUntilLowRuns(1, 1_000, 60)).toBe(10);
    // Overload (twice the service rate): it runs after the high tasks submitted in its
    // first 10 steps, whose own waiting keeps them level with it: about 2 x 10 rounds.
    const overloaded = roundsUntilLowRuns(2, 1_000, 60);
    expect(overloaded).toBeGreaterThan(10);
    expect(overloaded).toBeLessThanOrEqual(22);
  });
});

describe('renderPrompt', () => {
  it('fills dependency outputs once, without expanding placeholders inside outputs', () => {
    const h = new Harness();
    h.runToCompletion('a', 'n1', 'A says {{tasks.b.output}}');
    h.runToCompletion('b', 'n1', 'B');
    h.submit('c', { dependsOn: ['a', 'b'], prompt: 'first: {{tasks.a.output}}; second: {{ tasks.b.output }}', system: 'be brief, {{tasks.b.output}}' });
    const rendered = renderPrompt(h.state, record(h, 'c'));
    expect(rendered).toEqual({ ok: true, input: { prompt: 'first: A says {{tasks.b.output}}; second: B', messages: null, system: 'be brief, B' } });
    h.submit('d', { dependsOn: ['a'], prompt: undefined, messages: [{ role: 'user', content: 'x {{tasks.a.output}}' }, { role: 'assistant', content: 'ok' }] });
    expect(renderPrompt(h.state, record(h, 'd'))).toMatchObject({ ok: true, input: { prompt: null, messages: [{ role: 'user', content: 'x A says {{tasks.b.output}}' }, { role: 'assistant', content: 'ok' }] } });
  });

  it('fails with a reason when the result is too long', () => {
    const h = new Harness();
    const big = 'x'.repeat(limits.taskOutputBytesMax);
    h.runToCompletion('a', 'n1', big);
    const many = Array.from({ length: 5 }, () => '{{tasks.a.output}}').join(' ');
    h.submit('b', { dependsOn: ['a'], prompt: many });
    const rendered = renderPrompt(h.state, record(h, 'b'));
    expect(rendered.ok).toBe(false);
    if (!rendered.ok) expect(rendered.reason).toMatch(/over the \d+-character limit/);
  });

  it('fails with a reason when a quoted dependency is not completed', () => {
    const h = new Harness();
    h.submit('a');
    h.submit('b', { dependsOn: ['a'], prompt: 'use {{tasks.a.output}}' });
    expect(renderPrompt(h.state, record(h, 'b'))).toEqual({ ok: false, reason: expect.stringMatching(/task a, which is not a completed dependency/) });
  });
});

describe('eligibility', () => {
  it('needs an alive node with the model installed (tags normalised)', () => {
    const h = new Harness();
    h.submit('t', { model: 'llama3' });
    const nodes = [
      node('dead', { alive: false }),
      node('none', { modelsInstalled: ['mistral'] }),
      node('tagged', { modelsInstalled: ['llama3:latest'] }),
      node('plain'),
      node('zero', { concurrencyLimit: 0 }),
    ];
    expect(eligibleNodes(record(h, 't'), nodes).map((candidate) => candidate.node.id)).toEqual(['plain', 'tagged']);
    expect(sameModel('llama3', 'llama3:latest')).toBe(true);
    expect(sameModel('llama3:8b', 'llama3')).toBe(false);
  });

  it('matches capabilities through agents, best proficiency first, honouring a named model', () => {
    const h = new Harness();
    h.submit('cap', { model: undefined, capability: 'code' });
    h.submit('cap-model', { model: 'qwen', capability: 'code' });
    const n1 = node('n1', {
      modelsInstalled: ['llama3', 'qwen'],
      agents: [
        { id: 'coder-a', model: 'llama3', capabilities: [{ name: 'code', proficiency: 0.6 }] },
        { id: 'coder-b', model: 'qwen', capabilities: [{ name: 'code', proficiency: 0.9 }, { name: 'prose', proficiency: 0.2 }] },
        { id: 'coder-c', model: 'notinstalled', capabilities: [{ name: 'code', proficiency: 1 }] },
      ],
    });
    const n2 = node('n2', { agents: [{ id: 'writer', model: 'llama3', capabilities: [{ name: 'prose', proficiency: 1 }] }] });
    const n3 = node('n3', { agents: [{ id: 'zero', model: 'llama3', capabilities: [{ name: 'code', proficiency: 0 }] }] });
    expect(candidateOn(record(h, 'cap'), n1)).toMatchObject({ agentId: 'coder-b', model: 'qwen', proficiency: 0.9 });
    expect(candidateOn(record(h, 'cap'), n2)).toBeNull();
    expect(candidateOn(record(h, 'cap'), n3)).toBeNull();
    expect(candidateOn(record(h, 'cap-model'), n1)).toMatchObject({ agentId: 'coder-b', model: 'qwen' });
  });
});

describe('estimateCompletionMs', () => {
  const h = new Harness();
  h.submit('t', { prompt: 'x'.repeat(4_000), options: { num_predict: 100 } });
  const task = (): ReturnType<typeof record> => record(h, 't');

  it('adds load time only for a cold model, from its size when known', () => {
    const warm = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3:latest'] }));
    const cold = estimateCompletionMs(task(), node('n'));
    expect(cold - warm).toBe(estimateDefaults.modelLoadMs);
    const sized = estimateCompletionMs(task(), node('n', { modelSizeBytes: { 'llama3:latest': 4e9 } }));
    expect(sized - warm).toBe(estimateDefaults.modelLoadBaseMs + 4_000);
    // A node that measured its loads: 4 GB at 2 GB/s.
    const measured = estimateCompletionMs(task(), node('n', { modelSizeBytes: { 'llama3:latest': 4e9 }, loadBytesPerSecond: 2e9 }));
    expect(measured - warm).toBe(2_000);
  });

  it('expects an unmeasured model to run at the speed of the node\'s other models, scaled by size', () => {
    // Measured 60 tok/s on a 2 GB model; the 4 GB one should run at about half that.
    const measuredOther = node('n', {
      modelsLoaded: ['llama3'], tokensPerSecond: { 'small:1b': 60 },
      modelSizeBytes: { 'small:1b': 2e9, 'llama3:latest': 4e9 },
    });
    expect(expectedTokensPerSecond(measuredOther, 'llama3')).toBe(30);
    // Sizes unknown: the other model's speed as it is.
    expect(expectedTokensPerSecond(node('n', { tokensPerSecond: { other: 45 } }), 'llama3')).toBe(45);
    // Measured beats any guess; nothing measured means no expectation (the default applies).
    expect(expectedTokensPerSecond(node('n', { tokensPerSecond: { llama3: 12, other: 90 } }), 'llama3:latest')).toBe(12);
    expect(expectedTokensPerSecond(node('n'), 'llama3')).toBeUndefined();
    // So a node measured fast on another model wins over an unmeasured one.
    const fastElsewhere = node('fast', { modelsLoaded: ['llama3'], tokensPerSecond: { other: 160 } });
    const unknown = node('a-unknown', { modelsLoaded: ['llama3'] });
    expect(estimateCompletionMs(task(), fastElsewhere)).toBeLessThan(estimateCompletionMs(task(), unknown));
  });

  it('follows measured speed, output length and prompt length', () => {
    const fast = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 100 } }));
    const slow = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], tokensPerSecond: { 'llama3:latest': 10 } }));
    // 1000 prompt tokens at 10x speed + 100 output tokens.
    expect(fast).toBe(Math.round((1_000 / 1_000 + 100 / 100) * 1_000));
    expect(slow).toBe(Math.round((1_000 / 100 + 100 / 10) * 1_000));
    const unmeasured = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'] }));
    expect(unmeasured).toBe(Math.round((1_000 / 200 + 100 / 20) * 1_000));
  });

  it('grows with running generations and adds queue wait once the node is full', () => {
    const idle = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], concurrencyLimit: 2 }));
    const one = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], concurrencyLimit: 2, running: 1 }));
    const full = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], concurrencyLimit: 2, running: 2 }));
    expect(idle).toBeLessThan(one);
    expect(full - one).toBeGreaterThan(one - idle);
    // Once a slot frees, the task runs beside one other (the limit less its own slot), not
    // beside both that run now: the wait is added to the run of a node with one running.
    const freesSoon = estimateCompletionMs(task(), node('n', { modelsLoaded: ['llama3'], concurrencyLimit: 2, running: 2, slotFreeInMs: 300 }));
    expect(freesSoon).toBe(300 + one);
  });

  it('needs a model', () => {
    const capability = new Harness();
    capability.submit('c', { model: undefined, capability: 'code' });
    expect(() => estimateCompletionMs(record(capability, 'c'), node('n'))).toThrow(/names no model/);
  });
});

describe('rankNodesForRequest', () => {
  it('ranks alive nodes with the model by estimate, warm and idle first', () => {
    const nodes = [
      node('cold'),
      node('warm', { modelsLoaded: ['llama3'] }),
      node('warm-full', { modelsLoaded: ['llama3'], running: 2 }),
      node('dead', { alive: false, modelsLoaded: ['llama3'] }),
      node('other', { modelsInstalled: ['mistral'] }),
    ];
    const ranked = rankNodesForRequest({ model: 'llama3:latest', promptCharacters: 400 }, nodes);
    expect(ranked.map((entry) => entry.node.id)).toEqual(['warm', 'cold', 'warm-full']);
    expect(ranked[0]!.estimateMs).toBe(Math.round((100 / 200 + estimateDefaults.outputTokens / 20) * 1_000));
    expect(rankNodesForRequest({ model: 'giant', promptCharacters: 1 }, nodes)).toEqual([]);
  });
});

describe('planAssignments', () => {
  it('prefers the node with the model already in VRAM', () => {
    const h = new Harness();
    h.submit('t');
    const plan = planAssignments(h.state, [node('a'), node('b', { modelsLoaded: ['llama3'] })], [], 5_000);
    expect(plan.assignments).toEqual([expect.objectContaining({ taskId: 't', node: 'b', attempt: 1, model: 'llama3', agentId: null })]);
  });

  it('prefers the faster node when both are warm, and breaks ties by node id', () => {
    const h = new Harness();
    h.submit('t');
    const warm = { modelsLoaded: ['llama3'] };
    expect(planAssignments(h.state, [node('a', { ...warm, tokensPerSecond: { llama3: 30 } }), node('b', { ...warm, tokensPerSecond: { llama3: 90 } })], [], 0).assignments[0]?.node).toBe('b');
    expect(planAssignments(h.state, [node('b', warm), node('a', warm)], [], 0).assignments[0]?.node).toBe('a');
  });

  it('sends a retry to a node where the task has not failed, unless no other node can run it', () => {
    const h = new Harness();
    h.submit('t', { maxAttempts: 5 });
    const fast = node('a', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 200 } });
    const slow = node('b', { tokensPerSecond: { llama3: 20 } });
    let plan = planAssignments(h.state, [fast, slow], [], 0);
    expect(plan.assignments[0]?.node).toBe('a');
    commit(h, plan, 0);
    h.fail('t', 1, true, 1_000);
    // The fastest, warm node failed it: the retry goes to the slow cold one, after its backoff.
    plan = planAssignments(h.state, [fast, slow], [], 60_000);
    expect(plan.assignments[0]).toMatchObject({ taskId: 't', node: 'b', attempt: 2 });
    commit(h, plan, 60_000);
    h.fail('t', 2, true, 61_000);
    // Failed everywhere it can run: any node again, the best first.
    expect(planAssignments(h.state, [fast, slow], [], 120_000).assignments[0]).toMatchObject({ node: 'a', attempt: 3 });
    // A node that cannot run it does not count as an alternative.
    expect(planAssignments(h.state, [fast, node('c', { modelsInstalled: ['other'] })], [], 120_000).assignments[0]?.node).toBe('a');
  });

  it('avoids a node that keeps failing generations while another can run the task (NodeHealth)', () => {
    const health = new NodeHealth();
    const fast = node('a', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 200 } });
    const slow = node('b', { tokensPerSecond: { llama3: 20 } });
    health.record('a', false, 1_000);
    health.record('a', false, 2_000);
    expect(health.avoided(2_000)).toEqual(new Set());
    health.record('a', false, 3_000);
    expect(health.avoided(3_000)).toEqual(new Set(['a']));
    const h = new Harness();
    h.submit('t');
    expect(planAssignments(h.state, [fast, slow], [], 3_000, { avoidNodes: health.avoided(3_000) }).assignments[0]?.node).toBe('b');
    // The only node with the model is used anyway.
    expect(planAssignments(h.state, [fast, node('c', { modelsInstalled: ['other'] })], [], 3_000, { avoidNodes: health.avoided(3_000) }).assignments[0]?.node).toBe('a');
    // A minute after its last failure it is tried again; one success clears it.
    expect(health.avoided(3_000 + nodeAvoidMs)).toEqual(new Set());
    health.record('a', true, 4_000);
    expect(health.avoided(4_000)).toEqual(new Set());
  });

  it('uses bids when present and falls back to estimates when missing', () => {
    const h = new Harness();
    h.submit('t');
    const nodes = [node('a', { modelsLoaded: ['llama3'] }), node('b')];
    // b is cold, but says it will finish sooner (it knows something we do not).
    const plan = planAssignments(h.state, nodes, [{ taskId: 't', node: 'b', estimateMs: 10 }], 0);
    expect(plan.assignments[0]).toMatchObject({ node: 'b', estimateMs: 10 });
    const ignored = planAssignments(h.state, nodes, [{ taskId: 't', node: 'b', estimateMs: Number.NaN }], 0);
    expect(ignored.assignments[0]?.node).toBe('a');
  });

  it('weighs proficiency: a much better agent wins over a slightly faster one', () => {
    const h = new Harness();
    h.submit('t', { model: undefined, capability: 'review' });
    const agent = (proficiency: number) => [{ id: `r${proficiency}`, model: 'llama3', capabilities: [{ name: 'review', proficiency }] }];
    const nodes = [
      node('expert', { agents: agent(0.9), modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 20 } }),
      node('novice', { agents: agent(0.3), modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 30 } }),
    ];
    expect(planAssignments(h.state, nodes, [], 0).assignments[0]).toMatchObject({ node: 'expert', agentId: 'r0.9', model: 'llama3' });
    const equal = [
      node('a', { agents: agent(0.5), modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 20 } }),
      node('b', { agents: agent(0.5), modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 40 } }),
    ];
    expect(planAssignments(h.state, equal, [], 0).assignments[0]?.node).toBe('b');
  });

  it('never puts more in flight on a node than its concurrency limit, across rounds', () => {
    const h = new Harness();
    for (let i = 0; i < 30; i += 1) h.submit(`t${i}`, { priority: i % 11 });
    const nodes = [node('a', { concurrencyLimit: 3 }), node('b', { concurrencyLimit: 1, running: 0 }), node('c', { concurrencyLimit: 2, running: 1 })];
    const limitOf = new Map(nodes.map((view) => [view.id, view.concurrencyLimit - view.running]));
    let now = 0;
    for (let round = 0; round < 12; round += 1) {
      const plan = planAssignments(h.state, nodes, [], now);
      commit(h, plan, now);
      for (const [nodeId, inFlight] of h.state.inFlightByNode()) expect(inFlight).toBeLessThanOrEqual(limitOf.get(nodeId)!);
      // Finish one task per round so slots free up.
      const running = h.state.tasksWithStatus('assigned')[0];
      if (running !== undefined) h.complete(running.id, running.attempt, 'x', now + 1);
      now += 1_000;
    }
    const first = planAssignments(new Harness().state, nodes, [], 0);
    expect(first.assignments).toEqual([]);
    expect(h.state.countsByStatus().completed).toBe(12);
  });

  it('treats a node that measured nothing as typical of the cluster, not as the slowest', () => {
    const h = new Harness();
    h.submit('t', { options: { num_predict: 100 } });
    const warm = { modelsLoaded: ['llama3'] };
    // known-slow measured 20 tok/s; two others measured 80 and 100; "new" measured nothing.
    const nodes = [
      node('a-known-slow', { ...warm, tokensPerSecond: { llama3: 20 } }),
      node('b-busy-80', { ...warm, tokensPerSecond: { llama3: 80 }, concurrencyLimit: 1, running: 1 }),
      node('c-busy-100', { ...warm, tokensPerSecond: { llama3: 100 }, concurrencyLimit: 1, running: 1 }),
      node('d-new', warm),
    ];
    expect(clusterSpeedPrior(nodes, 'llama3')).toBe(80);
    expect(clusterSpeedPrior([node('x'), node('y')], 'llama3')).toBeUndefined();
    // Without the prior the new node (20 tok/s by default) would tie the slow one and lose on id.
    expect(planAssignments(h.state, nodes, [], 0).assignments[0]?.node).toBe('d-new');
  });

  it('expects a full node to free a slot when its soonest attempt ends, from the log', () => {
    const h = new Harness();
    h.submit('long', { options: { num_predict: 2_000 } });
    h.submit('short', { options: { num_predict: 10 } });
    h.assign('long', 'a-long', 1, 2_000);
    h.assign('short', 'b-short', 1, 2_000);
    h.submit('t', { options: { num_predict: 100 } }, 2_000);
    const warm = { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 100 }, concurrencyLimit: 1 };
    const nodes = [node('a-long', warm), node('b-short', warm), node('c-slow', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 5 } })];
    // a-long frees in about 20 s, b-short in about 0.1 s: wait for b-short rather than run 20 s on c-slow.
    expect(slotFreeInMs(h.state, nodes[0]!, 2_000)).toBeGreaterThan(19_000);
    expect(slotFreeInMs(h.state, nodes[1]!, 2_000)).toBeLessThan(200);
    expect(slotFreeInMs(h.state, nodes[2]!, 2_000)).toBeUndefined();
    const plan = planAssignments(h.state, nodes, [], 2_000);
    expect(plan.assignments).toEqual([]);
    expect(plan.waiting.find((entry) => entry.taskId === 't')?.reason).toMatch(/slot on node b-short/);
    // Its time used up, even a-long is expected to free soon; a slot freeing late never goes negative.
    expect(slotFreeInMs(h.state, nodes[0]!, 60_000)).toBe(0);
  });

  it('loads a model on a faster node once the tasks it would have sped up have paid for the load', () => {
    const h = new Harness();
    const fast = node('fast', { tokensPerSecond: { llama3: 160 }, modelSizeBytes: { 'llama3:latest': 2e9 }, concurrencyLimit: 8 });
    const slow = node('slow', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 40 }, concurrencyLimit: 8 });
    // Each 100-token task: 2.5 s warm on slow, 0.6 s warm on fast; loading on fast costs 3 s.
    const regret = new Map<string, number>();
    const placed: string[] = [];
    for (let i = 0; i < 4; i += 1) {
      h.submit(`t${i}`, { options: { num_predict: 100 } }, 1_000 + i);
      const plan = planAssignments(h.state, [fast, slow], [], 2_000 + i, { loadRegret: regret });
      placed.push(...plan.assignments.map((assignment) => assignment.node));
      commit(h, plan, 2_000 + i);
      // Done before the next arrives, so nothing runs beside it.
      h.complete(`t${i}`, 1, 'x', 2_500 + i);
    }
    // Had fast been warm, the first task would have finished ~1.9 s sooner: not yet worth a
    // 3 s load; after the second the regret covers it and that task goes cold to fast. (The
    // views here never show the model loaded afterwards, so the count starts over.)
    expect(placed).toEqual(['slow', 'fast', 'slow', 'fast']);
    // Without the ski rental the fast node never loads it.
    const myopic = new Harness();
    myopic.submit('m', { options: { num_predict: 100 } });
    expect(planAssignments(myopic.state, [fast, slow], [], 2_000).assignments[0]?.node).toBe('slow');
  });

  it('with preloads, buys a load by preloading it: the task that paid for it goes where it is fastest now', () => {
    const h = new Harness();
    const fast = node('fast', { tokensPerSecond: { llama3: 160 }, modelSizeBytes: { 'llama3:latest': 2e9 }, concurrencyLimit: 8 });
    const slow = node('slow', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 40 }, concurrencyLimit: 8 });
    const regret = new Map<string, number>();
    const loading = new Map<string, number>();
    const rounds: Array<{ placed: string[]; preloads: string[] }> = [];
    for (let i = 0; i < 3; i += 1) {
      h.submit(`t${i}`, { options: { num_predict: 100 } }, 1_000 + i);
      const plan = planAssignments(h.state, [fast, slow], [], 2_000 + i, { loadRegret: regret, loading });
      rounds.push({ placed: plan.assignments.map((assignment) => assignment.node), preloads: plan.preloads.map((preload) => `${preload.node}:${preload.model}`) });
      commit(h, plan, 2_000 + i);
      h.complete(`t${i}`, 1, 'x', 2_500 + i);
    }
    // The second task's regret covers the load, as in the test above; but that task still
    // goes to slow (2.5 s, not 3 s of load and 0.6 s of run on fast), and fast loads the
    // model meanwhile. No second preload while the first is under way.
    expect(rounds).toEqual([
      { placed: ['slow'], preloads: [] },
      { placed: ['slow'], preloads: ['fast:llama3'] },
      { placed: ['slow'], preloads: [] },
    ]);
    const readyAt = loading.get(nodeModelKey('fast', 'llama3:latest'));
    // The load estimate: 1 s + 2 GB at 1 GB/s, from when it was asked.
    expect(readyAt).toBe(2_001 + 3_000);
    // Once the load should be nearly done, fast counts only its rest: a task goes there.
    h.submit('late', { options: { num_predict: 100 } }, 4_000);
    const plan = planAssignments(h.state, [fast, slow], [], 4_800, { loadRegret: regret, loading });
    expect(plan.assignments.map((assignment) => assignment.node)).toEqual(['fast']);
    expect(plan.assignments[0]!.estimateMs).toBe(201 + estimateCompletionMs(record(h, 'late'), { ...fast, modelsLoaded: ['llama3'] }));
    expect(plan.preloads).toEqual([]);
  });

  it('with loads tracked, a task sent to a node where its model is cold records that load for later rounds', () => {
    const h = new Harness();
    const only = node('only', { tokensPerSecond: { llama3: 100 }, modelSizeBytes: { 'llama3:latest': 2e9 }, concurrencyLimit: 4 });
    const loading = new Map<string, number>();
    h.submit('a', { options: { num_predict: 100 } });
    const first = planAssignments(h.state, [only], [], 10_000, { loading });
    commit(h, first, 10_000);
    expect(first.preloads).toEqual([]);
    expect(loading.get(nodeModelKey('only', 'llama3'))).toBe(10_000 + 3_000);
    // A second later, the next task's estimate there counts the 2 s left of that load, not 3 s.
    h.submit('b', { options: { num_predict: 100 } });
    const second = planAssignments(h.state, [only], [], 11_000, { loading });
    const warm = estimateCompletionMs(record(h, 'b'), { ...only, modelsLoaded: ['llama3'], running: 1 });
    expect(second.assignments[0]!.estimateMs).toBe(2_000 + warm);
  });

  it('waits for a much faster busy node, but spills a deep queue over to a free slow one', () => {
    const h = new Harness();
    for (let i = 0; i < 6; i += 1) h.submit(`t${i}`, { options: { num_predict: 200 } });
    const warm = { modelsLoaded: ['llama3'] };
    // fast: 160 tokens/s, both slots busy; slow: 20 tokens/s, idle.
    const nodes = [
      node('fast', { ...warm, tokensPerSecond: { llama3: 160 }, concurrencyLimit: 2, running: 2 }),
      node('slow', { ...warm, tokensPerSecond: { llama3: 20 }, concurrencyLimit: 2 }),
    ];
    const plan = planAssignments(h.state, nodes, [], 0);
    // The first tasks wait for the fast node; once its virtual queue is deep, the slow node takes work.
    expect(plan.waiting.filter((item) => item.reason.includes('waiting for a slot on node fast')).length).toBeGreaterThan(0);
    expect(plan.assignments.map((assignment) => assignment.node)).toContain('slow');
    expect(plan.assignments.every((assignment) => assignment.node === 'slow')).toBe(true);
    // With the fast node no faster than the free one, nothing waits for it.
    const even = [
      node('fast', { ...warm, tokensPerSecond: { llama3: 20 }, concurrencyLimit: 2, running: 2 }),
      node('slow', { ...warm, tokensPerSecond: { llama3: 20 }, concurrencyLimit: 2 }),
    ];
    expect(planAssignments(h.state, even, [], 0).waiting.some((item) => item.reason.includes('waiting for a slot'))).toBe(false);
  });

  it('does not hold a task for a fast node kept busy by higher-priority work, nor longer than waiting could save', () => {
    const warm = { modelsLoaded: ['llama3', 'qwen'] };
    // fast: 160 tokens/s, both slots busy, the only node with qwen; slow: 20 tokens/s, idle.
    const nodes = [
      node('fast', { ...warm, modelsInstalled: ['llama3', 'qwen'], tokensPerSecond: { llama3: 160, qwen: 160 }, concurrencyLimit: 2, running: 2 }),
      node('slow', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 20 }, concurrencyLimit: 2 }),
    ];
    // Alone, a low-priority task waits for the fast node (it would finish there ~8 s sooner)...
    const alone = new Harness();
    alone.submit('low', { priority: 0, options: { num_predict: 200 } }, 1_000);
    expect(planAssignments(alone.state, nodes, [], 1_000).waiting[0]?.reason).toContain('waiting for a slot on node fast');
    // ...but not for longer than that: after 10 s held, it takes the free slow node.
    expect(planAssignments(alone.state, nodes, [], 11_000).assignments[0]?.node).toBe('slow');
    // Behind a queue of higher-priority tasks only the fast node can run, it does not wait at all:
    // the fast node's estimate counts them.
    const behind = new Harness();
    for (let i = 0; i < 8; i += 1) behind.submit(`high${i}`, { model: 'qwen', priority: 10, options: { num_predict: 200 } }, 1_000);
    behind.submit('low', { priority: 0, options: { num_predict: 200 } }, 1_000);
    const plan = planAssignments(behind.state, nodes, [], 1_000);
    expect(plan.assignments).toEqual([expect.objectContaining({ taskId: 'low', node: 'slow' })]);
    expect(plan.waiting.map((item) => item.taskId).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `high${i}`).sort());
  });

  it('sends a retry to a free node where it failed rather than wait for a busy one where it did not', () => {
    const h = new Harness();
    h.submit('t', { maxAttempts: 5 });
    const fast = node('a', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 200 } });
    commit(h, planAssignments(h.state, [fast, node('b')], [], 0), 0);
    h.fail('t', 1, true, 1_000);
    // b has not run it but is busy; a failed it (say, a timeout too short for it) and is idle.
    const busyB = node('b', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 200 }, running: 2 });
    expect(planAssignments(h.state, [fast, busyB], [], 60_000).assignments[0]).toMatchObject({ node: 'a', attempt: 2 });
    // Once b is free, the retry goes there.
    expect(planAssignments(h.state, [fast, { ...busyB, running: 0 }], [], 60_000).assignments[0]).toMatchObject({ node: 'b', attempt: 2 });
  });

  it('counts several assignments of one round against the node, spreading work', () => {
    const h = new Harness();
    h.submit('t1');
    h.submit('t2');
    const nodes = [node('a', { concurrencyLimit: 4, modelsLoaded: ['llama3'] }), node('b', { concurrencyLimit: 4, modelsLoaded: ['llama3'] })];
    expect(planAssignments(h.state, nodes, [], 0).assignments.map((assignment) => assignment.node)).toEqual(['a', 'b']);
  });

  it('sends a pinned task to its node only, and explains why it waits', () => {
    const h = new Harness();
    h.submit('t');
    h.ok({ type: 'task.pin', id: 't', node: 'slow' });
    const slow = node('slow', { concurrencyLimit: 1, tokensPerSecond: { llama3: 1 } });
    const fast = node('fast', { modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 100 } });
    expect(planAssignments(h.state, [fast, slow], [], 0).assignments).toEqual([expect.objectContaining({ node: 'slow' })]);
    const busy = planAssignments(h.state, [fast, { ...slow, running: 1 }], [], 0);
    expect(busy).toEqual({ assignments: [], preloads: [], waiting: [{ taskId: 't', reason: 'node slow is busy (all 1 slots taken)' }] });
    expect(planAssignments(h.state, [fast, { ...slow, alive: false }], [], 0).waiting[0]?.reason).toBe('pinned to node slow, which is not alive');
    expect(planAssignments(h.state, [fast], [], 0).waiting[0]?.reason).toBe('pinned to node slow, which is not in the cluster');
    expect(planAssignments(h.state, [fast, { ...slow, modelsInstalled: [] }], [], 0).waiting[0]?.reason).toBe('pinned to node slow, which lacks model llama3');
  });

  it('leaves tasks nobody can run queued, with the reason', () => {
    const h = new Harness();
    h.submit('nobody', { model: 'giant' });
    h.submit('dead-only', { model: 'mistral' });
    h.submit('cap', { model: undefined, capability: 'poetry' });
    h.submit('closed', { model: 'qwen' });
    const plan = planAssignments(h.state, [node('a'), node('b', { alive: false, modelsInstalled: ['mistral'] }), node('c', { modelsInstalled: ['qwen'], concurrencyLimit: 0 })], [], 0);
    expect(plan.assignments).toEqual([]);
    expect(Object.fromEntries(plan.waiting.map((waiting) => [waiting.taskId, waiting.reason]))).toEqual({
      nobody: 'no node has model giant',
      'dead-only': 'no alive node has model mistral',
      cap: 'no node has an agent with capability poetry',
      closed: 'the nodes with model qwen take no work (concurrency limit 0)',
    });
  });

  it('stops at the per-round bound', () => {
    const h = new Harness();
    for (let i = 0; i < 5; i += 1) h.submit(`t${i}`);
    const plan = planAssignments(h.state, [node('a', { concurrencyLimit: 10 })], [], 0, { assignmentsMax: 2 });
    expect(plan.assignments.length).toBe(2);
    expect(plan.waiting).toEqual([0, 1, 2].map(() => expect.objectContaining({ reason: 'waiting for the next scheduling round' })));
  });

  it('with stopWhenFull, stops weighing tasks once every alive node is full (the leader: thousands queued held its loop)', () => {
    const h = new Harness();
    for (let i = 0; i < 2_000; i += 1) h.submit(`t${i}`, { priority: i % 11 }, 1_000 + i);
    const nodes = [node('a', { concurrencyLimit: 2 }), node('b', { concurrencyLimit: 1 }), node('dead', { alive: false, concurrencyLimit: 4 })];
    const full = planAssignments(h.state, nodes, [], 10_000, { stopWhenFull: true });
    const weighed = planAssignments(h.state, nodes, [], 10_000);
    expect(full.assignments).toEqual(weighed.assignments);
    expect(full.assignments.length).toBe(3);
    // Every task after the last free slot went is listed, none weighed on a node.
    expect(full.waiting.length).toBe(2_000 - 3);
    expect(full.waiting.filter((entry) => entry.reason === fullWaitingReason).length).toBeGreaterThanOrEqual(2_000 - 3 - 1);
    expect(weighed.waiting.some((entry) => entry.reason === fullWaitingReason)).toBe(false);
  });

  it('produces assignments the state accepts, and the next plan does not repeat them', () => {
    const h = new Harness();
    h.submit('t1');
    h.submit('t2');
    const nodes = [node('a', { concurrencyLimit: 1 }), node('b', { concurrencyLimit: 1 })];
    const plan = planAssignments(h.state, nodes, [], 0);
    expect(plan.assignments.length).toBe(2);
    for (const assignment of plan.assignments) expect(() => encodeCommand(assignmentCommand(assignment, 3, 0))).not.toThrow();
    commit(h, plan, 0, 3);
    expect(h.state.getTask('t1')?.attempts[0]).toMatchObject({ term: 3, model: 'llama3' });
    expect(planAssignments(h.state, nodes, [], 0).assignments).toEqual([]);
  });
});

describe('planAssignments under random clusters', () => {
  function random(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it.each([11, 12, 13, 14, 15, 16])('seed %i: slots, eligibility and pins always hold', (seed) => {
    const next = random(seed);
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
    const models = ['llama3', 'qwen', 'mistral'];
    const h = new Harness();
    let now = 0;
    let placedTotal = 0;
    for (let round = 0; round < 30; round += 1) {
      now += 1_000;
      const nodes = Array.from({ length: 5 }, (_, i) => node(`n${i}`, {
        alive: next() < 0.8,
        modelsInstalled: models.filter(() => next() < 0.6),
        modelsLoaded: models.filter(() => next() < 0.3),
        tokensPerSecond: { llama3: 10 + Math.floor(next() * 50), qwen: 10 + Math.floor(next() * 50) },
        running: Math.floor(next() * 2),
        concurrencyLimit: Math.floor(next() * 4),
        agents: [{ id: `a${i}`, model: pick(models), capabilities: [{ name: 'code', proficiency: next() }] }],
      }));
      for (let i = 0; i < 4; i += 1) {
        const id = `r${round}-${i}`;
        h.submit(id, next() < 0.3 ? { model: undefined, capability: 'code' } : { model: pick(models), priority: Math.floor(next() * 11) }, now);
        if (next() < 0.1) h.ok({ type: 'task.pin', id, node: pick(nodes).id });
      }
      const regret = new Map<string, number>();
      const regretFull = new Map<string, number>();
      const plan = planAssignments(h.state, nodes, [], now, { assignmentsMax: 6, loadRegret: regret });
      // The leader's cheaper round (stopWhenFull) places exactly the same tasks.
      const planFull = planAssignments(h.state, nodes, [], now, { assignmentsMax: 6, loadRegret: regretFull, stopWhenFull: true });
      expect(planFull.assignments).toEqual(plan.assignments);
      expect(regretFull).toEqual(regret);
      expect(planFull.waiting.map((entry) => entry.taskId).sort()).toEqual(plan.waiting.map((entry) => entry.taskId).sort());
      expect(plan.assignments.length).toBeLessThanOrEqual(6);
      const perNode = new Map<string, number>();
      for (const assignment of plan.assignments) {
        const task = record(h, assignment.taskId);
        const target = nodes.find((view) => view.id === assignment.node)!;
        expect(candidateOn(task, target)).not.toBeNull();
        if (task.pinnedNode !== null) expect(assignment.node).toBe(task.pinnedNode);
        perNode.set(assignment.node, (perNode.get(assignment.node) ?? 0) + 1);
      }
      const inFlight = h.state.inFlightByNode();
      const runningInLog = new Map<string, number>();
      for (const task of h.state.tasksWithStatus('running')) runningInLog.set(task.assignedNode!, (runningInLog.get(task.assignedNode!) ?? 0) + 1);
      for (const view of nodes) {
        const other = Math.max(0, view.running - (runningInLog.get(view.id) ?? 0));
        expect((inFlight.get(view.id) ?? 0) + other + (perNode.get(view.id) ?? 0)).toBeLessThanOrEqual(Math.max(view.concurrencyLimit, (inFlight.get(view.id) ?? 0) + other));
      }
      commit(h, plan, now);
      placedTotal += plan.assignments.length;
      // Finish or lose some running work so the cluster keeps moving.
      for (const task of h.state.tasksWithStatus('assigned')) {
        const roll = next();
        if (roll < 0.5) h.complete(task.id, task.attempt, 'ok', now + 1);
        else if (roll < 0.6) h.requeue(task.id, task.attempt, now + 1);
      }
      for (const waiting of plan.waiting) expect(waiting.reason.length).toBeGreaterThan(0);
    }
    expect(placedTotal).toBeGreaterThan(10);
  });
});

describe('waitingReason', () => {
  it('explains dependencies, backoff, missing models and busy nodes; null when placeable', () => {
    const h = new Harness();
    h.submit('a');
    h.submit('b', { dependsOn: ['a'] });
    const nodes = [node('n1', { concurrencyLimit: 1 })];
    expect(waitingReason(h.state, record(h, 'b'), nodes, 0)).toBe('dependencies a');
    expect(waitingReason(h.state, record(h, 'a'), nodes, 0)).toBeNull();
    expect(waitingReason(h.state, record(h, 'a'), [], 0)).toBe('no node has model llama3');
    h.assign('a', 'n1', 1, 0);
    expect(waitingReason(h.state, record(h, 'a'), nodes, 0)).toBeNull();
    h.submit('c');
    expect(waitingReason(h.state, record(h, 'c'), nodes, 0)).toBe('node n1 is busy (1 of 1 slots taken)');
    // A node with a name is named, with its id.
    expect(waitingReason(h.state, record(h, 'c'), [{ ...nodes[0]!, name: 'gpu-box' }], 0)).toBe('node gpu-box (n1) is busy (1 of 1 slots taken)');
    h.fail('a', 1, true, 100);
    expect(waitingReason(h.state, record(h, 'a'), nodes, 200)).toBe(`retry backoff for another ${100 + limits.retryBackoffBaseMs - 200} ms`);
    expect(describeTask(h.state, 'c', nodes, 200)?.waitingFor).toBeNull();
    expect(describeTask(h.state, 'c', [], 200)?.waitingFor).toBe('no node has model llama3');
    expect(describeTask(h.state, 'missing', nodes, 200)).toBeUndefined();
  });
});

describe('recovery', () => {
  it('requeues the attempts of dead nodes, fenced by attempt', () => {
    const h = new Harness();
    h.submit('on-dead');
    h.submit('running-on-dead');
    h.submit('on-alive');
    h.assign('on-dead', 'n1', 1);
    h.assign('running-on-dead', 'n1', 1);
    h.start('running-on-dead', 'n1', 1);
    h.assign('on-alive', 'n2', 1);
    expect(tasksToRequeue(h.state, [], 5_000)).toEqual([]);
    const requeues = tasksToRequeue(h.state, ['n1'], 5_000);
    expect(requeues).toEqual([
      { type: 'task.requeue', id: 'on-dead', attempt: 1, at: 5_000, reason: 'node n1 stopped answering (declared dead) during attempt 1' },
      { type: 'task.requeue', id: 'running-on-dead', attempt: 1, at: 5_000, reason: 'node n1 stopped answering (declared dead) during attempt 1' },
    ]);
    for (const requeue of requeues) h.ok(requeue);
    expect(h.state.countsByStatus()).toMatchObject({ queued: 2, assigned: 1 });
    expect(tasksToRequeue(h.state, ['n2'], 6_000, (nodeId) => `node ${nodeId} lost the quorum`)[0]?.reason).toBe('node n2 lost the quorum');
  });

  it('requeues attempts that never started or ran past their timeout', () => {
    const h = new Harness();
    h.submit('never-started');
    h.submit('slow', { timeoutMs: 10_000 });
    h.submit('fine', { timeoutMs: 60_000 });
    h.assign('never-started', 'n1', 1, 1_000);
    h.assign('slow', 'n2', 1, 1_000);
    h.start('slow', 'n2', 1, 2_000);
    h.assign('fine', 'n2', 1, 1_000);
    h.start('fine', 'n2', 1, 2_000);
    expect(timedOutTasks(h.state, 5_000)).toEqual([]);
    const late = timedOutTasks(h.state, 12_000, { startTimeoutMs: 5_000 });
    expect(late.map((requeue) => [requeue.id, requeue.reason])).toEqual([
      ['never-started', 'node n1 did not start attempt 1 within 5000 ms'],
      ['slow', 'attempt 1 on node n2 timed out after 10000 ms'],
    ]);
    expect(timedOutTasks(h.state, 1_000 + limits.taskStartTimeoutMsDefault).map((requeue) => requeue.id)).toEqual(['never-started', 'slow']);
  });
});

describe('nodeViewFromHeartbeat', () => {
  it('takes models, speeds, load and agents from a heartbeat; leaving or Ollama-less nodes take no work', () => {
    const heartbeat = {
      nodeId: 'n1', leaving: false,
      ollama: {
        reachable: true,
        installed: [{ name: 'llama3:8b', sizeBytes: 4_700_000_000 }],
        loaded: [{ name: 'llama3:8b', sizeBytes: 4_700_000_000, vramBytes: 5e9, expiresAt: null }],
        tokensPerSecond: { 'llama3:8b': 55 },
      },
      load: { running: 1, queued: 0, concurrencyLimit: 4 },
      agents: [{ id: 'coder', model: 'llama3:8b', capabilities: [{ name: 'code', proficiency: 0.8 }] }],
    } as unknown as Heartbeat;
    expect(nodeViewFromHeartbeat(heartbeat, true)).toEqual({
      id: 'n1', alive: true, modelsInstalled: ['llama3:8b'], modelsLoaded: ['llama3:8b'], tokensPerSecond: { 'llama3:8b': 55 },
      modelSizeBytes: { 'llama3:8b': 4_700_000_000 }, running: 1, concurrencyLimit: 4,
      agents: [{ id: 'coder', model: 'llama3:8b', capabilities: [{ name: 'code', proficiency: 0.8 }] }],
    });
    expect(nodeViewFromHeartbeat({ ...heartbeat, leaving: true }, true).alive).toBe(false);
    expect(nodeViewFromHeartbeat({ ...heartbeat, ollama: { ...heartbeat.ollama, reachable: false } }, true).alive).toBe(false);
  });
});
