// The replicated state machine: every node applies the committed Raft entries, in order,
// to one ReplicatedState and so holds the same tasks, tokens and key/values. apply() is
// deterministic: it reads no clock and no randomness (times arrive inside commands), and
// its result depends only on the state and the command, never on Map iteration order of
// anything a snapshot could reorder. A well-formed command that the state does not allow
// is refused with a typed Refusal (every node refuses it alike); a malformed one throws.
import * as limits from '../../protocol/limits.ts';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import {
  isFinished, taskStatuses,
  type Attempt, type Refusal, type Task, type TaskInput, type TaskStatus, type TaskStatusEvent, type Usage,
} from '../../protocol/tasks.ts';
import type { TokenRecord } from '../../protocol/tokens.ts';
import { decodeCommand, MalformedCommandError, type Command, type CommandOf } from './commands.ts';
import { SortedNumbers } from './sorted-numbers.ts';

/** Everything the state keeps about a task. Read-only to callers: mutate only via apply. */
export interface TaskRecord {
  /** Log index of the task.submit entry: orders tasks, and is the paging cursor. */
  seq: number;
  id: string;
  input: TaskInput;
  idempotencyKey: string | null;
  bodyHash: string;
  status: TaskStatus;
  pinnedNode: string | null;
  assignedNode: string | null;
  attempt: number;
  attempts: Attempt[];
  output: string | null;
  outputTruncated: boolean;
  error: string | null;
  usage: Usage | null;
  notBefore: number | null;
  createdAt: number;
  startedAt: number | null;
  /** When the task reached completed, failed or cancelled. */
  completedAt: number | null;
}

export type ApplyResult =
  | {
    ok: true;
    index: number;
    /** The task the command was about, after it (null for other commands). */
    task: Task | null;
    /** task.submit: false when an existing task was returned (idempotency, replay). */
    created: boolean;
    /** Status changes this command caused, in order, dependents included. */
    events: TaskStatusEvent[];
    /** tasks.prune: the ids it forgot. */
    prunedTaskIds: string[];
  }
  | { ok: false; index: number; refusal: Refusal };

export interface ListTasksOptions {
  status?: TaskStatus;
  limit?: number;
  /** nextCursor of the previous page; absent for the first (newest) page. */
  cursor?: string;
}

export interface ReplicatedStateOptions {
  /**
   * queued + assigned + running tasks at most; defaults to limits.activeTasksMax. Part of
   * the replicated state (it travels in snapshots) because every node must refuse alike.
   */
  activeTasksMax?: number;
  /** The tasks' text at most (limits.stateTaskCharsMax, the default); replicated like activeTasksMax. */
  taskCharsMax?: number;
  /** Finished tasks kept at most, whatever tasks.prune does; defaults to limits.finishedTasksMax. Replicated like activeTasksMax. */
  finishedTasksMax?: number;
}

const snapshotFormat = 1;
/** Finished records keep their JSON for later snapshots (finishedJson) up to this size each, and in all. */
const snapshotCacheRecordCharsMax = 16 * 1024;
const snapshotCacheTotalCharsMax = 32 * 1024 * 1024;
/** Records waiting for keepFinishedJson() at most (beyond, the backlog is left to the next snapshot). */
const finishedQueueMax = 100_000;

interface SnapshotData {
  format: number;
  lastApplied: number;
  activeTasksMax: number;
  finishedTasksMax: number;
  /** Absent in snapshots from before the text budget: the default. */
  taskCharsMax?: number;
  clusterId: string | null;
  clusterCreatedAt: number | null;
  kv: [string, string][];
  tokens: TokenRecord[];
  tasks: TaskRecord[];
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8');

/** Cuts text to at most maxBytes of UTF-8 without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): { text: string; truncated: boolean } {
  // Fast path: no string of n UTF-16 units is more than 3n bytes long.
  if (text.length * 3 <= maxBytes) return { text, truncated: false };
  const bytes = textEncoder.encode(text);
  if (bytes.byteLength <= maxBytes) return { text, truncated: false };
  let end = maxBytes;
  // Step back over continuation bytes (10xxxxxx) to the start of the cut character.
  while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end -= 1;
  return { text: textDecoder.decode(bytes.subarray(0, end)), truncated: true };
}

function cutText(text: string, maxLength: number): string {
  return text.length <= maxLength ? text : `${text.slice(0, maxLength - 1)}…`;
}

/** Backoff before attempt `attempt + 1` after attempt `attempt` failed or was lost. */
export function retryBackoffMs(attempt: number): number {
  return Math.min(limits.retryBackoffBaseMs * 2 ** Math.max(0, attempt - 1), limits.retryBackoffMaxMs);
}

function refuse(index: number, code: Refusal['code'], message: string, ids?: string[]): ApplyResult {
  return { ok: false, index, refusal: ids === undefined ? { code, message } : { code, message, ids } };
}

/**
 * The text a task record holds, for the state's size budget (limits.stateTaskCharsMax): a
 * function of the record alone, so every node counts the same.
 */
export function recordChars(record: TaskRecord): number {
  const { input } = record;
  let chars = limits.stateTaskOverheadChars + (input.prompt?.length ?? 0) + (input.system?.length ?? 0);
  if (input.messages !== null) for (const message of input.messages) chars += message.content.length;
  return chars + (record.output?.length ?? 0) + (record.error?.length ?? 0);
}

/**
 * Whether `attempt` is the attempt that ended `record`, by a cancel or a final failure: the
 * one whose partial output (task.output) the task takes, once, while it has none.
 */
export function attemptEndedTask(record: Readonly<TaskRecord>, attempt: number): boolean {
  const last = record.attempts.at(-1);
  return (record.status === 'cancelled' || record.status === 'failed') && last !== undefined && last.attempt === attempt && last.status === record.status;
}

export class ReplicatedState {
  private lastAppliedIndex = 0;
  private readonly activeTasksLimit: number;
  private readonly finishedTasksLimit: number;
  private readonly taskCharsLimit: number;
  /** recordChars of each task as last counted, and their sum. */
  private readonly charsByTask = new Map<string, number>();
  private taskChars = 0;
  /** The last budget pass dropped every finished task it could (see pruneFinishedChars). */
  private pruneExhausted = false;
  /** Budget passes that scanned the finished tasks (for tests). */
  pruneScans = 0;
  private clusterIdValue: string | null = null;
  private clusterCreatedAtValue: number | null = null;
  private readonly kv = new Map<string, string>();
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly tokenIdByHash = new Map<string, string>();
  private readonly tasks = new Map<string, TaskRecord>();
  private readonly taskIdBySeq = new Map<number, string>();
  private readonly allSeqs = new SortedNumbers();
  private readonly seqsByStatus = new Map<TaskStatus, SortedNumbers>(taskStatuses.map((status) => [status, new SortedNumbers()]));
  private readonly taskIdByIdempotencyKey = new Map<string, string>();
  /**
   * Reverse dependency edges from unfinished dependents: who still needs a task. A failed
   * or cancelled task fails these; a completed one is kept from pruning while it has any,
   * since their prompts may quote its output.
   */
  private readonly waitingDependents = new Map<string, Set<string>>();
  /**
   * The JSON of finished task records, which hardly change again (every command but the
   * last attempt's task.output refuses a finished task, and that one drops the kept
   * JSON; pruning drops them), so that each is serialised for snapshots once, not
   * at every snapshot while it is kept: a snapshot of 10,000 tasks blocked the event loop
   * for 45-94 ms. A copy costs memory, so large records are not kept, nor any past a total
   * (snapshotCache*CharsMax); those are serialised at every snapshot as before.
   */
  private readonly finishedJson = new Map<TaskRecord, string>();
  private finishedJsonChars = 0;
  /**
   * Records that finished since the last snapshot, not serialised yet (from `finishedQueueHead`
   * on): keepFinishedJson() serialises them a few at a time between applies, so a compaction
   * finds most of them done instead of stringifying them all in one turn.
   */
  private finishedQueue: TaskRecord[] = [];
  private finishedQueueHead = 0;

  constructor(options: ReplicatedStateOptions = {}) {
    this.activeTasksLimit = options.activeTasksMax ?? limits.activeTasksMax;
    this.finishedTasksLimit = options.finishedTasksMax ?? limits.finishedTasksMax;
    this.taskCharsLimit = options.taskCharsMax ?? limits.stateTaskCharsMax;
  }

  /** The text the tasks hold (limits.stateTaskCharsMax), for status and tests. */
  get taskCharsHeld(): number {
    return this.taskChars;
  }

  private countChars(record: TaskRecord): void {
    const chars = recordChars(record);
    this.taskChars += chars - (this.charsByTask.get(record.id) ?? 0);
    this.charsByTask.set(record.id, chars);
  }

  // -------------------------------------------------------------------------------------
  // Reads

  get lastApplied(): number {
    return this.lastAppliedIndex;
  }

  get clusterId(): string | null {
    return this.clusterIdValue;
  }

  get clusterCreatedAt(): number | null {
    return this.clusterCreatedAtValue;
  }

  get activeTasksMax(): number {
    return this.activeTasksLimit;
  }

  kvGet(key: string): string | undefined {
    return this.kv.get(key);
  }

  kvKeys(): string[] {
    return [...this.kv.keys()].sort();
  }

  getToken(id: string): Readonly<TokenRecord> | undefined {
    return this.tokens.get(id);
  }

  /** The token with this sha256 hash, revoked or not: the caller checks revokedAt. */
  findTokenByHash(hash: string): Readonly<TokenRecord> | undefined {
    const id = this.tokenIdByHash.get(hash);
    return id === undefined ? undefined : this.tokens.get(id);
  }

  listTokens(): TokenRecord[] {
    return [...this.tokens.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((token) => ({ ...token }));
  }

  getTask(id: string): Task | undefined {
    const record = this.tasks.get(id);
    return record === undefined ? undefined : this.toTask(record);
  }

  /** The full record, input included, for the scheduler and executor. Do not mutate. */
  getTaskRecord(id: string): Readonly<TaskRecord> | undefined {
    return this.tasks.get(id);
  }

  findTaskByIdempotencyKey(key: string): Task | undefined {
    const id = this.taskIdByIdempotencyKey.get(key);
    return id === undefined ? undefined : this.getTask(id);
  }

  countsByStatus(): Record<TaskStatus, number> {
    const counts = {} as Record<TaskStatus, number>;
    for (const status of taskStatuses) counts[status] = this.statusIndex(status).size;
    return counts;
  }

  get activeTaskCount(): number {
    return this.statusIndex('queued').size + this.statusIndex('assigned').size + this.statusIndex('running').size;
  }

  get taskCount(): number {
    return this.tasks.size;
  }

  /** Records with this status, oldest submission first. Do not mutate them. */
  tasksWithStatus(status: TaskStatus): Readonly<TaskRecord>[] {
    return this.statusIndex(status).toArray().map((seq) => this.recordAtSeq(seq));
  }

  /** Assigned + running tasks per node, from the log (not from gossip). */
  inFlightByNode(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const status of ['assigned', 'running'] as const) {
      for (const record of this.tasksWithStatus(status)) {
        const node = record.assignedNode as string;
        counts.set(node, (counts.get(node) ?? 0) + 1);
      }
    }
    return counts;
  }

  /**
   * Newest first, optionally of one status. The cursor is the sequence number of the last
   * task of the previous page, so pages stay stable while tasks are added or change status:
   * a task shows up at most once across the pages of one listing.
   */
  listTasks(options: ListTasksOptions = {}): { tasks: Task[]; nextCursor: string | null } {
    const limit = options.limit ?? limits.listLimitDefault;
    if (!Number.isInteger(limit) || limit < 1 || limit > limits.listLimitMax) {
      throw new HivemeshError(ErrorCode.invalidInput, `limit must be an integer from 1 to ${limits.listLimitMax}`, { details: { field: 'limit' } });
    }
    let before = Number.MAX_SAFE_INTEGER;
    if (options.cursor !== undefined) {
      if (!/^[0-9]{1,16}$/.test(options.cursor)) {
        throw new HivemeshError(ErrorCode.invalidInput, 'cursor must be the nextCursor of a previous page', { details: { field: 'cursor' } });
      }
      before = Number(options.cursor);
    }
    const index = options.status === undefined ? this.allSeqs : this.statusIndex(options.status);
    let position = index.lowerBound(before) - 1;
    const tasks: Task[] = [];
    while (position >= 0 && tasks.length < limit) {
      tasks.push(this.toTask(this.recordAtSeq(index.at(position))));
      position -= 1;
    }
    const last = tasks.at(-1);
    const nextCursor = position >= 0 && last !== undefined ? String(this.tasks.get(last.id)!.seq) : null;
    return { tasks, nextCursor };
  }

  /** The API view of a record; waitingFor names unfinished dependencies (the scheduler adds node reasons). */
  toTask(record: Readonly<TaskRecord>): Task {
    let waitingFor: string | null = null;
    if (record.status === 'queued') {
      const pending = record.input.dependsOn.filter((id) => this.tasks.get(id)?.status !== 'completed');
      if (pending.length > 0) waitingFor = cutText(`dependencies ${pending.join(', ')}`, 1024);
    }
    return {
      id: record.id,
      status: record.status,
      model: record.input.model,
      capability: record.input.capability,
      title: record.input.title,
      priority: record.input.priority,
      pinnedNode: record.pinnedNode,
      assignedNode: record.assignedNode,
      attempt: record.attempt,
      maxAttempts: record.input.maxAttempts,
      timeoutMs: record.input.timeoutMs,
      attempts: record.attempts.map((attempt) => ({ ...attempt })),
      output: record.output,
      outputTruncated: record.outputTruncated,
      error: record.error,
      usage: record.usage === null ? null : { ...record.usage },
      waitingFor,
      notBefore: record.notBefore,
      dependsOn: [...record.input.dependsOn],
      createdAt: record.createdAt,
      startedAt: record.startedAt,
      completedAt: record.completedAt,
      metadata: { ...record.input.metadata },
      idempotencyKey: record.idempotencyKey,
    };
  }

  // -------------------------------------------------------------------------------------
  // Apply

  /**
   * Applies the committed entry at `index` (indexes must increase; gaps are fine, for
   * entries that are not commands). Empty data only advances the applied index (Raft's
   * no-op and configuration entries). Throws MalformedCommandError for a malformed
   * command, and Error for an index that does not increase: both are bugs.
   */
  apply(index: number, data: string): ApplyResult {
    if (!Number.isSafeInteger(index) || index <= this.lastAppliedIndex) {
      throw new Error(`apply(${index}) after ${this.lastAppliedIndex}: entries must be applied once, in increasing order`);
    }
    if (data === '') {
      this.lastAppliedIndex = index;
      return { ok: true, index, task: null, created: false, events: [], prunedTaskIds: [] };
    }
    const command = decodeCommand(data);
    const result = this.applyCommand(index, command);
    if (result.ok) {
      // Every record whose text may have changed: the command's task, and every task with a
      // status change (a failed dependency fails its dependents with a reason).
      const touched = new Set(result.events.map((event) => event.taskId));
      if (result.task !== null) touched.add(result.task.id);
      for (const id of touched) {
        const record = this.tasks.get(id);
        if (record !== undefined) this.countChars(record);
      }
    }
    if (result.ok && result.events.some((event) => isFinished(event.status))) this.pruneExhausted = false;
    if (result.ok && this.taskChars > this.taskCharsLimit) {
      // An output or error grew the text past the budget: the oldest finished tasks go.
      result.prunedTaskIds = [...result.prunedTaskIds, ...this.pruneFinishedChars(Math.floor(this.taskCharsLimit * 0.9))];
    }
    this.lastAppliedIndex = index;
    return result;
  }

  private applyCommand(index: number, command: Command): ApplyResult {
    switch (command.type) {
      case 'cluster.init': return this.clusterInit(index, command);
      case 'kv.put': return this.kvPut(index, command);
      case 'kv.delete': this.kv.delete(command.key); return this.done(index, null);
      case 'token.create': return this.tokenCreate(index, command);
      case 'token.revoke': return this.tokenRevoke(index, command);
      case 'task.submit': return this.taskSubmit(index, command);
      case 'task.assign': return this.taskAssign(index, command);
      case 'task.start': return this.taskStart(index, command);
      case 'task.complete': return this.taskComplete(index, command);
      case 'task.fail': return this.taskFail(index, command);
      case 'task.cancel': return this.taskCancel(index, command);
      case 'task.output': return this.taskPartialOutput(index, command);
      case 'task.pin': return this.taskPin(index, command);
      case 'task.requeue': return this.taskRequeue(index, command);
      case 'tasks.prune': return this.tasksPrune(index, command);
    }
  }

  private done(index: number, record: TaskRecord | null, events: TaskStatusEvent[] = [], created = false): ApplyResult {
    return { ok: true, index, task: record === null ? null : this.toTask(record), created, events, prunedTaskIds: [] };
  }

  private clusterInit(index: number, command: CommandOf<'cluster.init'>): ApplyResult {
    if (this.clusterIdValue !== null) {
      // Re-proposing the same init (a retry) is harmless; another id is a second cluster.
      if (this.clusterIdValue === command.clusterId) return this.done(index, null);
      return refuse(index, 'already-initialized', `the cluster is already initialized as ${this.clusterIdValue}`);
    }
    this.clusterIdValue = command.clusterId;
    this.clusterCreatedAtValue = command.at;
    return this.done(index, null);
  }

  private kvPut(index: number, command: CommandOf<'kv.put'>): ApplyResult {
    if (!this.kv.has(command.key) && this.kv.size >= limits.kvKeysMax) {
      return refuse(index, 'kv-full', `the key/value space holds ${limits.kvKeysMax} keys already; delete one first`);
    }
    this.kv.set(command.key, command.value);
    return this.done(index, null);
  }

  private tokenCreate(index: number, command: CommandOf<'token.create'>): ApplyResult {
    if (this.tokens.has(command.id)) return refuse(index, 'token-exists', `a token with id ${command.id} exists`, [command.id]);
    const sameHash = this.tokenIdByHash.get(command.hash);
    if (sameHash !== undefined) return refuse(index, 'token-exists', `token ${sameHash} has the same secret`, [sameHash]);
    let active = 0;
    for (const token of this.tokens.values()) if (token.revokedAt === null) active += 1;
    if (active >= limits.activeTokensMax) {
      return refuse(index, 'tokens-full', `there are ${limits.activeTokensMax} active tokens already; revoke unused ones first`);
    }
    this.tokens.set(command.id, { id: command.id, name: command.name, role: command.role, hash: command.hash, createdAt: command.at, revokedAt: null });
    this.tokenIdByHash.set(command.hash, command.id);
    return this.done(index, null);
  }

  private tokenRevoke(index: number, command: CommandOf<'token.revoke'>): ApplyResult {
    const token = this.tokens.get(command.id);
    if (token === undefined) return refuse(index, 'not-found', `no token has id ${command.id}`, [command.id]);
    if (token.revokedAt !== null) return refuse(index, 'token-revoked', `token ${command.id} was revoked already`, [command.id]);
    token.revokedAt = command.at;
    const revoked = [...this.tokens.values()].filter((candidate) => candidate.revokedAt !== null);
    if (revoked.length > limits.revokedTokensKeepMax) {
      // Forget the longest-revoked first; ties by id so every node forgets the same one.
      revoked.sort((a, b) => (a.revokedAt as number) - (b.revokedAt as number) || (a.id < b.id ? -1 : 1));
      for (const forgotten of revoked.slice(0, revoked.length - limits.revokedTokensKeepMax)) {
        this.tokens.delete(forgotten.id);
        this.tokenIdByHash.delete(forgotten.hash);
      }
    }
    return this.done(index, null);
  }

  private taskSubmit(index: number, command: CommandOf<'task.submit'>): ApplyResult {
    const idempotencyKey = command.idempotencyKey ?? null;
    if (idempotencyKey !== null) {
      const existingId = this.taskIdByIdempotencyKey.get(idempotencyKey);
      if (existingId !== undefined) {
        const existing = this.tasks.get(existingId)!;
        if (existing.bodyHash === command.bodyHash) return this.done(index, existing, [], false);
        return refuse(index, 'idempotency-conflict',
          `idempotency key ${JSON.stringify(idempotencyKey)} was used for task ${existingId} with a different body; use a new key for a new task`,
          [existingId]);
      }
    }
    const sameId = this.tasks.get(command.id);
    if (sameId !== undefined) {
      // The same proposal committed twice (a client or leader retry) is the same task.
      if (sameId.bodyHash === command.bodyHash) return this.done(index, sameId, [], false);
      return refuse(index, 'task-exists', `a different task with id ${command.id} exists`, [command.id]);
    }
    const dependsOn = command.input.dependsOn;
    // Dependencies must exist when a task is submitted and a task never gains dependencies
    // later, so the graph is acyclic by construction: the only possible cycle is a task
    // naming itself.
    if (dependsOn.includes(command.id)) {
      return refuse(index, 'dependency-cycle', `task ${command.id} cannot depend on itself`, [command.id]);
    }
    const unknown = dependsOn.filter((id) => !this.tasks.has(id));
    if (unknown.length > 0) {
      return refuse(index, 'unknown-dependency', `dependsOn names unknown tasks: ${unknown.join(', ')} (finished tasks are forgotten after a while)`, unknown);
    }
    const doomed = dependsOn.filter((id) => {
      const status = this.tasks.get(id)!.status;
      return status === 'failed' || status === 'cancelled';
    });
    if (doomed.length > 0) {
      return refuse(index, 'dependency-failed', `dependencies ${doomed.join(', ')} failed or were cancelled, so this task could never run`, doomed);
    }
    if (this.activeTaskCount >= this.activeTasksLimit) {
      return refuse(index, 'queue-full', `the cluster holds ${this.activeTasksLimit} unfinished tasks, its limit; retry when some have finished`);
    }
    const record: TaskRecord = {
      seq: index, id: command.id, input: command.input, idempotencyKey, bodyHash: command.bodyHash, status: 'queued',
      pinnedNode: null, assignedNode: null, attempt: 0, attempts: [], output: null, outputTruncated: false,
      error: null, usage: null, notBefore: null, createdAt: command.at, startedAt: null, completedAt: null,
    };
    const chars = recordChars(record);
    if (this.taskChars + chars > this.taskCharsLimit) {
      // Room is made from the oldest finished tasks first; what is unfinished stays.
      this.pruneFinishedChars(Math.min(Math.floor(this.taskCharsLimit * 0.9), this.taskCharsLimit - chars));
      if (this.taskChars + chars > this.taskCharsLimit) {
        const mib = (value: number) => Math.round(value / (1024 * 1024));
        return refuse(index, 'queue-full',
          `the cluster's tasks hold ${mib(this.taskChars)} Mi characters of prompts and outputs still needed (unfinished tasks, and finished ones their dependents quote), and this task's ${Math.ceil(chars / 1024)} Ki would pass the ${mib(this.taskCharsLimit)} Mi limit; retry when some have finished, or send a shorter prompt`);
      }
    }
    this.tasks.set(record.id, record);
    this.taskIdBySeq.set(record.seq, record.id);
    this.allSeqs.insert(record.seq);
    this.statusIndex('queued').insert(record.seq);
    if (idempotencyKey !== null) this.taskIdByIdempotencyKey.set(idempotencyKey, record.id);
    for (const dependency of dependsOn) {
      let dependents = this.waitingDependents.get(dependency);
      if (dependents === undefined) this.waitingDependents.set(dependency, (dependents = new Set()));
      dependents.add(record.id);
    }
    const event = this.statusEvent(record, command.at, null);
    const result = this.done(index, record, [event], true);
    if (this.taskCount - this.activeTaskCount > this.finishedTasksLimit) {
      // Prune to 90% of the cap, so the sort behind it runs once per many submissions.
      const keep = Math.floor(this.finishedTasksLimit * 0.9);
      if (result.ok) result.prunedTaskIds = this.pruneFinished(Number.MAX_SAFE_INTEGER, keep, 0);
    }
    return result;
  }

  private taskAssign(index: number, command: CommandOf<'task.assign'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    if (record.status !== 'queued') {
      return refuse(index, 'not-assignable', `task ${record.id} is ${record.status} on ${record.assignedNode} (attempt ${record.attempt})`);
    }
    if (command.attempt !== record.attempt + 1) {
      return refuse(index, 'stale-attempt', `task ${record.id} is at attempt ${record.attempt}; the next assignment must be attempt ${record.attempt + 1}, not ${command.attempt}`);
    }
    if (command.attempt > record.input.maxAttempts) {
      return refuse(index, 'not-assignable', `task ${record.id} allows ${record.input.maxAttempts} attempts`);
    }
    const previous = record.attempts.at(-1);
    if (previous !== undefined && command.term < previous.term) {
      return refuse(index, 'stale-attempt', `attempt ${previous.attempt} was assigned in term ${previous.term}; an assignment from term ${command.term} is stale`);
    }
    if (record.pinnedNode !== null && record.pinnedNode !== command.node) {
      return refuse(index, 'pinned-elsewhere', `task ${record.id} is pinned to node ${record.pinnedNode}`, [record.pinnedNode]);
    }
    const pending = record.input.dependsOn.filter((id) => this.tasks.get(id)?.status !== 'completed');
    if (pending.length > 0) {
      return refuse(index, 'not-assignable', `task ${record.id} waits for dependencies ${pending.join(', ')}`, pending);
    }
    if (record.notBefore !== null && command.at < record.notBefore) {
      return refuse(index, 'not-assignable', `task ${record.id} backs off until ${record.notBefore}`);
    }
    record.attempt = command.attempt;
    record.assignedNode = command.node;
    record.notBefore = null;
    record.attempts.push({
      attempt: command.attempt, node: command.node, term: command.term, model: command.model ?? record.input.model,
      agentId: command.agentId ?? null, status: 'assigned', assignedAt: command.at, startedAt: null, endedAt: null, error: null,
    });
    this.setStatus(record, 'assigned');
    return this.done(index, record, [this.statusEvent(record, command.at, null)]);
  }

  private taskStart(index: number, command: CommandOf<'task.start'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    const stale = this.staleAttempt(index, record, command.attempt);
    if (stale !== null) return stale;
    if (record.assignedNode !== command.node) {
      return refuse(index, 'stale-attempt', `attempt ${command.attempt} of task ${record.id} belongs to node ${record.assignedNode}, not ${command.node}`);
    }
    if (record.status === 'running') return refuse(index, 'invalid-transition', `attempt ${command.attempt} of task ${record.id} is running already`);
    const attempt = this.currentAttempt(record);
    attempt.status = 'running';
    attempt.startedAt = command.at;
    record.startedAt = command.at;
    this.setStatus(record, 'running');
    return this.done(index, record, [this.statusEvent(record, command.at, null)]);
  }

  private taskComplete(index: number, command: CommandOf<'task.complete'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    const stale = this.staleAttempt(index, record, command.attempt);
    if (stale !== null) return stale;
    const attempt = this.currentAttempt(record);
    const { text, truncated } = truncateUtf8(command.output, limits.taskOutputBytesMax);
    attempt.status = 'completed';
    attempt.startedAt ??= command.at;
    attempt.endedAt = command.at;
    record.startedAt ??= attempt.startedAt;
    record.output = text;
    record.outputTruncated = truncated || command.outputTruncated === true;
    record.usage = { ...command.usage };
    record.completedAt = command.at;
    this.setStatus(record, 'completed');
    this.releaseDependencies(record);
    return this.done(index, record, [this.statusEvent(record, command.at, null)]);
  }

  private taskFail(index: number, command: CommandOf<'task.fail'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    const stale = this.staleAttempt(index, record, command.attempt);
    if (stale !== null) return stale;
    const error = cutText(command.error, limits.taskErrorLengthMax);
    return this.endAttempt(index, record, 'failed', error, command.retryable, command.at);
  }

  private taskRequeue(index: number, command: CommandOf<'task.requeue'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    const stale = this.staleAttempt(index, record, command.attempt);
    if (stale !== null) return stale;
    const reason = cutText(command.reason, limits.taskErrorLengthMax);
    return this.endAttempt(index, record, 'lost', reason, true, command.at);
  }

  /** The current attempt failed or was lost: back to the queue with backoff, or the task fails. */
  private endAttempt(index: number, record: TaskRecord, outcome: 'failed' | 'lost', error: string, retryable: boolean, at: number): ApplyResult {
    const attempt = this.currentAttempt(record);
    attempt.status = outcome;
    attempt.endedAt = at;
    attempt.error = error;
    if (retryable && record.attempt < record.input.maxAttempts) {
      record.assignedNode = null;
      record.notBefore = at + retryBackoffMs(record.attempt);
      this.setStatus(record, 'queued');
      return this.done(index, record, [this.statusEvent(record, at, error)]);
    }
    const why = retryable
      ? `gave up after ${record.attempt} of ${record.input.maxAttempts} attempts; the last ${outcome === 'lost' ? 'was lost' : 'failed'}: ${error}`
      : error;
    const events: TaskStatusEvent[] = [];
    this.finish(record, 'failed', cutText(why, limits.taskErrorLengthMax), at, events);
    return this.done(index, record, events);
  }

  private taskCancel(index: number, command: CommandOf<'task.cancel'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    const reason = cutText(command.reason ?? 'cancelled on request', limits.taskErrorLengthMax);
    if (record.status === 'assigned' || record.status === 'running') {
      const attempt = this.currentAttempt(record);
      attempt.status = 'cancelled';
      attempt.endedAt = command.at;
    }
    const events: TaskStatusEvent[] = [];
    this.finish(record, 'cancelled', reason, command.at, events);
    return this.done(index, record, events);
  }

  /**
   * A cancelled task, or one whose last attempt failed for good (a timeout, most often),
   * takes the text that attempt had generated, reported by its node after the end: once, and
   * only from the attempt that ended the task (the output is what was generated until then;
   * there is no usage, Ollama never sent its final chunk). The record changes after it
   * finished, so its kept JSON goes.
   */
  private taskPartialOutput(index: number, command: CommandOf<'task.output'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (!attemptEndedTask(record, command.attempt)) {
      return refuse(index, 'stale-attempt', `attempt ${command.attempt} of task ${record.id} did not end the task by a cancel or a final failure (the task is ${record.status} at attempt ${record.attempt}); its partial output is discarded`);
    }
    if (record.output !== null) return refuse(index, 'task-finished', `task ${record.id} already holds the output of its last attempt`, [record.id]);
    const { text, truncated } = truncateUtf8(command.output, limits.taskOutputBytesMax);
    record.output = text;
    record.outputTruncated = truncated || command.outputTruncated === true;
    this.dropFinishedJson(record);
    return this.done(index, record);
  }

  private taskPin(index: number, command: CommandOf<'task.pin'>): ApplyResult {
    const record = this.tasks.get(command.id);
    if (record === undefined) return this.notFound(index, command.id);
    if (isFinished(record.status)) return this.finishedRefusal(index, record);
    if (record.status !== 'queued') {
      return refuse(index, 'invalid-transition', `only a queued task can be pinned; task ${record.id} is ${record.status} on ${record.assignedNode}`);
    }
    record.pinnedNode = command.node;
    return this.done(index, record);
  }

  /**
   * Forgets the oldest finished tasks (not those an unfinished dependent still quotes) until
   * the tasks' text is at most `target`. Returns the forgotten ids, oldest first.
   */
  private pruneFinishedChars(target: number): string[] {
    // After a pass that could not reach the target, the next can do no better until a task
    // finishes (only that makes a task prunable): skip the scan of every finished task. The
    // same on every node, a restored one included (its first pass would prune nothing).
    if (this.taskChars <= target || this.pruneExhausted) return [];
    this.pruneScans += 1;
    const finished = this.prunableOldestFirst();
    const pruned: string[] = [];
    for (const record of finished) {
      if (this.taskChars <= target) break;
      this.forget(record);
      pruned.push(record.id);
    }
    if (this.taskChars > target) this.pruneExhausted = true;
    return pruned;
  }

  /** Finished tasks no unfinished dependent quotes, the earliest finished first: what pruning may drop. */
  private prunableOldestFirst(): TaskRecord[] {
    const finished: TaskRecord[] = [];
    for (const status of ['completed', 'failed', 'cancelled'] as const) {
      for (const seq of this.statusIndex(status).toArray()) {
        const record = this.recordAtSeq(seq);
        if (!this.waitingDependents.has(record.id)) finished.push(record);
      }
    }
    return finished.sort((a, b) => (a.completedAt as number) - (b.completedAt as number) || a.seq - b.seq);
  }

  private tasksPrune(index: number, command: CommandOf<'tasks.prune'>): ApplyResult {
    const pruned = this.pruneFinished(command.keepFinishedMs, command.keepFinishedMax, command.at);
    return { ok: true, index, task: null, created: false, events: [], prunedTaskIds: pruned };
  }

  /**
   * Forgets finished tasks that finished more than keepMs before `at`, and then the oldest
   * beyond keepMax. Finished tasks whose output an unfinished dependent still needs are
   * kept. Returns the forgotten ids, oldest first.
   */
  private pruneFinished(keepMs: number, keepMax: number, at: number): string[] {
    const finished = this.prunableOldestFirst();
    const cutoff = at - keepMs;
    const tooMany = Math.max(0, finished.length - keepMax);
    const pruned: string[] = [];
    for (let position = 0; position < finished.length; position += 1) {
      const record = finished[position] as TaskRecord;
      if (position >= tooMany && (record.completedAt as number) > cutoff) break;
      this.forget(record);
      pruned.push(record.id);
    }
    return pruned;
  }

  // -------------------------------------------------------------------------------------
  // Helpers

  private statusIndex(status: TaskStatus): SortedNumbers {
    return this.seqsByStatus.get(status)!;
  }

  private recordAtSeq(seq: number): TaskRecord {
    return this.tasks.get(this.taskIdBySeq.get(seq)!)!;
  }

  private dropFinishedJson(record: TaskRecord): void {
    const json = this.finishedJson.get(record);
    if (json === undefined) return;
    this.finishedJson.delete(record);
    this.finishedJsonChars -= json.length;
  }

  private setStatus(record: TaskRecord, status: TaskStatus): void {
    this.dropFinishedJson(record);
    this.statusIndex(record.status).delete(record.seq);
    record.status = status;
    this.statusIndex(status).insert(record.seq);
    if (isFinished(status)) {
      // Bounded: a state nobody snapshots or calls keepFinishedJson() on drops the backlog
      // (the next snapshot serialises those records itself).
      if (this.finishedQueue.length >= finishedQueueMax) this.clearFinishedQueue();
      this.finishedQueue.push(record);
    }
  }

  private clearFinishedQueue(): void {
    this.finishedQueue = [];
    this.finishedQueueHead = 0;
  }

  /** Keeps a finished record's JSON for later snapshots if it fits the bounds. */
  private keepJson(record: TaskRecord, json: string): void {
    if (isFinished(record.status) && json.length <= snapshotCacheRecordCharsMax && this.finishedJsonChars + json.length <= snapshotCacheTotalCharsMax) {
      this.finishedJson.set(record, json);
      this.finishedJsonChars += json.length;
    }
  }

  /**
   * Serialises up to `max` of the records that finished since the last snapshot, for the
   * next one; returns how many it serialised. Call it between applies, never during one (a
   * record is final once the command that finished it has been applied).
   */
  keepFinishedJson(max: number): number {
    let kept = 0;
    while (kept < max && this.finishedQueueHead < this.finishedQueue.length) {
      const record = this.finishedQueue[this.finishedQueueHead++]!;
      // Pruned since, or already kept: nothing to do.
      if (this.tasks.get(record.id) !== record || this.finishedJson.has(record)) continue;
      this.keepJson(record, JSON.stringify(record));
      kept += 1;
    }
    if (this.finishedQueueHead >= this.finishedQueue.length) this.clearFinishedQueue();
    return kept;
  }

  private currentAttempt(record: TaskRecord): Attempt {
    const attempt = record.attempts.at(-1);
    if (attempt === undefined || attempt.attempt !== record.attempt) {
      throw new Error(`task ${record.id} at attempt ${record.attempt} has no record of it`);
    }
    return attempt;
  }

  /** Null when `attempt` is the live attempt (assigned or running) of the task. */
  private staleAttempt(index: number, record: TaskRecord, attempt: number): ApplyResult | null {
    if (attempt === record.attempt && (record.status === 'assigned' || record.status === 'running')) return null;
    const current = record.status === 'queued'
      ? `task ${record.id} is queued again after attempt ${record.attempt}`
      : `task ${record.id} is at attempt ${record.attempt}`;
    return refuse(index, 'stale-attempt', `attempt ${attempt} is not the live attempt: ${current}; its report is discarded`);
  }

  private notFound(index: number, id: string): ApplyResult {
    return refuse(index, 'not-found', `no task has id ${id}`, [id]);
  }

  private finishedRefusal(index: number, record: TaskRecord): ApplyResult {
    return refuse(index, 'task-finished', `task ${record.id} is ${record.status} already`, [record.id]);
  }

  /** Moves a task to a terminal status, then fails whatever waited on it, transitively. */
  private finish(record: TaskRecord, status: 'failed' | 'cancelled', error: string, at: number, events: TaskStatusEvent[]): void {
    const work: { record: TaskRecord; status: 'failed' | 'cancelled'; error: string }[] = [{ record, status, error }];
    // Each task is finished at most once, so the loop runs at most taskCount times.
    while (work.length > 0) {
      const item = work.shift()!;
      const target = item.record;
      if (isFinished(target.status)) continue;
      if (target !== record && target.status !== 'queued') {
        throw new Error(`dependent ${target.id} is ${target.status} while its dependency ${record.id} was unfinished`);
      }
      target.error = item.error;
      target.completedAt = at;
      target.assignedNode = target.status === 'queued' ? null : target.assignedNode;
      target.notBefore = null;
      this.setStatus(target, item.status);
      this.releaseDependencies(target);
      events.push(this.statusEvent(target, at, item.error));
      const dependents = this.waitingDependents.get(target.id);
      this.waitingDependents.delete(target.id);
      for (const dependentId of [...(dependents ?? [])].sort()) {
        const dependent = this.tasks.get(dependentId)!;
        const verb = item.status === 'cancelled' ? 'was cancelled' : 'failed';
        work.push({ record: dependent, status: 'failed', error: cutText(`dependency ${target.id} ${verb}: ${item.error}`, limits.taskErrorLengthMax) });
      }
    }
  }

  /** A finished task no longer waits on anything: drop its reverse edges. */
  private releaseDependencies(record: TaskRecord): void {
    for (const dependency of record.input.dependsOn) {
      const dependents = this.waitingDependents.get(dependency);
      if (dependents === undefined) continue;
      dependents.delete(record.id);
      if (dependents.size === 0) this.waitingDependents.delete(dependency);
    }
  }

  private forget(record: TaskRecord): void {
    this.dropFinishedJson(record);
    this.taskChars -= this.charsByTask.get(record.id) ?? 0;
    this.charsByTask.delete(record.id);
    this.tasks.delete(record.id);
    this.taskIdBySeq.delete(record.seq);
    this.allSeqs.delete(record.seq);
    this.statusIndex(record.status).delete(record.seq);
    const key = record.idempotencyKey;
    if (key !== null && this.taskIdByIdempotencyKey.get(key) === record.id) this.taskIdByIdempotencyKey.delete(key);
  }

  /**
   * The status changes between this state and `after` (a snapshot installed over it), one
   * event per task whose status, attempt or node differs, with its status in `after`, in
   * submission order. A snapshot replaces the state without applying the entries inside it,
   * so these are the transitions nobody was told of; tasks pruned meanwhile have none.
   */
  transitionsTo(after: ReplicatedState, at: number): TaskStatusEvent[] {
    const changed: TaskRecord[] = [];
    for (const record of after.tasks.values()) {
      const before = this.tasks.get(record.id);
      if (before !== undefined && before.status === record.status && before.attempt === record.attempt && before.assignedNode === record.assignedNode) continue;
      changed.push(record);
    }
    changed.sort((a, b) => a.seq - b.seq);
    return changed.map((record) => after.statusEvent(record, at, record.error));
  }

  private statusEvent(record: TaskRecord, at: number, reason: string | null): TaskStatusEvent {
    return { type: 'status', taskId: record.id, status: record.status, attempt: record.attempt, node: record.assignedNode, at, reason };
  }

  // -------------------------------------------------------------------------------------
  // Snapshots

  /** The whole state as text; restore(snapshot()) behaves identically from here on. */
  snapshot(): string {
    const data: SnapshotData = {
      format: snapshotFormat,
      lastApplied: this.lastAppliedIndex,
      activeTasksMax: this.activeTasksLimit,
      finishedTasksMax: this.finishedTasksLimit,
      taskCharsMax: this.taskCharsLimit,
      clusterId: this.clusterIdValue,
      clusterCreatedAt: this.clusterCreatedAtValue,
      kv: this.kvKeys().map((key) => [key, this.kv.get(key)!]),
      tokens: this.listTokens(),
      tasks: [],
    };
    const records: string[] = [];
    for (const seq of this.allSeqs.toArray()) {
      const record = this.recordAtSeq(seq);
      let json = this.finishedJson.get(record);
      if (json === undefined) {
        json = JSON.stringify(record);
        this.keepJson(record, json);
      }
      records.push(json);
    }
    // Every finished record has been considered now.
    this.clearFinishedQueue();
    // The same text as JSON.stringify(data) with the records in `tasks`, its last key.
    const head = JSON.stringify(data);
    return `${head.slice(0, -'[]}'.length)}[${records.join(',')}]}`;
  }

  static restore(text: string): ReplicatedState {
    let data: SnapshotData;
    try {
      data = JSON.parse(text) as SnapshotData;
    } catch (error) {
      throw new MalformedCommandError(`a state snapshot is not JSON: ${(error as Error).message}`);
    }
    if (typeof data !== 'object' || data === null || data.format !== snapshotFormat) {
      throw new MalformedCommandError(`a state snapshot has format ${JSON.stringify((data as { format?: unknown } | null)?.format)}; this version reads format ${snapshotFormat}`);
    }
    const state = new ReplicatedState({ activeTasksMax: data.activeTasksMax, finishedTasksMax: data.finishedTasksMax, ...(data.taskCharsMax === undefined ? {} : { taskCharsMax: data.taskCharsMax }) });
    state.lastAppliedIndex = data.lastApplied;
    state.clusterIdValue = data.clusterId;
    state.clusterCreatedAtValue = data.clusterCreatedAt;
    for (const [key, value] of data.kv) state.kv.set(key, value);
    for (const token of data.tokens) {
      state.tokens.set(token.id, token);
      state.tokenIdByHash.set(token.hash, token.id);
    }
    for (const record of data.tasks) {
      state.tasks.set(record.id, record);
      state.taskIdBySeq.set(record.seq, record.id);
      state.allSeqs.insert(record.seq);
      state.statusIndex(record.status).insert(record.seq);
      if (record.idempotencyKey !== null) state.taskIdByIdempotencyKey.set(record.idempotencyKey, record.id);
      state.countChars(record);
    }
    // Reverse edges are derived: rebuilt in seq order, as submissions created them.
    for (const record of data.tasks) {
      if (isFinished(record.status)) continue;
      for (const dependency of record.input.dependsOn) {
        let dependents = state.waitingDependents.get(dependency);
        if (dependents === undefined) state.waitingDependents.set(dependency, (dependents = new Set()));
        dependents.add(record.id);
      }
    }
    return state;
  }
}
