// Invariants of the replicated task state, checked by the tasks simulator (tasks-sim.ts)
// after every committed entry and every applied batch: one accepted result per task and
// only from its current attempt, no node over its concurrency limit in the committed state,
// cancelled tasks never complete, dependents never start early, identical state on every
// node at equal applied index, and (after faults stop) every acknowledged task finishes.
import type { TaskStatus } from '../../protocol/tasks.ts';
import type { Command } from '../state/commands.ts';
import type { ApplyResult, ReplicatedState } from '../state/state.ts';
import { InvariantViolation } from './checker.ts';

/** Applied-index hashes kept for comparing nodes; older ones are forgotten (bounded memory). */
const stateHashesMax = 4_096;

interface TrackedTask {
  status: TaskStatus;
  attempt: number;
  dependsOn: readonly string[];
  completions: number;
  /** Accepted task.output reports: a cancelled attempt's partial text, at most one. */
  partialOutputs: number;
}

export class TasksChecker {
  private readonly concurrencyLimits: ReadonlyMap<string, number>;
  private readonly tasks = new Map<string, TrackedTask>();
  private readonly stateHashes = new Map<number, { node: string; hash: string }>();
  /** Highest committed index the checker has seen; each index is checked once, from the first node to apply it. */
  private checkedIndex = 0;
  /** Acknowledged task ids, with the log index of the entry that acknowledged them. */
  readonly acknowledged = new Map<string, number>();
  /** staleResultsRefused: results of an attempt no longer current; lateResultsRefused: results for a task already finished. */
  readonly counters = { completionsAccepted: 0, staleResultsRefused: 0, lateResultsRefused: 0, cancelsAccepted: 0, partialOutputsAccepted: 0, hashComparisons: 0 };

  constructor(concurrencyLimits: ReadonlyMap<string, number>) {
    this.concurrencyLimits = concurrencyLimits;
  }

  /**
   * The committed entry at `index`, as the first node to apply it saw it: the command, what
   * the state answered, and the state after it.
   */
  onCommitted(index: number, command: Command, result: ApplyResult, state: ReplicatedState): void {
    if (index <= this.checkedIndex) return;
    this.checkedIndex = index;
    const before = 'id' in command ? this.tasks.get(command.id) : undefined;
    if (!result.ok) {
      if (command.type === 'task.complete' || command.type === 'task.fail') {
        if (result.refusal.code === 'stale-attempt') this.counters.staleResultsRefused++;
        else if (result.refusal.code === 'task-finished') this.counters.lateResultsRefused++;
      }
      return;
    }
    switch (command.type) {
      case 'task.submit':
        if (result.created && result.task !== null) {
          this.tasks.set(result.task.id, { status: result.task.status, attempt: 0, dependsOn: [...command.input.dependsOn], completions: 0, partialOutputs: 0 });
        }
        break;
      case 'task.assign':
      case 'task.start':
        if (before === undefined) throw new InvariantViolation('task state', `entry ${index}: ${command.type} accepted for unknown task ${command.id}`);
        for (const dependency of before.dependsOn) {
          const status = this.tasks.get(dependency)?.status;
          // A pruned dependency is gone from the tracker only if it finished; tasks are never pruned here.
          if (status !== 'completed') {
            throw new InvariantViolation('dependencies first', `entry ${index}: ${command.type} of ${command.id} accepted while its dependency ${dependency} is ${status ?? 'unknown'}`);
          }
        }
        if (command.type === 'task.assign') before.attempt = command.attempt;
        else if (command.attempt !== before.attempt) {
          throw new InvariantViolation('fencing', `entry ${index}: task.start of ${command.id} attempt ${command.attempt} accepted while its current attempt is ${before.attempt}`);
        }
        break;
      case 'task.complete':
        if (before === undefined) throw new InvariantViolation('task state', `entry ${index}: task.complete accepted for unknown task ${command.id}`);
        if (before.status === 'cancelled') throw new InvariantViolation('cancelled stays cancelled', `entry ${index}: task ${command.id} completed after it was cancelled`);
        if (before.status !== 'assigned' && before.status !== 'running') {
          throw new InvariantViolation('one result per task', `entry ${index}: task.complete of ${command.id} attempt ${command.attempt} accepted while the task was ${before.status}, with no live attempt`);
        }
        if (command.attempt !== before.attempt) {
          throw new InvariantViolation('one result per task', `entry ${index}: task.complete of ${command.id} from attempt ${command.attempt} accepted while the current attempt is ${before.attempt}`);
        }
        before.completions++;
        this.counters.completionsAccepted++;
        if (before.completions > 1) throw new InvariantViolation('one result per task', `entry ${index}: task ${command.id} completed a second time (attempt ${command.attempt})`);
        break;
      case 'task.cancel':
        this.counters.cancelsAccepted++;
        break;
      case 'task.output':
        if (before === undefined) throw new InvariantViolation('task state', `entry ${index}: task.output accepted for unknown task ${command.id}`);
        if (before.status !== 'cancelled' && before.status !== 'failed') {
          throw new InvariantViolation('partial output only after the end', `entry ${index}: task.output of ${command.id} accepted while the task was ${before.status}`);
        }
        if (command.attempt !== before.attempt) {
          throw new InvariantViolation('fencing', `entry ${index}: task.output of ${command.id} from attempt ${command.attempt} accepted; attempt ${before.attempt} ended the task`);
        }
        if (++before.partialOutputs > 1) throw new InvariantViolation('one result per task', `entry ${index}: task ${command.id} took a partial output a second time`);
        this.counters.partialOutputsAccepted++;
        break;
      default:
        break;
    }
    // Every status change the command caused (dependents failed with it included).
    for (const event of result.events) {
      const tracked = this.tasks.get(event.taskId);
      if (tracked === undefined) continue;
      if (tracked.status === 'cancelled' && event.status !== 'cancelled') {
        throw new InvariantViolation('cancelled stays cancelled', `entry ${index}: task ${event.taskId} went from cancelled to ${event.status}`);
      }
      tracked.status = event.status;
    }
    this.checkConcurrency(index, state);
  }

  private checkConcurrency(index: number, state: ReplicatedState): void {
    for (const [node, inFlight] of state.inFlightByNode()) {
      const limit = this.concurrencyLimits.get(node) ?? 0;
      if (inFlight > limit) {
        throw new InvariantViolation('concurrency limit', `after entry ${index} node ${node} has ${inFlight} tasks assigned or running, over its concurrency limit of ${limit}`);
      }
    }
  }

  /** A node finished applying a batch: its state must equal any other node's at that index. */
  onStateAt(node: string, index: number, hash: string): void {
    const seen = this.stateHashes.get(index);
    if (seen === undefined) {
      this.stateHashes.set(index, { node, hash });
      if (this.stateHashes.size > stateHashesMax) {
        const oldest = this.stateHashes.keys().next().value as number;
        this.stateHashes.delete(oldest);
      }
      return;
    }
    this.counters.hashComparisons++;
    if (seen.hash !== hash) {
      throw new InvariantViolation('identical task state', `at applied index ${index} node ${node}'s task state hashes to ${hash} but ${seen.node}'s to ${seen.hash}`);
    }
  }

  /** A submission's result reached its client: the task must finish once faults stop. */
  onAcknowledged(taskId: string, index: number): void {
    if (!this.acknowledged.has(taskId)) this.acknowledged.set(taskId, index);
  }

  /** Acknowledged tasks not yet in a terminal state in `state`. */
  unfinished(state: ReplicatedState): string[] {
    const open: string[] = [];
    for (const [id, index] of this.acknowledged) {
      const task = state.getTaskRecord(id);
      if (task === undefined) {
        // A node still catching up has not applied the submission yet; past it, the task must be there.
        if (state.lastApplied < index) {
          open.push(`${id} (not yet applied here)`);
          continue;
        }
        throw new InvariantViolation('acknowledged task kept', `acknowledged task ${id} (entry ${index}) is missing from the state at applied index ${state.lastApplied}`);
      }
      if (task.status !== 'completed' && task.status !== 'failed' && task.status !== 'cancelled') open.push(`${id} (${task.status}, attempt ${task.attempt}${task.assignedNode === null ? '' : ` on ${task.assignedNode}`})`);
    }
    return open;
  }
}
