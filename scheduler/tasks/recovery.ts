// The leader's recovery decisions: attempts to take back because their node is gone or
// they overran their time. Each comes out as a task.requeue command fenced by the attempt
// number, so a report from the old attempt that commits first simply wins, and the
// requeue is then refused as stale (and the other way round).
import * as limits from '../../protocol/limits.ts';
import type { ReplicatedState } from '../state/state.ts';
import type { CommandOf } from '../state/commands.ts';

type Requeue = CommandOf<'task.requeue'>;

/**
 * Requeues for every assigned or running attempt on a node in `deadNodes` (dead, or cut
 * off from the quorum: the daemon decides which and may say why in `reason`).
 */
export function tasksToRequeue(state: ReplicatedState, deadNodes: Iterable<string>, nowMs: number, reason?: (node: string) => string): Requeue[] {
  const dead = new Set(deadNodes);
  if (dead.size === 0) return [];
  const requeues: Requeue[] = [];
  for (const status of ['assigned', 'running'] as const) {
    for (const record of state.tasksWithStatus(status)) {
      const node = record.assignedNode as string;
      if (!dead.has(node)) continue;
      requeues.push({
        type: 'task.requeue', id: record.id, attempt: record.attempt,
        reason: reason?.(node) ?? `node ${node} stopped answering (declared dead) during attempt ${record.attempt}`, at: nowMs,
      });
    }
  }
  return requeues;
}

export interface TimeoutOptions {
  /** An assigned attempt must start within this long; defaults to limits.taskStartTimeoutMsDefault. */
  startTimeoutMs?: number;
}

/**
 * Requeues for attempts that overran: running longer than the task's timeoutMs, or
 * assigned and not started within startTimeoutMs (the node never picked it up).
 */
export function timedOutTasks(state: ReplicatedState, nowMs: number, options: TimeoutOptions = {}): Requeue[] {
  const startTimeoutMs = options.startTimeoutMs ?? limits.taskStartTimeoutMsDefault;
  const requeues: Requeue[] = [];
  for (const record of state.tasksWithStatus('assigned')) {
    const attempt = record.attempts.at(-1)!;
    if (nowMs - attempt.assignedAt >= startTimeoutMs) {
      requeues.push({
        type: 'task.requeue', id: record.id, attempt: record.attempt, at: nowMs,
        reason: `node ${attempt.node} did not start attempt ${record.attempt} within ${startTimeoutMs} ms`,
      });
    }
  }
  for (const record of state.tasksWithStatus('running')) {
    const attempt = record.attempts.at(-1)!;
    const startedAt = attempt.startedAt ?? attempt.assignedAt;
    if (nowMs - startedAt >= record.input.timeoutMs) {
      requeues.push({
        type: 'task.requeue', id: record.id, attempt: record.attempt, at: nowMs,
        reason: `attempt ${record.attempt} on node ${attempt.node} timed out after ${record.input.timeoutMs} ms`,
      });
    }
  }
  return requeues;
}
