// The task API's shapes: what POST /api/tasks accepts (TaskSubmit, validated into the
// normalised TaskInput), what GET /api/tasks[/:id] returns (Task), what the task SSE
// stream sends (TaskEvent), and the refusals the replicated state answers with and the
// HTTP errors they become. Times are integers, ms since the epoch.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import { ErrorCode, HivemeshError } from './errors.ts';
import * as limits from './limits.ts';

// Task ids also appear inside prompts as {{tasks.ID.output}}, hence the plain alphabet.
export const TaskId = Type.String({ minLength: 1, maxLength: limits.taskIdLengthMax, pattern: '^[A-Za-z0-9_-]+$' });
export type TaskId = Static<typeof TaskId>;

export const MessageRole = Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant'), Type.Literal('tool')]);
export type MessageRole = Static<typeof MessageRole>;

export const ChatMessage = Type.Object({
  role: MessageRole,
  content: Type.String({ maxLength: limits.taskMessageContentLengthMax }),
}, { additionalProperties: false });
export type ChatMessage = Static<typeof ChatMessage>;

/** Ollama's `format`: 'json', or a JSON schema the output must follow. */
export const TaskFormat = Type.Union([Type.Literal('json'), Type.Object({}, { additionalProperties: true })]);
export type TaskFormat = Static<typeof TaskFormat>;

const MetadataValue = Type.Union([
  Type.String({ maxLength: limits.taskMetadataValueLengthMax }), Type.Number(), Type.Boolean(), Type.Null(),
]);
export const TaskMetadata = Type.Record(Type.String({ maxLength: limits.taskMetadataKeyLengthMax }), MetadataValue, {
  maxProperties: limits.taskMetadataKeysMax,
});
export type TaskMetadata = Static<typeof TaskMetadata>;

/** Options passed to Ollama as they are (temperature, num_ctx, num_predict, seed, ...). */
export const TaskOptions = Type.Record(Type.String({ maxLength: 128 }), Type.Unknown());
export type TaskOptions = Static<typeof TaskOptions>;

const ModelName = Type.String({ minLength: 1, maxLength: limits.modelNameLengthMax });
const Capability = Type.String({ minLength: 1, maxLength: limits.capabilityLengthMax });

/** POST /api/tasks. Unknown fields are refused so a misspelt option is not silently ignored. */
export const TaskSubmit = Type.Object({
  model: Type.Optional(ModelName),
  capability: Type.Optional(Capability),
  prompt: Type.Optional(Type.String({ minLength: 1, maxLength: limits.taskPromptLengthMax })),
  messages: Type.Optional(Type.Array(ChatMessage, { minItems: 1, maxItems: limits.taskMessagesMax })),
  system: Type.Optional(Type.String({ maxLength: limits.systemPromptLengthMax })),
  options: Type.Optional(TaskOptions),
  format: Type.Optional(TaskFormat),
  title: Type.Optional(Type.String({ maxLength: limits.taskTitleLengthMax })),
  priority: Type.Optional(Type.Integer({ minimum: limits.taskPriorityMin, maximum: limits.taskPriorityMax })),
  dependsOn: Type.Optional(Type.Array(TaskId, { maxItems: limits.taskDependsOnMax })),
  timeoutMs: Type.Optional(Type.Integer({ minimum: limits.taskTimeoutMsMin, maximum: limits.taskTimeoutMsMax })),
  maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.taskMaxAttemptsMax })),
  idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: limits.idempotencyKeyLengthMax })),
  metadata: Type.Optional(TaskMetadata),
}, { additionalProperties: false });
export type TaskSubmit = Static<typeof TaskSubmit>;

/** A submission after validation: every field present, defaults filled in. */
export const TaskInput = Type.Object({
  model: Type.Union([ModelName, Type.Null()]),
  capability: Type.Union([Capability, Type.Null()]),
  prompt: Type.Union([Type.String({ minLength: 1, maxLength: limits.taskPromptLengthMax }), Type.Null()]),
  messages: Type.Union([Type.Array(ChatMessage, { minItems: 1, maxItems: limits.taskMessagesMax }), Type.Null()]),
  system: Type.Union([Type.String({ maxLength: limits.systemPromptLengthMax }), Type.Null()]),
  options: Type.Union([TaskOptions, Type.Null()]),
  format: Type.Union([TaskFormat, Type.Null()]),
  title: Type.Union([Type.String({ maxLength: limits.taskTitleLengthMax }), Type.Null()]),
  priority: Type.Integer({ minimum: limits.taskPriorityMin, maximum: limits.taskPriorityMax }),
  dependsOn: Type.Array(TaskId, { maxItems: limits.taskDependsOnMax }),
  timeoutMs: Type.Integer({ minimum: limits.taskTimeoutMsMin, maximum: limits.taskTimeoutMsMax }),
  maxAttempts: Type.Integer({ minimum: 1, maximum: limits.taskMaxAttemptsMax }),
  idempotencyKey: Type.Union([Type.String({ minLength: 1, maxLength: limits.idempotencyKeyLengthMax }), Type.Null()]),
  metadata: TaskMetadata,
}, { additionalProperties: false });
export type TaskInput = Static<typeof TaskInput>;

export const TaskStatus = Type.Union([
  Type.Literal('queued'), Type.Literal('assigned'), Type.Literal('running'),
  Type.Literal('completed'), Type.Literal('failed'), Type.Literal('cancelled'),
]);
export type TaskStatus = Static<typeof TaskStatus>;
export const taskStatuses: readonly TaskStatus[] = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled'];
export const finishedStatuses: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];
export function isFinished(status: TaskStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** `lost`: the node died, lost the quorum, or the attempt timed out (task.requeue). */
export const AttemptStatus = Type.Union([
  Type.Literal('assigned'), Type.Literal('running'), Type.Literal('completed'),
  Type.Literal('failed'), Type.Literal('lost'), Type.Literal('cancelled'),
]);
export type AttemptStatus = Static<typeof AttemptStatus>;

const Ms = Type.Integer({ minimum: 0 });
const NullableMs = Type.Union([Ms, Type.Null()]);
const ErrorText = Type.String({ maxLength: limits.taskErrorLengthMax });

export const Attempt = Type.Object({
  attempt: Type.Integer({ minimum: 1 }),
  node: Type.String({ minLength: 1, maxLength: 128 }),
  /** Raft term of the leader that assigned it: with `attempt`, the fencing token. */
  term: Type.Integer({ minimum: 0 }),
  /** The model it runs with: the task's, or the chosen agent's for a capability task. */
  model: Type.Union([ModelName, Type.Null()]),
  agentId: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
  status: AttemptStatus,
  assignedAt: Ms,
  startedAt: NullableMs,
  endedAt: NullableMs,
  error: Type.Union([ErrorText, Type.Null()]),
}, { additionalProperties: false });
export type Attempt = Static<typeof Attempt>;

export const Usage = Type.Object({
  promptTokens: Type.Integer({ minimum: 0 }),
  completionTokens: Type.Integer({ minimum: 0 }),
  tokensPerSecond: Type.Number({ minimum: 0 }),
  loadMs: Type.Number({ minimum: 0 }),
  totalMs: Type.Number({ minimum: 0 }),
}, { additionalProperties: false });
export type Usage = Static<typeof Usage>;

/** GET /api/tasks/:id and each item of GET /api/tasks. The prompt is not repeated here. */
export const Task = Type.Object({
  id: TaskId,
  status: TaskStatus,
  model: Type.Union([ModelName, Type.Null()]),
  capability: Type.Union([Capability, Type.Null()]),
  title: Type.Union([Type.String({ maxLength: limits.taskTitleLengthMax }), Type.Null()]),
  priority: Type.Integer({ minimum: limits.taskPriorityMin, maximum: limits.taskPriorityMax }),
  /** Set by PUT /api/tasks/:id/assign: only this node may run it. */
  pinnedNode: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
  assignedNode: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
  /** Number of the latest attempt, 0 before the first assignment. */
  attempt: Type.Integer({ minimum: 0 }),
  maxAttempts: Type.Integer({ minimum: 1, maximum: limits.taskMaxAttemptsMax }),
  timeoutMs: Type.Integer({ minimum: 0 }),
  attempts: Type.Array(Attempt, { maxItems: limits.taskMaxAttemptsMax }),
  output: Type.Union([Type.String(), Type.Null()]),
  /** True when the stored output was cut at taskOutputBytesMax. */
  outputTruncated: Type.Boolean(),
  error: Type.Union([ErrorText, Type.Null()]),
  usage: Type.Union([Usage, Type.Null()]),
  /** Why a queued task has not been placed yet, for people; null otherwise. */
  waitingFor: Type.Union([Type.String({ maxLength: 1024 }), Type.Null()]),
  /** A retried task is not placed before this time (backoff). */
  notBefore: NullableMs,
  dependsOn: Type.Array(TaskId, { maxItems: limits.taskDependsOnMax }),
  createdAt: Ms,
  startedAt: NullableMs,
  completedAt: NullableMs,
  metadata: TaskMetadata,
  idempotencyKey: Type.Union([Type.String({ maxLength: limits.idempotencyKeyLengthMax }), Type.Null()]),
}, { additionalProperties: false });
export type Task = Static<typeof Task>;

/** GET /api/tasks query. The cursor is opaque: pass back the nextCursor of a page. */
export const TaskListQuery = Type.Object({
  status: Type.Optional(TaskStatus),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.listLimitMax })),
  cursor: Type.Optional(Type.String({ maxLength: 32, pattern: '^[0-9]+$' })),
}, { additionalProperties: false });
export type TaskListQuery = Static<typeof TaskListQuery>;

export const TaskList = Type.Object({
  tasks: Type.Array(Task, { maxItems: limits.listLimitMax }),
  nextCursor: Type.Union([Type.String(), Type.Null()]),
}, { additionalProperties: false });
export type TaskList = Static<typeof TaskList>;

/** PUT /api/tasks/:id/assign */
export const TaskPin = Type.Object({ node: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false });
export type TaskPin = Static<typeof TaskPin>;

/**
 * GET /api/tasks/:id/events sends these as SSE `data:` lines, with the `type` as the SSE
 * event name: status changes, output text as it is generated (sequence counts chunks of
 * one attempt from 0, so a reader that switches nodes can drop what it saw), and the
 * task's final state last, after which the stream ends.
 */
export const TaskStatusEvent = Type.Object({
  type: Type.Literal('status'),
  taskId: TaskId,
  status: TaskStatus,
  attempt: Type.Integer({ minimum: 0 }),
  node: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
  at: Ms,
  reason: Type.Union([ErrorText, Type.Null()]),
}, { additionalProperties: false });
export type TaskStatusEvent = Static<typeof TaskStatusEvent>;

export const TaskOutputEvent = Type.Object({
  type: Type.Literal('output'),
  taskId: TaskId,
  attempt: Type.Integer({ minimum: 1 }),
  sequence: Type.Integer({ minimum: 0 }),
  text: Type.String({ maxLength: limits.taskOutputChunkLengthMax }),
}, { additionalProperties: false });
export type TaskOutputEvent = Static<typeof TaskOutputEvent>;

export const TaskFinalEvent = Type.Object({ type: Type.Literal('final'), task: Task }, { additionalProperties: false });
export type TaskFinalEvent = Static<typeof TaskFinalEvent>;

export const TaskEvent = Type.Union([TaskStatusEvent, TaskOutputEvent, TaskFinalEvent]);
export type TaskEvent = Static<typeof TaskEvent>;

// ---------------------------------------------------------------------------------------
// Validation of a submission, with reasons a person can act on.

export interface FieldError {
  /** Dotted path of the field: `priority`, `messages[2].role`, `metadata.owner`. */
  field: string;
  reason: string;
}

export type TaskSubmitValidation = { ok: true; input: TaskInput } | { ok: false; errors: FieldError[] };

const fieldErrorsMax = 20;
const submitChecker = TypeCompiler.Compile(TaskSubmit);
const textEncoder = new TextEncoder();

/** `{{tasks.ID.output}}` (spaces inside the braces allowed): filled from a finished dependency. */
export const outputPlaceholderPattern = /\{\{\s*tasks\.([A-Za-z0-9_-]+)\.output\s*\}\}/g;

export function placeholderTaskIds(text: string): string[] {
  const ids: string[] = [];
  for (const match of text.matchAll(outputPlaceholderPattern)) ids.push(match[1] as string);
  return ids;
}

export function jsonBytes(value: unknown): number {
  return textEncoder.encode(JSON.stringify(value)).byteLength;
}

function fieldOf(path: string): string {
  let field = '';
  for (const part of path.split('/').slice(1)) {
    field += /^[0-9]+$/.test(part) ? `[${part}]` : (field === '' ? part : `.${part}`);
  }
  return field === '' ? 'body' : field;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

// What to say for a field whose value has the wrong type or range, by field path with
// array indexes as [] and metadata keys as *. Kept out of the schemas so that they stay
// plain JSON Schema (Ajv in strict mode refuses unknown keywords).
const fieldHints: Record<string, string> = {
  priority: `must be an integer from ${limits.taskPriorityMin} to ${limits.taskPriorityMax}`,
  timeoutMs: `must be an integer number of ms from ${limits.taskTimeoutMsMin} to ${limits.taskTimeoutMsMax}`,
  maxAttempts: `must be an integer from 1 to ${limits.taskMaxAttemptsMax}`,
  format: `must be "json" or a JSON schema object (at most ${limits.taskFormatSchemaBytesMax} bytes)`,
  'messages[].role': 'must be one of system, user, assistant, tool',
  'dependsOn[]': `must be a task id: 1 to ${limits.taskIdLengthMax} letters, digits, '_' or '-'`,
  'metadata.*': `values must be strings of at most ${limits.taskMetadataValueLengthMax} characters, numbers, booleans or null`,
};

function hintFor(field: string): string | undefined {
  const pattern = field.replace(/\[[0-9]+\]/g, '[]').replace(/^metadata\..*$/, 'metadata.*');
  return fieldHints[pattern];
}

function reasonOf(error: ValueError, field: string): string {
  const schema = error.schema as TSchema & { minLength?: number; maxLength?: number; maxItems?: number; minItems?: number; maxProperties?: number };
  switch (error.type) {
    case ValueErrorType.ObjectAdditionalProperties:
      return 'is not a known field';
    case ValueErrorType.StringMinLength:
      return schema.minLength === 1 ? 'must not be empty' : `must have at least ${schema.minLength} characters`;
    case ValueErrorType.StringMaxLength:
      return `must have at most ${schema.maxLength} characters (it has ${(error.value as string).length})`;
    case ValueErrorType.ArrayMinItems:
      return schema.minItems === 1 ? 'must not be empty' : `must have at least ${schema.minItems} items`;
    case ValueErrorType.ArrayMaxItems:
      return `must have at most ${schema.maxItems} items (it has ${(error.value as unknown[]).length})`;
    case ValueErrorType.ObjectMaxProperties:
      return `must have at most ${schema.maxProperties} keys`;
    default:
      break;
  }
  const hint = hintFor(field);
  if (hint !== undefined) return hint;
  switch (error.type) {
    case ValueErrorType.String: return `must be a string, not ${describe(error.value)}`;
    case ValueErrorType.Array: return `must be an array, not ${describe(error.value)}`;
    case ValueErrorType.Object: return `must be an object, not ${describe(error.value)}`;
    case ValueErrorType.Boolean: return `must be true or false, not ${describe(error.value)}`;
    default: return error.message.charAt(0).toLowerCase() + error.message.slice(1);
  }
}

/**
 * Checks a POST /api/tasks body. On success, the input with defaults filled in and
 * duplicate dependencies dropped; otherwise one reason per offending field (at most 20).
 */
/** The capability nodes give their embedding models (daemon/probe/agents.ts): not a task's. */
export const embeddingCapability = 'embed';

export function validateTaskSubmit(body: unknown): TaskSubmitValidation {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, errors: [{ field: 'body', reason: `must be a JSON object, not ${describe(body)}` }] };
  }
  const errors: FieldError[] = [];
  const seen = new Set<string>();
  const add = (field: string, reason: string): void => {
    if (seen.has(field) || errors.length >= fieldErrorsMax) return;
    seen.add(field);
    errors.push({ field, reason });
  };
  // The compiled check first: walking the errors is interpreted and costs several times more.
  if (!submitChecker.Check(body)) {
    for (const error of submitChecker.Errors(body)) {
      const field = fieldOf(error.path);
      add(field, reasonOf(error, field));
      if (errors.length >= fieldErrorsMax) break;
    }
  }
  const submit = body as Partial<TaskSubmit>;

  // What the schema cannot say: choices between fields, sizes in bytes, references.
  if (submit.model === undefined && submit.capability === undefined) add('model', 'either model or capability is required');
  // Nodes give `embed` to their embedding models, which cannot answer a prompt: such a task
  // would be accepted only to fail on Ollama's 400.
  if (submit.capability === embeddingCapability) {
    add('capability', `"${embeddingCapability}" is the capability of embedding models, which cannot answer prompts; send embeddings to /api/embed or /v1/embeddings on any node instead`);
  }
  if (submit.prompt === undefined && submit.messages === undefined) add('prompt', 'either prompt or messages is required');
  if (submit.prompt !== undefined && submit.messages !== undefined) add('messages', 'cannot be given together with prompt; send one of them');
  if (typeof submit.prompt === 'string' && submit.prompt.length > 0 && submit.prompt.trim() === '') add('prompt', 'must not be blank');
  if (!seen.has('messages') && Array.isArray(submit.messages) && errors.length === 0) {
    let total = 0;
    for (const message of submit.messages) total += message.content.length;
    if (total > limits.taskMessagesTotalLengthMax) add('messages', `contents must have at most ${limits.taskMessagesTotalLengthMax} characters together (they have ${total})`);
    else if (submit.messages.every((message) => message.content.trim() === '')) add('messages', 'must not be empty: every message content is blank');
  }
  if (!seen.has('options') && submit.options !== undefined && jsonBytes(submit.options) > limits.taskOptionsBytesMax) {
    add('options', `must be at most ${limits.taskOptionsBytesMax} bytes of JSON`);
  }
  if (!seen.has('format') && typeof submit.format === 'object' && jsonBytes(submit.format) > limits.taskFormatSchemaBytesMax) {
    add('format', `must be at most ${limits.taskFormatSchemaBytesMax} bytes of JSON`);
  }
  if (!seen.has('metadata') && typeof submit.metadata === 'object' && submit.metadata !== null) {
    for (const key of Object.keys(submit.metadata)) {
      if (key.length === 0 || key.length > limits.taskMetadataKeyLengthMax) {
        add('metadata', `keys must have 1 to ${limits.taskMetadataKeyLengthMax} characters`);
      }
    }
    if (!seen.has('metadata') && jsonBytes(submit.metadata) > limits.taskMetadataBytesMax) {
      add('metadata', `must be at most ${limits.taskMetadataBytesMax} bytes of JSON`);
    }
  }
  if (errors.length > 0) return { ok: false, errors };

  const dependsOn = [...new Set(submit.dependsOn ?? [])];
  const dependencies = new Set(dependsOn);
  const checkPlaceholders = (field: string, text: string | undefined): void => {
    if (text === undefined) return;
    const missing = placeholderTaskIds(text).filter((id) => !dependencies.has(id));
    if (missing.length > 0) {
      add(field, `refers to the output of ${[...new Set(missing)].join(', ')}, which must also be listed in dependsOn`);
    }
  };
  checkPlaceholders('prompt', submit.prompt);
  checkPlaceholders('system', submit.system);
  submit.messages?.forEach((message, index) => checkPlaceholders(`messages[${index}].content`, message.content));
  if (errors.length > 0) return { ok: false, errors };

  return {
    ok: true,
    input: {
      model: submit.model ?? null,
      capability: submit.capability ?? null,
      prompt: submit.prompt ?? null,
      messages: submit.messages ?? null,
      system: submit.system ?? null,
      options: submit.options ?? null,
      format: submit.format ?? null,
      title: submit.title ?? null,
      priority: submit.priority ?? limits.taskPriorityDefault,
      dependsOn,
      timeoutMs: submit.timeoutMs ?? limits.taskTimeoutMsDefault,
      maxAttempts: submit.maxAttempts ?? limits.taskMaxAttemptsDefault,
      idempotencyKey: submit.idempotencyKey ?? null,
      metadata: submit.metadata ?? {},
    },
  };
}

/** The HTTP error for a failed validation: 400 with the field list as details. */
export function validationError(errors: readonly FieldError[]): HivemeshError {
  const summary = errors.map((error) => `${error.field}: ${error.reason}`).join('; ');
  return new HivemeshError(ErrorCode.invalidInput, `invalid task: ${summary}`, { details: { fields: errors } });
}

/**
 * JSON with object keys sorted, so equal inputs have equal text whatever the key order
 * the client used: hash this for the idempotency body hash.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item === undefined ? null : item)).join(',')}]`;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).filter((key) => record[key] !== undefined).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
}

// ---------------------------------------------------------------------------------------
// Refusals: a replicated command that was well formed but is not allowed in the current
// state. Every node refuses it the same way; the proposing node turns it into an error.

export const RefusalCode = Type.Union([
  Type.Literal('not-found'), Type.Literal('task-exists'), Type.Literal('idempotency-conflict'),
  Type.Literal('unknown-dependency'), Type.Literal('dependency-cycle'), Type.Literal('dependency-failed'),
  Type.Literal('queue-full'), Type.Literal('stale-attempt'), Type.Literal('not-assignable'),
  Type.Literal('task-finished'), Type.Literal('invalid-transition'), Type.Literal('pinned-elsewhere'),
  Type.Literal('already-initialized'), Type.Literal('token-exists'), Type.Literal('tokens-full'),
  Type.Literal('token-revoked'), Type.Literal('kv-full'),
]);
export type RefusalCode = Static<typeof RefusalCode>;

export interface Refusal {
  code: RefusalCode;
  message: string;
  /** The offending ids (unknown dependencies, the cycle, the failed dependencies). */
  ids?: string[];
}

const refusalHttpCode: Record<RefusalCode, ErrorCode> = {
  'not-found': ErrorCode.notFound,
  'task-exists': ErrorCode.conflict,
  'idempotency-conflict': ErrorCode.conflict,
  'unknown-dependency': ErrorCode.invalidInput,
  'dependency-cycle': ErrorCode.invalidInput,
  'dependency-failed': ErrorCode.conflict,
  'queue-full': ErrorCode.rateLimited,
  'stale-attempt': ErrorCode.conflict,
  'not-assignable': ErrorCode.conflict,
  'task-finished': ErrorCode.conflict,
  'invalid-transition': ErrorCode.conflict,
  'pinned-elsewhere': ErrorCode.conflict,
  'already-initialized': ErrorCode.conflict,
  'token-exists': ErrorCode.conflict,
  'tokens-full': ErrorCode.conflict,
  'token-revoked': ErrorCode.conflict,
  'kv-full': ErrorCode.conflict,
};

/** Seconds a client should wait after 'queue-full' before it submits again. */
export const queueFullRetryAfterSeconds = 5;

export function refusalToError(refusal: Refusal): HivemeshError {
  const code = refusalHttpCode[refusal.code];
  return new HivemeshError(code, refusal.message, {
    details: { refusal: refusal.code, ...(refusal.ids === undefined ? {} : { ids: refusal.ids }) },
    ...(code === ErrorCode.rateLimited ? { retryAfterSeconds: queueFullRetryAfterSeconds } : {}),
  });
}
