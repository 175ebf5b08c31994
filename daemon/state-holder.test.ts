// The daemon's hold on the replicated state: a snapshot installed over a running node's
// state tells the node of the task transitions inside it (event streams, executor).
import { describe, expect, it } from 'vitest';
import type { TaskStatusEvent } from '../protocol/tasks.ts';
import { Harness } from '../scheduler/state/test-helpers.ts';
import { StateHolder } from './daemon.ts';

describe('StateHolder.restore', () => {
  it('reports the transitions a snapshot carried over a running state, and none at start-up', () => {
    const leader = new Harness();
    leader.submit('t1', {}, 10);
    const early = leader.state.snapshot();
    leader.assign('t1', 'n1', 1, 20);
    leader.complete('t1', 1, 'done', 30);
    const late = leader.state.snapshot();

    const holder = new StateHolder();
    const told: TaskStatusEvent[][] = [];
    holder.onRestored = (events) => told.push(events);
    holder.restore(early); // start-up: from this node's own snapshot
    expect(told).toEqual([]);
    holder.restore(late); // catching up: the leader's snapshot
    expect(told).toHaveLength(1);
    expect(told[0]!.map((event) => [event.taskId, event.status, event.node])).toEqual([['t1', 'completed', 'n1']]);
    expect(holder.current.getTask('t1')?.output).toBe('done');
  });
});
