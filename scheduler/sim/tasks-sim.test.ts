// The simulator's tasks mode: hundreds of seeds of the real Raft core, replicated task
// state, placement and recovery must keep every task invariant; a seed must replay to the
// identical trace; and broken variants (a leader ignoring concurrency limits, a state taking
// stale results) and hand-made violations must be caught, so that passing means something.
import { describe, expect, it } from 'vitest';
import type { TaskStatusEvent } from '../../protocol/tasks.ts';
import type { Command } from '../state/commands.ts';
import { encodeCommand } from '../state/commands.ts';
import { ReplicatedState, type ApplyResult } from '../state/state.ts';
import { taskInput, bodyHash, usage } from '../state/test-helpers.ts';
import { InvariantViolation } from './checker.ts';
import { TasksChecker } from './tasks-checker.ts';
import { runTasksSeed, type TasksSeedResult } from './tasks-sim.ts';
import { addToTasksTotals, emptyTasksTotals } from './tasks-summary.ts';

function describeFailures(failures: TasksSeedResult[]): string[] {
  return failures.map((failure) => `seed ${failure.seed}: ${failure.failure?.message.split('\n')[0]} -- replay: npm run sim -- --tasks --seed ${failure.seed}`);
}

describe('tasks mode of the simulator', () => {
  // 360 seeds in slices, so that a failure names its slice and no case runs long.
  const slices = [
    { from: 1, count: 150, voters: 3 },
    { from: 151, count: 150, voters: 3 },
    { from: 5_001, count: 60, voters: 5 },
  ];
  for (const slice of slices) {
    it(`passes seeds ${slice.from}..${slice.from + slice.count - 1} with ${slice.voters} voters`, () => {
      const totals = emptyTasksTotals();
      const failures: TasksSeedResult[] = [];
      for (let seed = slice.from; seed < slice.from + slice.count; seed++) {
        const result = runTasksSeed({ seed, voters: slice.voters });
        addToTasksTotals(totals, result);
        if (!result.ok) failures.push(result);
      }
      expect(describeFailures(failures)).toEqual([]);
      // The runs exercise what the invariants are about, or passing would mean little.
      const sums = totals.sums;
      expect(sums.submitsAcknowledged).toBeGreaterThan(10 * slice.count);
      expect(sums.tasksCompleted).toBeGreaterThan(0);
      expect(sums.tasksCancelled).toBeGreaterThan(0);
      expect(sums.tasksFailed).toBeGreaterThan(0);
      expect(sums.requeuesProposed).toBeGreaterThan(0);
      expect(sums.staleResultsRefused + sums.lateResultsRefused).toBeGreaterThan(0);
      expect(sums.crashes).toBeGreaterThan(0);
      expect(sums.compactions).toBeGreaterThan(0);
      expect(sums.hashComparisons).toBeGreaterThan(100 * slice.count);
    }, 120_000);
  }

  it('replays a seed to the identical trace, and another seed differs', () => {
    const first = runTasksSeed({ seed: 4242 });
    const again = runTasksSeed({ seed: 4242 });
    const other = runTasksSeed({ seed: 4243 });
    expect(first.ok).toBe(true);
    expect(again.traceHash).toBe(first.traceHash);
    expect(again.stats).toEqual(first.stats);
    expect(other.traceHash).not.toBe(first.traceHash);
  }, 30_000);

  it('catches a leader whose placement ignores concurrency limits', () => {
    const results = Array.from({ length: 10 }, (_, offset) => runTasksSeed({ seed: 1 + offset, broken: 'ignore-concurrency' }));
    for (const result of results) {
      expect(result.ok, `seed ${result.seed}`).toBe(false);
      expect(result.failure?.invariant).toBe('concurrency limit');
    }
  }, 60_000);

  it('catches a state that accepts results of stale attempts', () => {
    // The stale report must land after the task was reassigned: not every seed gets there
    // (12 of seeds 1..300 do), so a range known to hold some is run, and every failure must be this one.
    const failures: TasksSeedResult[] = [];
    for (let seed = 201; seed <= 300; seed++) {
      const result = runTasksSeed({ seed, broken: 'accept-stale' });
      if (!result.ok) failures.push(result);
    }
    expect(failures.length).toBeGreaterThan(0);
    for (const failure of failures) expect(failure.failure?.invariant, `seed ${failure.seed}: ${failure.failure?.message}`).toBe('one result per task');
  }, 60_000);
});

/** Applies commands to a real state and feeds the checker, as the simulator does. */
class Feed {
  readonly state = new ReplicatedState();
  readonly checker: TasksChecker;
  index = 0;

  constructor(limits: Record<string, number> = { n1: 1, n2: 2 }) {
    this.checker = new TasksChecker(new Map(Object.entries(limits)));
  }

  apply(command: Command): ApplyResult {
    this.index++;
    const result = this.state.apply(this.index, encodeCommand(command));
    this.checker.onCommitted(this.index, command, result, this.state);
    return result;
  }

  /** Tells the checker the state accepted `command` with `events`, whatever the real state would say. */
  forceAccepted(command: Command, events: TaskStatusEvent[]): void {
    this.index++;
    this.checker.onCommitted(this.index, command, { ok: true, index: this.index, task: null, created: false, events, prunedTaskIds: [] }, this.state);
  }

  submit(id: string, dependsOn: string[] = []): void {
    const input = taskInput({ dependsOn });
    this.apply({ type: 'task.submit', id, input, at: 1, idempotencyKey: null, bodyHash: bodyHash(input) });
  }

  assign(id: string, node: string, attempt: number): ApplyResult {
    return this.apply({ type: 'task.assign', id, node, attempt, term: 1, model: null, agentId: null, at: 10 });
  }
}

function violation(action: () => void): string {
  try {
    action();
  } catch (error) {
    if (error instanceof InvariantViolation) return error.invariant;
    throw error;
  }
  return 'none';
}

describe('TasksChecker', () => {
  it('passes a correct history: submit, assign, start, complete', () => {
    const feed = new Feed();
    feed.submit('a');
    expect(feed.assign('a', 'n1', 1).ok).toBe(true);
    feed.apply({ type: 'task.start', id: 'a', attempt: 1, node: 'n1', at: 11 });
    feed.apply({ type: 'task.complete', id: 'a', attempt: 1, output: 'x', usage, at: 12 });
    expect(feed.checker.counters.completionsAccepted).toBe(1);
  });

  it('catches a result accepted from an attempt that is not the current one', () => {
    const feed = new Feed();
    feed.submit('a');
    feed.assign('a', 'n1', 1);
    feed.apply({ type: 'task.requeue', id: 'a', attempt: 1, reason: 'n1 is dead', at: 20 });
    feed.assign('a', 'n2', 2);
    // The real state refuses it (and the checker counts the refusal)...
    expect(feed.apply({ type: 'task.complete', id: 'a', attempt: 1, output: 'x', usage, at: 30 }).ok).toBe(false);
    expect(feed.checker.counters.staleResultsRefused).toBe(1);
    // ...a state that accepted it is caught.
    expect(violation(() => feed.forceAccepted({ type: 'task.complete', id: 'a', attempt: 1, output: 'x', usage, at: 30 }, []))).toBe('one result per task');
  });

  it('catches a task completed twice', () => {
    const feed = new Feed();
    feed.submit('a');
    feed.assign('a', 'n1', 1);
    feed.apply({ type: 'task.complete', id: 'a', attempt: 1, output: 'x', usage, at: 12 });
    expect(violation(() => feed.forceAccepted({ type: 'task.complete', id: 'a', attempt: 1, output: 'y', usage, at: 13 }, []))).toBe('one result per task');
  });

  it('catches a cancelled task that completes', () => {
    const feed = new Feed();
    feed.submit('a');
    feed.assign('a', 'n1', 1);
    feed.apply({ type: 'task.cancel', id: 'a', at: 11 });
    expect(violation(() => feed.forceAccepted({ type: 'task.complete', id: 'a', attempt: 1, output: 'x', usage, at: 12 }, [
      { type: 'status', taskId: 'a', status: 'completed', attempt: 1, node: 'n1', at: 12, reason: null },
    ]))).toBe('cancelled stays cancelled');
  });

  it('catches a dependent started before its dependency completed', () => {
    const feed = new Feed();
    feed.submit('a');
    feed.submit('b', ['a']);
    expect(violation(() => feed.forceAccepted({ type: 'task.assign', id: 'b', node: 'n1', attempt: 1, term: 1, model: null, agentId: null, at: 10 }, []))).toBe('dependencies first');
  });

  it('catches a node given more tasks than its concurrency limit', () => {
    const feed = new Feed({ n1: 1 });
    feed.submit('a');
    feed.submit('b');
    feed.assign('a', 'n1', 1);
    expect(violation(() => feed.assign('b', 'n1', 1))).toBe('concurrency limit');
  });

  it('catches nodes whose states differ at the same applied index', () => {
    const checker = new TasksChecker(new Map());
    checker.onStateAt('n1', 5, 'aaaa');
    checker.onStateAt('n2', 5, 'aaaa');
    expect(violation(() => checker.onStateAt('n3', 5, 'bbbb'))).toBe('identical task state');
  });

  it('reports acknowledged tasks that have not finished, and a missing one once applied past it', () => {
    const feed = new Feed();
    feed.submit('a');
    feed.checker.onAcknowledged('a', 1);
    expect(feed.checker.unfinished(feed.state)).toHaveLength(1);
    feed.checker.onAcknowledged('ghost', 1);
    expect(violation(() => feed.checker.unfinished(feed.state))).toBe('acknowledged task kept');
  });
});
