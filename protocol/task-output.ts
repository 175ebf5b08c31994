// The task output stream between nodes: a watcher on any node asks the node running an
// attempt for its output (one streamed request), and gets the chunks generated so far,
// then new ones as they come, then the end. Chunks are TaskOutputEvents, numbered from 0
// per attempt, so a watcher that reconnects can ask from where it stopped.
import { Type, type Static } from '@sinclair/typebox';
import { jsonCodec } from './codec.ts';
import { TaskId, TaskOutputEvent } from './tasks.ts';
import { PROTOCOL_VERSION } from './version.ts';

export const TASK_OUTPUT_PROTOCOL = `/hivemesh/task-output/${PROTOCOL_VERSION}.0.0`;

/** Output events one response frame may carry (a watcher catching up gets them in batches). */
export const outputEventsPerFrameMax = 256;
/** One response frame: outputEventsPerFrameMax chunks of up to 16 Ki characters would not fit, so frames are also cut by size. */
export const outputFrameBytesMax = 512 * 1024;
export const outputRequestBytesMax = 4 * 1024;

export const TaskOutputRequest = Type.Object({
  kind: Type.Literal('task-output'),
  taskId: TaskId,
  attempt: Type.Integer({ minimum: 1 }),
  /** First sequence number wanted: 0 for everything, or one past the last chunk seen. */
  fromSequence: Type.Integer({ minimum: 0 }),
}, { additionalProperties: false });
export type TaskOutputRequest = Static<typeof TaskOutputRequest>;

export const TaskOutputFrame = Type.Union([
  Type.Object({
    kind: Type.Literal('events'),
    events: Type.Array(TaskOutputEvent, { minItems: 1, maxItems: outputEventsPerFrameMax }),
  }, { additionalProperties: false }),
  Type.Object({
    /** The stream ends: the attempt finished (or the node gave up on it); reason is for logs. */
    kind: Type.Literal('end'),
    reason: Type.String({ maxLength: 1024 }),
    /** Chunks before this sequence number were dropped from the node's bounded buffer. */
    droppedBefore: Type.Integer({ minimum: 0 }),
  }, { additionalProperties: false }),
]);
export type TaskOutputFrame = Static<typeof TaskOutputFrame>;

export const taskOutputRequestCodec = jsonCodec('task output request', TaskOutputRequest, outputRequestBytesMax);
export const taskOutputFrameCodec = jsonCodec('task output frame', TaskOutputFrame, outputFrameBytesMax);
