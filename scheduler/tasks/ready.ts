// Which queued tasks may run now, in which order, and the prompt they run with.
//
// Order: effective priority first, where a task gains +1 for every agingStepMs it has
// waited since it was submitted (default limits.taskAgingStepMsDefault, 30 s). So a
// priority-0 task submitted at t waits at most (10 + 1) * agingStepMs behind a stream of
// fresh priority-10 tasks: by then its effective priority exceeds theirs. Equal effective
// priorities go oldest first, then by submission order, so the order is total and every
// node computes the same one.
import * as limits from '../../protocol/limits.ts';
import { outputPlaceholderPattern, type ChatMessage } from '../../protocol/tasks.ts';
import type { ReplicatedState, TaskRecord } from '../state/state.ts';

export interface ReadyTask {
  record: Readonly<TaskRecord>;
  effectivePriority: number;
}

export function effectivePriority(record: Readonly<TaskRecord>, nowMs: number, agingStepMs = limits.taskAgingStepMsDefault): number {
  if (!(agingStepMs > 0)) throw new Error(`agingStepMs must be positive, got ${agingStepMs}`);
  return record.input.priority + Math.floor(Math.max(0, nowMs - record.createdAt) / agingStepMs);
}

/** Unfinished dependencies of a task, in its dependsOn order. */
export function pendingDependencies(state: ReplicatedState, record: Readonly<TaskRecord>): string[] {
  return record.input.dependsOn.filter((id) => state.getTaskRecord(id)?.status !== 'completed');
}

/** Queued tasks whose dependencies completed and whose retry backoff has passed, best first. */
export function readyTasks(state: ReplicatedState, nowMs: number, agingStepMs = limits.taskAgingStepMsDefault): ReadyTask[] {
  const ready: ReadyTask[] = [];
  for (const record of state.tasksWithStatus('queued')) {
    if (record.notBefore !== null && record.notBefore > nowMs) continue;
    if (pendingDependencies(state, record).length > 0) continue;
    ready.push({ record, effectivePriority: effectivePriority(record, nowMs, agingStepMs) });
  }
  ready.sort((a, b) =>
    b.effectivePriority - a.effectivePriority || a.record.createdAt - b.record.createdAt || a.record.seq - b.record.seq);
  return ready;
}

export interface RenderedInput {
  prompt: string | null;
  messages: ChatMessage[] | null;
  system: string | null;
}

export type RenderResult = { ok: true; input: RenderedInput } | { ok: false; reason: string };

/**
 * The task's prompt, messages and system prompt with every {{tasks.ID.output}} replaced
 * by that dependency's output. One pass over the original text, so an output that itself
 * contains a placeholder is quoted, not expanded. Fails (for the executor to fail the task
 * with the reason) when a dependency is gone or the result exceeds the bound.
 */
export function renderPrompt(state: ReplicatedState, record: Readonly<TaskRecord>): RenderResult {
  let missing: string | null = null;
  let totalLength = 0;
  const fill = (text: string): string => {
    const rendered = text.replace(outputPlaceholderPattern, (placeholder, id: string) => {
      const dependency = state.getTaskRecord(id);
      if (dependency === undefined || dependency.status !== 'completed' || !record.input.dependsOn.includes(id)) {
        missing ??= id;
        return placeholder;
      }
      return dependency.output ?? '';
    });
    totalLength += rendered.length;
    return rendered;
  };
  const input: RenderedInput = {
    prompt: record.input.prompt === null ? null : fill(record.input.prompt),
    messages: record.input.messages === null ? null : record.input.messages.map((message) => ({ role: message.role, content: fill(message.content) })),
    system: record.input.system === null ? null : fill(record.input.system),
  };
  if (missing !== null) {
    return { ok: false, reason: `the prompt quotes the output of task ${missing}, which is not a completed dependency (it may have been pruned)` };
  }
  if (totalLength > limits.taskRenderedPromptLengthMax) {
    return { ok: false, reason: `the prompt is ${totalLength} characters once dependency outputs are filled in, over the ${limits.taskRenderedPromptLengthMax}-character limit` };
  }
  return { ok: true, input };
}
