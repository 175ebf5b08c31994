// The leader's scheduling loop over a real replicated state and fake members: late binding
// within concurrency limits, one assignment per task in flight, bids steering placement
// (and not waited for when the queue is deep), recovery of dead nodes' and overdue
// attempts, and doing nothing while not the leader.
import { afterEach, describe, expect, it } from 'vitest';
import { decodeCommand } from '../../scheduler/state/commands.ts';
import { Harness } from '../../scheduler/state/test-helpers.ts';
import { nodeViewFromHeartbeat } from '../../scheduler/tasks/node-view.ts';
import type { Bid } from '../../scheduler/tasks/placement.ts';
import type { MemberView } from '../membership/membership.ts';
import { LeaderScheduler, type RaftStatusView } from './leader.ts';
import { memberOf, heartbeatOf, type FakeNode } from './test-cluster.ts';
import { waitFor } from './test-harness.ts';

const schedulers: LeaderScheduler[] = [];
afterEach(() => { for (const scheduler of schedulers.splice(0)) scheduler.stop(); });

function setup(nodes: FakeNode[], options: {
  bids?: (taskIds: string[]) => Bid[]; otherWork?: number; keepFinished?: number; pruneEveryMs?: number; bidRoundEveryMs?: number;
  preload?: (node: string, model: string, term: number) => void;
} = {}) {
  const log = new Harness();
  const proposals: string[] = [];
  const raft: RaftStatusView = { role: 'leader', term: 4, leader: 'n1' };
  let members: MemberView[] = nodes.map((node) => memberOf(node, node.id === 'n1'));
  const bidCalls: string[][] = [];
  const bidCallTimes: number[] = [];
  const scheduler = new LeaderScheduler({
    nodeId: 'n1',
    state: () => log.state,
    propose: async (data) => {
      await new Promise((resolve) => setImmediate(resolve));
      proposals.push(data);
      log.index = log.state.lastApplied + 1;
      const result = log.state.apply(log.index, data);
      scheduler.kick();
      return result;
    },
    raftStatus: () => raft,
    members: () => members,
    selfView: () => nodeViewFromHeartbeat(heartbeatOf(nodes.find((node) => node.id === 'n1')!), true),
    otherWork: () => options.otherWork ?? 0,
    bids: {
      collect: async (tasks) => {
        bidCalls.push(tasks.map((task) => task.id));
        bidCallTimes.push(performance.now());
        return options.bids?.(tasks.map((task) => task.id)) ?? [];
      },
    },
    ...(options.preload === undefined ? {} : { preload: options.preload }),
    keepFinishedTasks: options.keepFinished ?? 100,
    keepFinishedTasksMs: 60_000,
    timing: { tickMs: 10, recoveryEveryMs: 10, unknownNodeGraceMs: 50, pruneEveryMs: options.pruneEveryMs ?? 60_000, bidRoundEveryMs: options.bidRoundEveryMs ?? 0 },
  });
  schedulers.push(scheduler);
  const assigns = () => proposals.map((data) => decodeCommand(data)).filter((command) => command.type === 'task.assign');
  return {
    log, raft, scheduler, proposals, bidCalls, bidCallTimes, assigns,
    setMembers: (next: FakeNode[]) => { members = next.map((node) => memberOf(node, node.id === 'n1')); },
  };
}

const now = () => Date.now();

describe('LeaderScheduler', () => {
  it('asks a faster node to preload a model once the tasks it would have sped up paid for it, and sends tasks there once loaded', async () => {
    const slow: FakeNode = { id: 'n1', models: ['llama3'], loaded: ['llama3'], tokensPerSecond: { llama3: 40 }, concurrency: 4 };
    const fast: FakeNode = { id: 'n2', models: ['llama3'], tokensPerSecond: { llama3: 160 }, concurrency: 4 };
    const preloads: string[] = [];
    const { log, scheduler, assigns, setMembers } = setup([slow, fast], { preload: (node, model, term) => preloads.push(`${node} ${model} term ${term}`) });
    scheduler.start();
    // 200 tokens: 5 s on n1; 1.25 s on n2 once the model is there, which takes ~5 s to load.
    // Each task alone, so none runs beside another.
    for (const [n, id] of ['t0', 't1', 't2'].entries()) {
      log.submit(id, { model: 'llama3', options: { num_predict: 200 } }, now());
      scheduler.kick();
      await waitFor(`${id} assigned`, () => assigns().length === n + 1);
      log.complete(id, 1, 'done', now());
    }
    // The second task's regret covered the load: n2 loads it, while the tasks stay on n1
    // (sent cold to n2, each would have waited for the load). One preload, not one per task.
    expect(assigns().map((command) => command.node)).toEqual(['n1', 'n1', 'n1']);
    expect(preloads).toEqual(['n2 llama3 term 4']);
    expect(scheduler.stats.preloadsAsked).toBe(1);
    // n2's heartbeat shows the model in VRAM: the next task goes there.
    setMembers([slow, { ...fast, loaded: ['llama3'] }]);
    log.submit('t3', { model: 'llama3', options: { num_predict: 200 } }, now());
    scheduler.kick();
    await waitFor('t3 assigned', () => assigns().length === 4);
    expect(assigns()[3]!.node).toBe('n2');
    expect(preloads).toHaveLength(1);
  });

  it('hands each node at most its concurrency and assigns more as slots free up', async () => {
    const nodes = [{ id: 'n1', models: ['llama3'] }, { id: 'n2', models: ['llama3'] }, { id: 'n3', models: ['llama3'] }];
    const { log, scheduler, assigns } = setup(nodes);
    for (let n = 0; n < 10; n += 1) log.submit(`t${n}`, { model: 'llama3' }, now());
    scheduler.start();
    await waitFor('six assignments', () => assigns().length === 6);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(assigns()).toHaveLength(6);
    const perNode = log.state.inFlightByNode();
    expect([...perNode.values()]).toEqual([2, 2, 2]);
    const first = assigns()[0]!;
    log.complete(first.id, 1, 'done', now());
    scheduler.kick();
    await waitFor('a seventh assignment', () => assigns().length === 7);
    expect(assigns()[6]!.node).toBe(first.node);
    // Never two assignments for one task.
    const ids = assigns().map((command) => command.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(assigns().every((command) => command.term === 4 && command.attempt === 1)).toBe(true);
  });

  it('counts this node\'s gateway work as taken slots', async () => {
    const nodes = [{ id: 'n1', models: ['llama3'], concurrency: 3 }];
    const { log, scheduler, assigns } = setup(nodes, { otherWork: 2 });
    for (let n = 0; n < 5; n += 1) log.submit(`t${n}`, { model: 'llama3' }, now());
    scheduler.start();
    await waitFor('an assignment', () => assigns().length === 1);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(assigns()).toHaveLength(1);
  });

  it('places on the best bid, and asks for no bids for tasks only one node can run', async () => {
    const nodes = [
      { id: 'n1', models: ['other'] },
      { id: 'n2', models: ['llama3', 'solo'] },
      { id: 'n3', models: ['llama3'], loaded: ['llama3'] },
    ];
    const { log, scheduler, assigns, bidCalls } = setup(nodes, {
      // n2 says it is much faster than n3 (the gossip view would favour n3, which has the model loaded).
      bids: (ids) => ids.flatMap((taskId) => [{ taskId, node: 'n2', estimateMs: 10 }, { taskId, node: 'n3', estimateMs: 90_000 }]),
    });
    log.submit('t1', { model: 'llama3' }, now());
    log.submit('t2', { model: 'solo' }, now());
    scheduler.start();
    await waitFor('both assigned', () => assigns().length === 2);
    expect(bidCalls[0]).toEqual(['t1']);
    expect(assigns().find((command) => command.id === 't1')!.node).toBe('n2');
    expect(assigns().find((command) => command.id === 't2')!.node).toBe('n2');
  });

  it('spaces bid rounds: tasks ready soon after a round are held and asked about together in the next', async () => {
    const nodes = [{ id: 'n1', models: ['llama3'] }, { id: 'n2', models: ['llama3'] }, { id: 'n3', models: ['llama3'], concurrency: 4 }];
    const { log, scheduler, assigns, bidCalls, bidCallTimes } = setup(nodes, {
      bidRoundEveryMs: 300,
      bids: (ids) => ids.map((taskId) => ({ taskId, node: 'n3', estimateMs: 1 })),
    });
    log.submit('t1', { model: 'llama3' }, now());
    scheduler.start();
    await waitFor('t1 assigned', () => assigns().length === 1);
    log.submit('t2', { model: 'llama3' }, now());
    log.submit('t3', { model: 'llama3' }, now());
    scheduler.kick();
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Many rounds ran meanwhile (the 10 ms tick); none asked for bids or placed the new tasks.
    expect(bidCalls).toEqual([['t1']]);
    expect(assigns()).toHaveLength(1);
    await waitFor('t2 and t3 assigned', () => assigns().length === 3);
    expect(bidCallTimes[1]! - bidCallTimes[0]!).toBeGreaterThanOrEqual(295);
    expect(bidCalls).toEqual([['t1'], ['t2', 't3']]);
    expect(assigns().map((command) => command.node)).toEqual(['n3', 'n3', 'n3']);
  });

  it('does not wait for bids when the queue is deep', async () => {
    const nodes = [{ id: 'n1', models: ['llama3'], concurrency: 64 }, { id: 'n2', models: ['llama3'], concurrency: 64 }];
    const { log, scheduler, assigns, bidCalls } = setup(nodes);
    for (let n = 0; n < 40; n += 1) log.submit(`t${n}`, { model: 'llama3' }, now());
    scheduler.start();
    await waitFor('all assigned', () => assigns().length === 40);
    expect(bidCalls).toEqual([]);
  });

  it('requeues the attempts of a dead node and of a node nobody knows any more', async () => {
    const nodes: FakeNode[] = [{ id: 'n1', models: ['other'] }, { id: 'n2', models: ['llama3'] }, { id: 'n3', models: ['llama3'] }];
    const { log, scheduler, proposals, setMembers } = setup(nodes);
    log.submit('a', { model: 'llama3' }, now());
    log.submit('b', { model: 'llama3' }, now());
    log.assign('a', 'n2', 1, now(), 4);
    log.assign('b', 'n3', 1, now(), 4);
    log.start('b', 'n3', 1, now());
    setMembers([nodes[0]!, { ...nodes[1]!, state: 'dead' }]);
    scheduler.start();
    await waitFor('both requeued', () => log.state.getTaskRecord('a')?.attempts[0]?.status === 'lost' && log.state.getTaskRecord('b')?.attempts[0]?.status === 'lost', 3_000);
    const reasons = proposals.map((data) => decodeCommand(data)).filter((command) => command.type === 'task.requeue').map((command) => (command as { reason: string }).reason);
    expect(reasons.some((reason) => /n2 stopped answering/.test(reason))).toBe(true);
    expect(reasons.some((reason) => /n3 is not a known member/.test(reason))).toBe(true);
    expect(log.state.getTaskRecord('a')?.status).toBe('queued');
  });

  it('requeues an attempt that was not started in time or overran its timeout', async () => {
    const nodes = [{ id: 'n1', models: ['other'] }, { id: 'n2', models: ['llama3'] }];
    const { log, scheduler } = setup(nodes);
    log.submit('late', { model: 'llama3' }, now() - 60_000);
    log.assign('late', 'n2', 1, now() - 31_000, 4);
    log.submit('long', { model: 'llama3', timeoutMs: 1_000 }, now() - 60_000);
    log.assign('long', 'n2', 1, now() - 5_000, 4);
    log.start('long', 'n2', 1, now() - 2_000);
    scheduler.start();
    await waitFor('both requeued', () => log.state.getTaskRecord('late')?.attempts[0]?.status === 'lost' && log.state.getTaskRecord('long')?.attempts[0]?.status === 'lost', 3_000);
    expect(log.state.getTaskRecord('late')?.attempts[0]?.error).toMatch(/did not start attempt 1 within 30000 ms/);
    expect(log.state.getTaskRecord('long')?.attempts[0]?.error).toMatch(/timed out after 1000 ms/);
  });

  it('prunes finished tasks beyond the configured count', async () => {
    const nodes = [{ id: 'n1', models: ['other'] }];
    const { log, scheduler } = setup(nodes, { keepFinished: 2, pruneEveryMs: 30 });
    for (let n = 0; n < 5; n += 1) {
      log.submit(`t${n}`, { model: 'llama3' }, now());
      log.cancel(`t${n}`, now() + n);
    }
    scheduler.start();
    await waitFor('pruning down to two finished tasks', () => log.state.taskCount === 2, 3_000);
    expect(log.state.getTaskRecord('t4')).toBeDefined();
    expect(log.state.getTaskRecord('t0')).toBeUndefined();
    expect(scheduler.stats.prunes).toBeGreaterThanOrEqual(1);
  });

  it('does nothing while it is not the leader, and starts when it becomes one', async () => {
    const nodes = [{ id: 'n1', models: ['llama3'] }];
    const { log, raft, scheduler, assigns } = setup(nodes);
    raft.role = 'follower';
    log.submit('t1', { model: 'llama3' }, now());
    scheduler.start();
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(assigns()).toHaveLength(0);
    raft.role = 'leader';
    raft.term = 5;
    await waitFor('an assignment', () => assigns().length === 1);
    expect(assigns()[0]!.term).toBe(5);
  });
});
