// The executor: runs the attempts the log assigns to this node on the local Ollama. It
// reports task.start, streams the text into the attempt's output buffer, and reports
// task.complete with the output and usage (or task.fail with the reason and whether a
// retry could help). It aborts a generation as soon as the log says the attempt is no
// longer live here (cancelled, requeued, reassigned), when the node is fenced off from the
// leader, and at stop. Never more than `concurrency` generations run at once; attempts
// beyond wait in a bounded local queue (the leader's late binding keeps it short).
import type { AgentConfig } from '../config.ts';
import type { Command } from '../../scheduler/state/commands.ts';
import { attemptEndedTask, type ApplyResult, type ReplicatedState, type TaskRecord } from '../../scheduler/state/state.ts';
import { renderPrompt } from '../../scheduler/tasks/ready.ts';
import type { TaskStatusEvent } from '../../protocol/tasks.ts';
import { logger } from '../log.ts';
import type { HealthProbe } from '../probe/index.ts';
import { GenerationError, runGeneration, splitKeepAlive, type GenerationResult } from './generation.ts';
import type { AttemptOutput, OutputHub } from './output.ts';
import type { Reporter } from './reports.ts';

const log = logger('tasks:executor');

/** Why a local attempt was aborted; `report` says whether the log still needs to hear of it. */
export interface AbortCause {
  reason: string;
  /** True when the log still shows the attempt live (fencing, stop): a task.fail must follow. */
  report: boolean;
  /** The task was cancelled: what the attempt had generated becomes its output (task.output). */
  keepOutput?: boolean;
}

interface LocalAttempt {
  taskId: string;
  attempt: number;
  controller: AbortController;
  output: AttemptOutput;
  phase: 'queued' | 'running';
  cause: AbortCause | null;
  model: string | null;
  /** The task.start report, once sent; a completion waits for it so the log keeps the order. */
  started: Promise<unknown> | null;
  /** The generation has ended; only its report is left (nothing to abort). */
  generated: boolean;
}

export interface ExecutorDeps {
  nodeId: string;
  state: () => ReplicatedState;
  ollamaUrl: string;
  concurrency: number;
  probe: Pick<HealthProbe, 'recordGeneration' | 'recordLoad' | 'agentDefinitions' | 'installedName'>;
  agents: readonly AgentConfig[];
  outputs: OutputHub;
  reporter: Reporter;
  /** Attempts waiting for a local slot; beyond, an assignment is failed back as retryable. */
  queueMax?: number;
  /** task.start is reported once a generation has run this long (shorter ones complete without it). */
  startReportDelayMs?: number;
  /** Attempts remembered after they ended here, so a late or replayed event does not rerun them. */
  endedRememberMax?: number;
}

function isLive(record: Readonly<TaskRecord> | undefined, attempt: number, nodeId: string): boolean {
  return record !== undefined && record.attempt === attempt && record.assignedNode === nodeId &&
    (record.status === 'assigned' || record.status === 'running');
}

export class Executor {
  private readonly deps: ExecutorDeps;
  private readonly attempts = new Map<string, LocalAttempt>();
  private readonly queue: LocalAttempt[] = [];
  private runningCount = 0;
  /** `taskId#attempt` of attempts that ended here, oldest first (a Map keeps insertion order). */
  private readonly ended = new Map<string, true>();
  private readonly idle = new Set<() => void>();
  private stopped = false;

  constructor(deps: ExecutorDeps) {
    this.deps = deps;
  }

  load(): { running: number; queued: number } {
    return { running: this.runningCount, queued: this.queue.length };
  }

  /** Models of the generations running now: certainly loaded in the local Ollama. */
  runningModels(): string[] {
    const models: string[] = [];
    for (const local of this.attempts.values()) if (local.phase === 'running' && local.model !== null) models.push(local.model);
    return models;
  }

  /** The attempt this node runs or queues for a task, if any. */
  localAttempt(taskId: string): number | null {
    return this.attempts.get(taskId)?.attempt ?? null;
  }

  hasEnded(taskId: string, attempt: number): boolean {
    return this.ended.has(`${taskId}#${attempt}`);
  }

  /** Remembers an attempt as handled here without running it (reconciliation reported it). */
  markEnded(taskId: string, attempt: number): void {
    this.rememberEnded(taskId, attempt);
  }

  /** An assignment to this node was applied: queue the attempt (idempotent). */
  accept(taskId: string, attempt: number): void {
    if (this.stopped || this.hasEnded(taskId, attempt)) return;
    const existing = this.attempts.get(taskId);
    if (existing !== undefined) {
      if (existing.attempt === attempt) return;
      this.abortLocal(existing, { reason: `attempt ${attempt} replaced attempt ${existing.attempt}`, report: false });
    }
    const queueMax = this.deps.queueMax ?? Math.max(64, this.deps.concurrency * 4);
    if (this.queue.length >= queueMax) {
      const reason = `node ${this.deps.nodeId} has ${this.queue.length} attempts waiting for its ${this.deps.concurrency} generation slots already; retrying elsewhere`;
      log.warn(reason, { taskId, attempt });
      this.rememberEnded(taskId, attempt);
      void this.report({ type: 'task.fail', id: taskId, attempt, error: reason, retryable: true, at: Date.now() }, taskId, attempt);
      return;
    }
    const local: LocalAttempt = {
      taskId, attempt, controller: new AbortController(), output: this.deps.outputs.open(taskId, attempt),
      phase: 'queued', cause: null, model: null, started: null, generated: false,
    };
    this.attempts.set(taskId, local);
    this.queue.push(local);
    this.pump();
  }

  /** A status change was applied: abort the local attempt if it is no longer live here. */
  onStatus(event: TaskStatusEvent): void {
    const local = this.attempts.get(event.taskId);
    // A generation that has ended has nothing left to stop: its own completion, applied, lands here.
    if (local === undefined || local.generated) return;
    if (event.attempt === local.attempt && (event.status === 'assigned' || event.status === 'running') && event.node === this.deps.nodeId) return;
    const why = event.status === 'cancelled'
      ? `task ${event.taskId} was cancelled${event.reason === null ? '' : `: ${event.reason}`}`
      : event.attempt !== local.attempt
        ? `attempt ${local.attempt} was superseded by attempt ${event.attempt}`
        : `attempt ${local.attempt} is ${event.status} in the log${event.reason === null ? '' : `: ${event.reason}`}`;
    this.abortLocal(local, { reason: why, report: false, ...(event.status === 'cancelled' ? { keepOutput: true } : {}) });
  }

  /**
   * Aborts the local attempts the state no longer shows live here (requeued, reassigned,
   * cancelled, finished or forgotten) when the change came without a status event: a
   * snapshot installed to catch up replaces the state without applying its entries, so
   * onStatus never heard of it. Returns how many it aborted.
   */
  abortStale(): number {
    const state = this.deps.state();
    let aborted = 0;
    for (const local of [...this.attempts.values()]) {
      if (local.generated || local.cause !== null) continue;
      const record = state.getTaskRecord(local.taskId);
      if (isLive(record, local.attempt, this.deps.nodeId)) continue;
      const now = record === undefined ? 'no longer known' : `${record.status} at attempt ${record.attempt}${record.assignedNode === null ? '' : ` on ${record.assignedNode}`}`;
      this.abortLocal(local, { reason: `attempt ${local.attempt} of task ${local.taskId} is not live here in the log (${now})`, report: false });
      aborted += 1;
    }
    return aborted;
  }

  /** Aborts every local attempt (fencing, stop). */
  abortAll(cause: AbortCause): number {
    const all = [...this.attempts.values()];
    for (const local of all) this.abortLocal(local, cause);
    return all.length;
  }

  get activeCount(): number {
    return this.attempts.size;
  }

  /** Resolves once no attempt runs or waits here (bounded by `timeoutMs`). */
  async drained(timeoutMs: number): Promise<void> {
    if (this.attempts.size === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const idle = this.idle;
      function done() {
        clearTimeout(timer);
        idle.delete(done);
        resolve();
      }
      idle.add(done);
    });
  }

  stop(): void {
    this.stopped = true;
  }

  private abortLocal(local: LocalAttempt, cause: AbortCause): void {
    if (local.cause !== null) return;
    local.cause = cause;
    local.controller.abort(new Error(cause.reason));
    if (local.phase === 'queued') {
      const position = this.queue.indexOf(local);
      if (position >= 0) this.queue.splice(position, 1);
      this.finish(local);
      if (cause.report) void this.reportFail(local, cause.reason, true);
    }
  }

  private pump(): void {
    while (this.runningCount < this.deps.concurrency && this.queue.length > 0) {
      const local = this.queue.shift()!;
      local.phase = 'running';
      this.runningCount += 1;
      void this.run(local).finally(() => {
        this.runningCount -= 1;
        this.finish(local);
        this.pump();
      });
    }
  }

  private finish(local: LocalAttempt): void {
    if (this.attempts.get(local.taskId) === local) this.attempts.delete(local.taskId);
    this.rememberEnded(local.taskId, local.attempt);
    this.deps.outputs.end(local.output, local.cause?.reason ?? 'attempt ended');
    if (this.attempts.size === 0) {
      const idle = [...this.idle];
      this.idle.clear();
      for (const wake of idle) wake();
    }
  }

  private rememberEnded(taskId: string, attempt: number): void {
    this.ended.set(`${taskId}#${attempt}`, true);
    const max = this.deps.endedRememberMax ?? 16_384;
    while (this.ended.size > max) this.ended.delete(this.ended.keys().next().value as string);
  }

  private relevant(taskId: string, attempt: number): boolean {
    return isLive(this.deps.state().getTaskRecord(taskId), attempt, this.deps.nodeId);
  }

  private report(command: Command, taskId: string, attempt: number): Promise<ApplyResult | null> {
    return this.deps.reporter.report(command, () => this.relevant(taskId, attempt));
  }

  private reportFail(local: LocalAttempt, error: string, retryable: boolean): Promise<ApplyResult | null> {
    return this.report({ type: 'task.fail', id: local.taskId, attempt: local.attempt, error, retryable, at: Date.now() }, local.taskId, local.attempt);
  }

  /** What an attempt that ended its task (cancelled, or failed for good) had generated, for the task's output; the log takes it once. */
  private async reportPartialOutput(local: LocalAttempt, partial: { output: string; outputTruncated: boolean }): Promise<void> {
    const { taskId, attempt } = local;
    const stillWanted = () => {
      const record = this.deps.state().getTaskRecord(taskId);
      return record !== undefined && attemptEndedTask(record, attempt) && record.output === null;
    };
    const result = await this.deps.reporter.report({
      type: 'task.output', id: taskId, attempt, output: partial.output, ...(partial.outputTruncated ? { outputTruncated: true } : {}), at: Date.now(),
    }, stillWanted);
    if (result !== null && !result.ok) log.debug('partial output refused', { taskId, attempt, refusal: result.refusal.message });
  }

  private agentSystem(agentId: string | null): string | null {
    if (agentId === null) return null;
    const configured = this.deps.agents.find((agent) => agent.id === agentId);
    if (configured !== undefined) return configured.system ?? null;
    return this.deps.probe.agentDefinitions().find((agent) => agent.id === agentId)?.system ?? null;
  }

  private async run(local: LocalAttempt): Promise<void> {
    const { taskId, attempt } = local;
    const state = this.deps.state();
    const record = state.getTaskRecord(taskId);
    if (local.cause !== null || !isLive(record, attempt, this.deps.nodeId)) return;
    const live = record!;
    const assignment = live.attempts.at(-1)!;
    const model = assignment.model ?? live.input.model;
    local.model = model;

    // task.start goes out once the generation has run for startReportDelayMs, in parallel
    // with it: a generation that ends sooner goes straight from assigned to completed, which
    // saves a quarter of the log entries of short tasks and costs them no latency.
    if (live.status === 'running') local.started = Promise.resolve(null);
    const reportStart = () => {
      if (local.started !== null || local.cause !== null) return;
      local.started = this.report({ type: 'task.start', id: taskId, attempt, node: this.deps.nodeId, at: Date.now() }, taskId, attempt).then((result) => {
        if (result !== null && !result.ok && (result.refusal.code === 'stale-attempt' || result.refusal.code === 'task-finished' || result.refusal.code === 'not-found')) {
          this.abortLocal(local, { reason: `the log refused the start: ${result.refusal.message}`, report: false });
        }
        return result;
      });
    };
    const startTimer = local.started === null ? setTimeout(reportStart, this.deps.startReportDelayMs ?? 100) : null;
    try {
      await this.generate(local, live, model);
    } finally {
      if (startTimer !== null) clearTimeout(startTimer);
      await local.started;
    }
  }

  private async generate(local: LocalAttempt, live: Readonly<TaskRecord>, asked: string | null): Promise<void> {
    const { taskId, attempt } = local;
    const state = this.deps.state();
    const assignment = live.attempts.at(-1)!;
    if (asked === null) {
      await this.reportFail(local, `attempt ${attempt} of task ${taskId} names no model to run`, false);
      return;
    }
    // As this node's Ollama spells it: a task may name `Llama3.2`, and an older Ollama finds only `llama3.2`.
    const model = this.deps.probe.installedName(asked);
    const rendered = renderPrompt(state, live);
    if (!rendered.ok) {
      await this.reportFail(local, rendered.reason, false);
      return;
    }
    const { options, keepAlive } = splitKeepAlive(live.input.options);
    let result: GenerationResult;
    let partial: { output: string; outputTruncated: boolean } | null = null;
    try {
      result = await runGeneration({
        model,
        prompt: rendered.input.prompt,
        messages: rendered.input.messages,
        system: rendered.input.system ?? this.agentSystem(assignment.agentId),
        options,
        format: live.input.format,
        keepAlive,
      }, {
        ollamaUrl: this.deps.ollamaUrl,
        signal: local.controller.signal,
        timeoutMs: live.input.timeoutMs,
        onText: (text) => local.output.append(text),
        onEarlySpeed: (tokens, elapsedNs) => this.deps.probe.recordGeneration(model, tokens, elapsedNs, { provisional: true }),
        onUnfinished: (unfinished) => { partial = unfinished; },
      });
    } catch (error) {
      await local.started;
      // Read through a fresh type: the check at the top narrowed cause to null before awaits.
      const cause = local.cause as AbortCause | null;
      if (cause !== null) {
        log.debug('generation aborted', { taskId, attempt, reason: cause.reason });
        if (cause.report) await this.reportFail(local, cause.reason, true);
        else if (cause.keepOutput === true && partial !== null) await this.reportPartialOutput(local, partial);
        return;
      }
      const failure = error instanceof GenerationError ? error : new GenerationError(`the generation failed unexpectedly: ${(error as Error).message}`, true, { cause: error });
      log.info('generation failed', { taskId, attempt, model, retryable: failure.retryable, reason: failure.message });
      const failed = await this.reportFail(local, failure.message, failure.retryable);
      // The task failed for good (no retry left): what this attempt generated is its output.
      if (partial !== null && failed !== null && failed.ok && failed.task?.status === 'failed') await this.reportPartialOutput(local, partial);
      return;
    }
    local.generated = true;
    this.deps.probe.recordGeneration(model, result.evalCount, result.evalDurationNs);
    this.deps.probe.recordLoad(model, result.usage.loadMs);
    await local.started;
    // Aborted just as it finished: a cancelled or superseded attempt reports no completion, but
    // one stopped by fencing or shutdown still owes the log an outcome, and a finished
    // generation is the best one (the state machine refuses it if the attempt moved on).
    const late = local.cause as AbortCause | null;
    if (late !== null && !late.report) {
      // Cancelled as it finished: the whole text is what the attempt had generated.
      if (late.keepOutput === true && result.output !== '') await this.reportPartialOutput(local, result);
      return;
    }
    const completion = await this.report({
      type: 'task.complete', id: taskId, attempt, output: result.output,
      ...(result.outputTruncated ? { outputTruncated: true } : {}), usage: result.usage, at: Date.now(),
    }, taskId, attempt);
    if (completion !== null && !completion.ok) log.debug('completion refused', { taskId, attempt, refusal: completion.refusal.message });
  }
}
