// Test helpers for the replicated state: a harness that numbers log entries and builds
// valid commands, so tests read as the sequence of what was committed.
import { createHash } from 'node:crypto';
import { canonicalJson, validateTaskSubmit, type TaskInput, type TaskSubmit, type Usage } from '../../protocol/tasks.ts';
import { encodeCommand, type Command } from './commands.ts';
import { ReplicatedState, type ApplyResult, type ReplicatedStateOptions } from './state.ts';

export const usage: Usage = { promptTokens: 10, completionTokens: 20, tokensPerSecond: 40, loadMs: 0, totalMs: 500 };

/** The body hash the daemon would compute: sha256 of the canonical JSON of the input. */
export function bodyHash(input: TaskInput): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}

export function taskInput(overrides: Partial<TaskSubmit> = {}): TaskInput {
  const result = validateTaskSubmit({ model: 'llama3', prompt: 'say hi', ...overrides });
  if (!result.ok) throw new Error(`test input invalid: ${JSON.stringify(result.errors)}`);
  return result.input;
}

export class Harness {
  state: ReplicatedState;
  index = 0;

  constructor(options: ReplicatedStateOptions = {}) {
    this.state = new ReplicatedState(options);
  }

  run(command: Command): ApplyResult {
    this.index += 1;
    return this.state.apply(this.index, encodeCommand(command));
  }

  /** Runs a command that must be accepted, and returns the result. */
  ok(command: Command): Extract<ApplyResult, { ok: true }> {
    const result = this.run(command);
    if (!result.ok) throw new Error(`${command.type} refused: ${result.refusal.code}: ${result.refusal.message}`);
    return result;
  }

  /** Runs a command that must be refused, and returns the refusal. */
  refused(command: Command): Extract<ApplyResult, { ok: false }>['refusal'] {
    const result = this.run(command);
    if (result.ok) throw new Error(`${command.type} was accepted, expected a refusal`);
    return result.refusal;
  }

  submit(id: string, overrides: Partial<TaskSubmit> = {}, at = 1_000): ApplyResult {
    const input = taskInput(overrides);
    return this.run({ type: 'task.submit', id, input, at, idempotencyKey: input.idempotencyKey, bodyHash: bodyHash(input) });
  }

  assign(id: string, node: string, attempt: number, at = 2_000, term = 1): ApplyResult {
    return this.run({ type: 'task.assign', id, node, attempt, term, model: null, agentId: null, at });
  }

  start(id: string, node: string, attempt: number, at = 3_000): ApplyResult {
    return this.run({ type: 'task.start', id, node, attempt, at });
  }

  complete(id: string, attempt: number, output = 'hello', at = 4_000): ApplyResult {
    return this.run({ type: 'task.complete', id, attempt, output, usage, at });
  }

  fail(id: string, attempt: number, retryable: boolean, at = 4_000, error = 'ollama said no'): ApplyResult {
    return this.run({ type: 'task.fail', id, attempt, error, retryable, at });
  }

  requeue(id: string, attempt: number, at = 4_000, reason = 'node n1 is dead'): ApplyResult {
    return this.run({ type: 'task.requeue', id, attempt, reason, at });
  }

  cancel(id: string, at = 4_000): ApplyResult {
    return this.run({ type: 'task.cancel', id, at });
  }

  /** Submits, assigns, starts and completes a task in one go. */
  runToCompletion(id: string, node = 'n1', output = `output of ${id}`, overrides: Partial<TaskSubmit> = {}, at = 1_000): void {
    for (const result of [this.submit(id, overrides, at), this.assign(id, node, 1, at + 1), this.start(id, node, 1, at + 2), this.complete(id, 1, output, at + 3)]) {
      if (!result.ok) throw new Error(`runToCompletion(${id}): ${result.refusal.message}`);
    }
  }
}
