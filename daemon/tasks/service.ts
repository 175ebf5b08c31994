// The task API behind HTTP, MCP and the CLI: validates, turns requests into replicated
// commands (forwarded to the leader by the cluster plane), waits until this node has
// applied them so a read right after a write sees it, and builds the task event streams
// (status from the replicated log, output text straight from the executing node).
import { createHash, randomFillSync } from 'node:crypto';
import type { NodeStatus } from '../../protocol/api.ts';
import { ErrorCode, HivemeshError, committedNotAppliedError } from '../../protocol/errors.ts';
import { listLimitDefault } from '../../protocol/limits.ts';
import {
  canonicalJson, isFinished, refusalToError, validateTaskSubmit, validationError,
  type Task, type TaskEvent, type TaskList, type TaskListQuery, type TaskOutputEvent, type TaskStatus,
} from '../../protocol/tasks.ts';
import { encodeCommand, type Command } from '../../scheduler/state/commands.ts';
import type { ApplyResult, ReplicatedState } from '../../scheduler/state/state.ts';
import { describeTask, lastingWaitingReason } from '../../scheduler/tasks/placement.ts';
import type { NodeView } from '../../scheduler/tasks/node-view.ts';
import type { EventBus } from '../events.ts';

export interface OutputSource {
  /** Output chunks of one attempt, from the node that runs it, as generated; ends with the attempt. */
  follow(taskId: string, attempt: number, nodeId: string, signal: AbortSignal): AsyncIterable<TaskOutputEvent>;
}

/** What a pin needs of a node in the node list. */
export type ListedNode = Pick<NodeStatus, 'id' | 'name' | 'state' | 'lastSeenAgoMs' | 'neverHeard'>;

export interface TaskServiceDeps {
  state: () => ReplicatedState;
  propose: (data: string) => Promise<ApplyResult | null>;
  waitApplied: (index: number) => Promise<void>;
  bus: EventBus;
  outputs: OutputSource;
  /**
   * The node list `hivemesh nodes` shows (GET /api/status/agents): alive, suspect and dead
   * nodes, those only the consensus configuration names included. A pin resolves against
   * it, so a dead node is refused as dead rather than unknown.
   */
  listedNodes: () => readonly ListedNode[];
  /** The gossiped view of the nodes, to say why a queued task waits. */
  nodeViews?: () => NodeView[];
  /** Waits until this node has applied everything committed before the call (a linearizable read). */
  readBarrier?: () => Promise<void>;
  /** How long a lookup of a task unknown here waits for a leader to ask (an election); tests shorten it. */
  findLeaderWaitMs?: number;
}

/** As long as a write waits for a leader during an election (the cluster's proposeLeaderWaitMs). */
const findLeaderWaitMsDefault = 2_000;
const findRetryMs = 100;

/** A list page stops growing past this many bytes of JSON (outputs can be large); nextCursor continues it. */
export const listPageBytesMax = 8 * 1024 * 1024;

/** Random bytes for task ids, drawn from the OS in blocks: one call per id cost ~60 us at thousands of submits a second. */
const idRandom = { pool: Buffer.alloc(6 * 1024), used: 6 * 1024 };

export function newTaskId(): string {
  if (idRandom.used + 6 > idRandom.pool.length) {
    randomFillSync(idRandom.pool);
    idRandom.used = 0;
  }
  const random = idRandom.pool.toString('hex', idRandom.used, idRandom.used + 6);
  idRandom.used += 6;
  return `t_${Date.now().toString(36)}${random}`;
}

/**
 * How often a quiet task event stream looks at the task's state itself: a node that
 * caught up by installing a snapshot never publishes the transitions inside it.
 */
const stateRecheckMs = 1_000;

/** How long a task's event stream waits, at its end, for output still on its way. */
const finishOutputWaitMs = 2_000;

/** Resolves when `promise` settles or after `ms`, whichever is first. */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); })]);
  clearTimeout(timer);
}

export class TaskService {
  private readonly deps: TaskServiceDeps;

  constructor(deps: TaskServiceDeps) {
    this.deps = deps;
  }

  private async run(command: Command): Promise<Extract<ApplyResult, { ok: true }>> {
    const result = await this.deps.propose(encodeCommand(command));
    if (result === null) throw new HivemeshError(ErrorCode.internal, `the ${command.type} command produced no result`);
    if (!result.ok) throw refusalToError(result.refusal);
    try {
      await this.deps.waitApplied(result.index);
    } catch (error) {
      // Committed, but this node lags. The leader's view of the task answers; without it, a
      // 503 that says the write is not lost (a plain one would invite a duplicate).
      if (result.task === null) throw committedNotAppliedError(`the ${command.type} of task ${'id' in command ? command.id : '?'}`, result.index, error);
    }
    return result;
  }

  /** POST /api/tasks: resolves with the task and whether it was created now. */
  async submit(body: unknown): Promise<{ task: Task; created: boolean }> {
    const validation = validateTaskSubmit(body);
    if (!validation.ok) throw validationError(validation.errors);
    const input = validation.input;
    const bodyHash = createHash('sha256').update(canonicalJson(input)).digest('hex');
    const idempotencyKey = input.idempotencyKey ?? null;
    if (idempotencyKey !== null) {
      // A replay answered from local state when it matches; the log decides otherwise.
      const existing = this.deps.state().findTaskByIdempotencyKey(idempotencyKey);
      const record = existing === undefined ? undefined : this.deps.state().getTaskRecord(existing.id);
      if (existing !== undefined && record !== undefined && record.bodyHash === bodyHash) return { task: existing, created: false };
    }
    const id = newTaskId();
    const result = await this.run({ type: 'task.submit', id, input, at: Date.now(), idempotencyKey, bodyHash });
    // The leader's view of the task, or (when it left it out to keep its answer small) our
    // own: run() waited until this node applied the write (or threw). A replay names the earlier task.
    if (result.task !== null) return { task: this.withLastingWait(result.task), created: result.created };
    const replayOf = result.created || idempotencyKey === null ? undefined : this.deps.state().findTaskByIdempotencyKey(idempotencyKey)?.id;
    return { task: this.get(replayOf ?? id), created: result.created };
  }

  /** A just-submitted queued task with waitingFor set when no node can run it yet (dependencies, no node with the model). */
  private withLastingWait(task: Task): Task {
    if (task.status !== 'queued' || task.waitingFor !== null || this.deps.nodeViews === undefined) return task;
    const state = this.deps.state();
    const record = state.getTaskRecord(task.id);
    if (record === undefined) return task;
    const reason = lastingWaitingReason(state, record, this.deps.nodeViews(), Date.now());
    return reason === null ? task : { ...task, waitingFor: reason };
  }

  get(id: string): Task {
    const task = this.deps.nodeViews === undefined ? this.deps.state().getTask(id) : describeTask(this.deps.state(), id, this.deps.nodeViews(), Date.now());
    if (task === undefined) throw new HivemeshError(ErrorCode.notFound, `no task ${id} (finished tasks are pruned after a while)`);
    return task;
  }

  /**
   * The task, as `get`, but a task this node does not know yet is looked up again after a
   * read barrier: a task committed through another node a moment ago is not applied here
   * yet, and must not be a 404 on this node. Only a miss pays the round trip to the leader.
   */
  async find(id: string): Promise<Task> {
    try {
      return this.get(id);
    } catch (error) {
      if (!(error instanceof HivemeshError) || error.code !== ErrorCode.notFound || this.deps.readBarrier === undefined) throw error;
      // No leader to ask (an election, the leader just died, or this node is cut off): a task
      // acknowledged a moment ago may be in this node's log but not known committed here
      // yet, so "no such task" would be a false 404 of an accepted task. Wait for a leader as
      // a write does, then say this node cannot tell (503) rather than that it does not exist.
      const deadline = Date.now() + (this.deps.findLeaderWaitMs ?? findLeaderWaitMsDefault);
      for (;;) {
        let barrierError: Error | null = null;
        await this.deps.readBarrier().catch((caught: unknown) => { barrierError = caught as Error; });
        // Caught up with the leader: what this node knows now is the answer (404 included).
        if (barrierError === null || this.deps.state().getTaskRecord(id) !== undefined) return this.get(id);
        if (Date.now() >= deadline) {
          throw new HivemeshError(ErrorCode.noLeader,
            `task ${id} is not known on this node, and no leader is reachable to tell whether it was just created through another node; retry shortly (${(barrierError as Error).message})`,
            { retryAfterSeconds: 1 });
        }
        await new Promise((resolve) => setTimeout(resolve, findRetryMs));
      }
    }
  }

  list(query: TaskListQuery): TaskList {
    const state = this.deps.state();
    const page = state.listTasks({
      ...(query.status === undefined ? {} : { status: query.status }),
      limit: query.limit ?? listLimitDefault,
      ...(query.cursor === undefined ? {} : { cursor: query.cursor }),
    });
    const nodes = this.deps.nodeViews?.() ?? null;
    const now = Date.now();
    let bytes = 0;
    for (let position = 0; position < page.tasks.length; position += 1) {
      let task = page.tasks[position]!;
      if (task.status === 'queued' && nodes !== null) task = describeTask(state, task.id, nodes, now) ?? task;
      page.tasks[position] = task;
      bytes += (task.output?.length ?? 0) * 3 + 1024;
      if (bytes > listPageBytesMax && position < page.tasks.length - 1) {
        // Cut the page here; the next one starts after this task.
        page.tasks.length = position + 1;
        page.nextCursor = String(state.getTaskRecord(task.id)!.seq);
        break;
      }
    }
    return page;
  }

  async cancel(id: string, reason?: string): Promise<Task> {
    await this.find(id);
    const result = await this.run({ type: 'task.cancel', id, at: Date.now(), ...(reason === undefined ? {} : { reason }) });
    return result.task ?? this.get(id);
  }

  /**
   * PUT /api/tasks/:id/assign: pins a queued task to a node, by id or name. A node the node
   * list shows dead is refused (409): a pinned task runs nowhere else, so it would wait for
   * a node that may never come back. The answer says at once why the task still waits
   * (a pinned node that lacks the model, or is suspect), as a submit's does.
   */
  async assign(id: string, nodeOrName: string): Promise<Task> {
    await this.find(id);
    const node = this.pinTarget(nodeOrName, this.deps.listedNodes());
    const result = await this.run({ type: 'task.pin', id, node });
    return this.withLastingWait(result.task ?? this.get(id));
  }

  /** The id of the node a pin names; throws when no node fits, several do, or the one that does is dead. */
  private pinTarget(nodeOrName: string, listed: readonly ListedNode[]): string {
    const unknown = () => new HivemeshError(ErrorCode.invalidInput, `node: no node "${nodeOrName}" is known; \`hivemesh nodes\` lists ids and names`, { details: { fields: [{ field: 'node', reason: 'is not a known node' }] } });
    const byId = listed.find((node) => node.id === nodeOrName);
    const byName = listed.filter((node) => node.name === nodeOrName);
    // A name can outlive its node: a host restarted with a fresh data dir has a new id and the
    // old one stays listed dead for a while. The name then means the node that is not dead
    // (of dead ones only, the one heard last, to be refused as dead).
    const notDead = byName.filter((node) => node.state !== 'dead');
    if (byId === undefined && notDead.length > 1) {
      throw new HivemeshError(ErrorCode.invalidInput, `node: ${notDead.length} nodes are named "${nodeOrName}" (${notDead.map((node) => node.id).join(', ')}); pin by id`, { details: { fields: [{ field: 'node', reason: 'names several nodes' }] } });
    }
    const lastHeard = byName.reduce<ListedNode | undefined>((best, node) => (best === undefined || node.lastSeenAgoMs < best.lastSeenAgoMs ? node : best), undefined);
    const target = byId ?? notDead[0] ?? lastHeard;
    if (target === undefined) throw unknown();
    if (target.state === 'dead') {
      const seen = target.neverHeard === true ? 'never heard from by this node' : `last seen ${Math.round(target.lastSeenAgoMs / 1_000)} s ago`;
      const shown = target.name === target.id ? target.id : `${target.name} (${target.id})`;
      throw new HivemeshError(ErrorCode.conflict,
        `node ${shown} is dead (${seen}); a task pinned to it would wait until it comes back. Pin to an alive node: \`hivemesh nodes\` lists them`,
        { details: { node: target.id, state: target.state } });
    }
    return target.id;
  }

  /** Resolves once the task is finished (or the signal aborts / the timeout passes). */
  async waitFinished(id: string, timeoutMs: number, signal?: AbortSignal): Promise<Task> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const onAbort = () => controller.abort();
    signal?.addEventListener('abort', onAbort);
    try {
      for await (const event of this.events(id, controller.signal, { output: false })) {
        if (event.type === 'final') return event.task;
      }
      return this.get(id);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * The task's event stream: its current status, then status changes and output text as
   * they happen, then its final state. Status comes from the replicated log on this node;
   * output comes from the node running the current attempt.
   */
  async *events(id: string, signal: AbortSignal, options: { output?: boolean } = {}): AsyncGenerator<TaskEvent> {
    // A task committed through another node a moment ago may not be applied here yet.
    await this.find(id);
    const wantOutput = options.output !== false;
    const inner = new AbortController();
    const abortInner = () => inner.abort();
    signal.addEventListener('abort', abortInner);
    const queue: TaskEvent[] = [];
    const waiter: { wake: (() => void) | null } = { wake: null };
    const push = (event: TaskEvent) => {
      queue.push(event);
      waiter.wake?.();
    };
    // Subscribe before reading the state, so no transition falls between the two.
    const statusStream = this.deps.bus.subscribe(inner.signal, (event) => event.type === 'task.status' && event.event.taskId === id);
    const task = this.get(id);
    const following: { controller: AbortController | null; attempt: number; done: Promise<void> | null } = { controller: null, attempt: 0, done: null };
    const follow = (attempt: number, node: string | null) => {
      if (!wantOutput || node === null || attempt === following.attempt) return;
      following.controller?.abort();
      following.attempt = attempt;
      const controller = new AbortController();
      following.controller = controller;
      inner.signal.addEventListener('abort', () => controller.abort(), { once: true });
      following.done = (async () => {
        try {
          for await (const chunk of this.deps.outputs.follow(id, attempt, node, controller.signal)) push(chunk);
        } catch {
          // The executing node went away: the status stream tells what happens next.
        }
      })();
    };
    void (async () => {
      try {
        for await (const event of statusStream) {
          if (event.type !== 'task.status') continue;
          push(event.event);
          if (event.event.status === 'assigned' || event.event.status === 'running') follow(event.event.attempt, event.event.node);
        }
      } catch {
        inner.abort();
      }
      waiter.wake?.();
    })();
    try {
      // The status as it stands, with the time it took it (not the time the watcher came).
      const lastAttempt = task.attempts.at(-1);
      const since = task.completedAt ?? lastAttempt?.endedAt ?? lastAttempt?.startedAt ?? lastAttempt?.assignedAt ?? task.createdAt;
      yield { type: 'status', taskId: id, status: task.status, attempt: task.attempt, node: task.assignedNode, at: since, reason: task.error };
      if (isFinished(task.status)) {
        yield { type: 'final', task };
        return;
      }
      if (task.status === 'assigned' || task.status === 'running') follow(task.attempt, task.assignedNode);
      // The log records `running` only after 100 ms of generation (one entry less for short
      // tasks): the stream says it when the attempt's first output arrives, and once.
      let shown: { attempt: number; status: TaskStatus; node: string | null } = { attempt: task.attempt, status: task.status, node: task.assignedNode };
      const present = function* (event: TaskEvent): Generator<TaskEvent> {
        if (event.type === 'output' && event.attempt === shown.attempt && shown.status === 'assigned') {
          shown = { ...shown, status: 'running' };
          yield { type: 'status', taskId: id, status: 'running', attempt: event.attempt, node: shown.node, at: Date.now(), reason: null };
        } else if (event.type === 'status') {
          if (event.status === 'running' && event.attempt === shown.attempt && shown.status === 'running') return;
          shown = { attempt: event.attempt, status: event.status, node: event.node };
        }
        yield event;
      };
      while (!inner.signal.aborted) {
        if (queue.length === 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            waiter.wake = resolve;
            timer = setTimeout(resolve, stateRecheckMs);
          });
          clearTimeout(timer);
          waiter.wake = null;
          if (queue.length === 0) {
            // A node that caught up by installing a snapshot (after a freeze or a partition)
            // applied the task's end without publishing it: the state is the truth.
            const now = this.deps.state().getTask(id);
            if (now !== undefined && isFinished(now.status)) {
              push({ type: 'status', taskId: id, status: now.status, attempt: now.attempt, node: now.assignedNode, at: now.completedAt ?? Date.now(), reason: now.error });
            }
          }
          continue;
        }
        const event = queue.shift()!;
        if (event.type === 'status' && isFinished(event.status)) {
          // The end of a short generation can be committed before its output has reached
          // this node: the output comes first (up to finishOutputWaitMs), then the end, then
          // the final state, which closes the stream.
          if (following.done !== null && following.attempt === event.attempt) await settledWithin(following.done, finishOutputWaitMs);
          for (const rest of queue.splice(0)) if (rest.type === 'output') yield* present(rest);
          yield* present(event);
          const finished = this.deps.state().getTask(id);
          if (finished !== undefined) yield { type: 'final', task: finished };
          return;
        }
        yield* present(event);
      }
    } finally {
      signal.removeEventListener('abort', abortInner);
      inner.abort();
    }
  }
}
