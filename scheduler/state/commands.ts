// The commands of the replicated state machine: what a node proposes to the Raft log and
// every node applies, in order, with ReplicatedState.apply. Commands are JSON with a
// `type`; times (`at`) are the proposer's wall clock, so applying them reads no clock.
// A command that does not match its schema is a bug in the proposer: decodeCommand throws.
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { describeSchemaErrors } from '../../protocol/codec.ts';
import * as limits from '../../protocol/limits.ts';
import { TaskId, TaskInput, Usage } from '../../protocol/tasks.ts';
import { Role, TokenHash, TokenId } from '../../protocol/tokens.ts';

const At = Type.Integer({ minimum: 0 });
const NodeName = Type.String({ minLength: 1, maxLength: 128 });
const AttemptNumber = Type.Integer({ minimum: 1, maximum: limits.taskMaxAttemptsMax });
// Errors and reasons longer than the bound are cut on apply rather than refused: a node
// reporting a long stack trace must not be unable to fail its attempt.
const Reason = Type.String({ maxLength: 64 * 1024 });

export const ClusterInit = Type.Object({
  type: Type.Literal('cluster.init'),
  clusterId: Type.String({ minLength: 1, maxLength: limits.clusterIdLengthMax }),
  at: At,
}, { additionalProperties: false });

export const KvPut = Type.Object({
  type: Type.Literal('kv.put'),
  key: Type.String({ minLength: 1, maxLength: limits.kvKeyLengthMax }),
  value: Type.String({ maxLength: limits.kvValueLengthMax }),
}, { additionalProperties: false });

export const KvDelete = Type.Object({
  type: Type.Literal('kv.delete'),
  key: Type.String({ minLength: 1, maxLength: limits.kvKeyLengthMax }),
}, { additionalProperties: false });

export const TokenCreateCommand = Type.Object({
  type: Type.Literal('token.create'),
  id: TokenId,
  name: Type.String({ minLength: 1, maxLength: limits.tokenNameLengthMax }),
  role: Role,
  hash: TokenHash,
  at: At,
}, { additionalProperties: false });

export const TokenRevoke = Type.Object({
  type: Type.Literal('token.revoke'),
  id: TokenId,
  at: At,
}, { additionalProperties: false });

export const TaskSubmitCommand = Type.Object({
  type: Type.Literal('task.submit'),
  id: TaskId,
  input: TaskInput,
  at: At,
  /** Usually input.idempotencyKey; the state indexes this one. Absent means none. */
  idempotencyKey: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: limits.idempotencyKeyLengthMax }), Type.Null()])),
  /** Hash of canonicalJson(input): the same key with another body is a conflict. */
  bodyHash: Type.String({ minLength: 1, maxLength: 128 }),
}, { additionalProperties: false });

export const TaskAssign = Type.Object({
  type: Type.Literal('task.assign'),
  id: TaskId,
  node: NodeName,
  attempt: AttemptNumber,
  term: Type.Integer({ minimum: 0 }),
  /** The model to run: the task's own (when absent or null), or the chosen agent's for a capability task. */
  model: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: limits.modelNameLengthMax }), Type.Null()])),
  agentId: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()])),
  at: At,
}, { additionalProperties: false });

export const TaskStart = Type.Object({
  type: Type.Literal('task.start'),
  id: TaskId,
  attempt: AttemptNumber,
  node: NodeName,
  at: At,
}, { additionalProperties: false });

export const TaskComplete = Type.Object({
  type: Type.Literal('task.complete'),
  id: TaskId,
  attempt: AttemptNumber,
  /** Cut to taskOutputBytesMax on apply; the proposer may cut it first (outputTruncated). */
  output: Type.String(),
  outputTruncated: Type.Optional(Type.Boolean()),
  usage: Usage,
  at: At,
}, { additionalProperties: false });

export const TaskFail = Type.Object({
  type: Type.Literal('task.fail'),
  id: TaskId,
  attempt: AttemptNumber,
  error: Reason,
  /** False for errors another try cannot fix (unknown model, invalid options). */
  retryable: Type.Boolean(),
  at: At,
}, { additionalProperties: false });

export const TaskCancel = Type.Object({
  type: Type.Literal('task.cancel'),
  id: TaskId,
  at: At,
  reason: Type.Optional(Reason),
}, { additionalProperties: false });

/**
 * The text an attempt had generated when its task was cancelled, or when it failed for good
 * (a timeout): the executing node reports it after the end, and it becomes the task's
 * output (once).
 */
export const TaskPartialOutput = Type.Object({
  type: Type.Literal('task.output'),
  id: TaskId,
  attempt: AttemptNumber,
  /** Cut to taskOutputBytesMax on apply, as a completion's. */
  output: Type.String({ minLength: 1 }),
  outputTruncated: Type.Optional(Type.Boolean()),
  at: At,
}, { additionalProperties: false });

export const TaskPinCommand = Type.Object({
  type: Type.Literal('task.pin'),
  id: TaskId,
  node: NodeName,
}, { additionalProperties: false });

export const TaskRequeue = Type.Object({
  type: Type.Literal('task.requeue'),
  id: TaskId,
  attempt: AttemptNumber,
  /** For people: "node n3 is dead", "attempt timed out after 600000 ms". */
  reason: Reason,
  at: At,
}, { additionalProperties: false });

export const TasksPrune = Type.Object({
  type: Type.Literal('tasks.prune'),
  at: At,
  keepFinishedMax: Type.Integer({ minimum: 0 }),
  keepFinishedMs: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });

export const Command = Type.Union([
  ClusterInit, KvPut, KvDelete, TokenCreateCommand, TokenRevoke,
  TaskSubmitCommand, TaskAssign, TaskStart, TaskComplete, TaskFail, TaskCancel, TaskPartialOutput, TaskPinCommand, TaskRequeue, TasksPrune,
]);
export type Command = Static<typeof Command>;
export type CommandType = Command['type'];
export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

const commandSchemas = {
  'cluster.init': ClusterInit, 'kv.put': KvPut, 'kv.delete': KvDelete,
  'token.create': TokenCreateCommand, 'token.revoke': TokenRevoke,
  'task.submit': TaskSubmitCommand, 'task.assign': TaskAssign, 'task.start': TaskStart,
  'task.complete': TaskComplete, 'task.fail': TaskFail, 'task.cancel': TaskCancel,
  'task.output': TaskPartialOutput, 'task.pin': TaskPinCommand, 'task.requeue': TaskRequeue, 'tasks.prune': TasksPrune,
} as const;
// One compiled checker per type, so an error names the fields of that type rather than
// the mismatch against every member of the union.
const checkers = Object.fromEntries(Object.entries(commandSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]));

const textEncoder = new TextEncoder();

/** The error a malformed command raises: the proposer has a bug. */
export class MalformedCommandError extends Error {
  override name = 'MalformedCommandError';
}

/** Why `value` is not a valid command, or null. */
export function checkCommand(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return 'a command must be a JSON object';
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string' || !Object.hasOwn(checkers, type)) return `unknown command type ${JSON.stringify(type)}`;
  const checker = checkers[type]!;
  return checker.Check(value) ? null : `${type}: ${describeSchemaErrors(checker.Errors(value))}`;
}

/** The log entry text of a command. Throws MalformedCommandError on an invalid one. */
export function encodeCommand(command: Command): string {
  const reason = checkCommand(command);
  if (reason !== null) throw new MalformedCommandError(`refusing to propose an invalid command: ${reason}`);
  const data = JSON.stringify(command);
  const bytes = textEncoder.encode(data).byteLength;
  if (bytes > limits.raftProposalBytesMax) {
    throw new MalformedCommandError(`${command.type} is ${bytes} bytes, over the ${limits.raftProposalBytesMax}-byte proposal limit`);
  }
  return data;
}

export function decodeCommand(data: string): Command {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch (error) {
    throw new MalformedCommandError(`a log entry is not JSON: ${(error as Error).message}`);
  }
  const reason = checkCommand(value);
  if (reason !== null) throw new MalformedCommandError(`a log entry is not a valid command: ${reason}`);
  return value as Command;
}
