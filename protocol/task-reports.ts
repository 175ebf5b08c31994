// Writes relayed to the leader in batches: a node that is not the leader sends its
// executor's reports (task.start, task.complete, task.fail) and its clients' writes to the
// leader several at a time, as one message on the long-lived per-peer channel, instead of
// one stream per write (a stream costs a protocol negotiation and several frames each
// way). The leader proposes them (Raft commits them in one batch anyway) and sends back
// one message with a result per command, in order, tagged with the batch's number.
// Commands stay the replicated log's own JSON text; the leader's state machine decodes and
// checks them like any other proposal.
import { Type, type Static } from '@sinclair/typebox';
import { jsonCodec } from './codec.ts';
import * as limits from './limits.ts';
import { PROTOCOL_VERSION } from './version.ts';

/** Batches, follower to leader. */
export const TASK_REPORTS_PROTOCOL = `/hivemesh/task-reports/${PROTOCOL_VERSION}.1.0`;
/** Results, leader to follower. */
export const TASK_REPORT_RESULTS_PROTOCOL = `/hivemesh/task-report-results/${PROTOCOL_VERSION}.1.0`;

/** Commands per batch. */
export const reportsPerBatchMax = 256;
/** Bytes of one batch request (a completion carries up to taskOutputBytesMax of output). */
export const reportBatchBytesMax = 8 * 1024 * 1024;

export const TaskReportBatch = Type.Object({
  kind: Type.Literal('task-reports'),
  /** The sender's number for this batch, echoed in the results. */
  batch: Type.Integer({ minimum: 0 }),
  commands: Type.Array(Type.String({ minLength: 1, maxLength: limits.raftProposalBytesMax }), { minItems: 1, maxItems: reportsPerBatchMax }),
  /** Positions whose result must carry the task view (a client write shows it); the others get it stripped. */
  full: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: reportsPerBatchMax - 1 }), { maxItems: reportsPerBatchMax })),
}, { additionalProperties: false });
export type TaskReportBatch = Static<typeof TaskReportBatch>;

export const TaskReportResult = Type.Union([
  /** Committed: `result` is the state machine's ApplyResult (a refusal is a result too). */
  Type.Object({ ok: Type.Literal(true), result: Type.Unknown() }, { additionalProperties: false }),
  /** Not committed: an error code of protocol/errors.ts, or 'not_leader'. */
  Type.Object({
    ok: Type.Literal(false),
    code: Type.String({ maxLength: 64 }),
    message: Type.String({ maxLength: 4096 }),
  }, { additionalProperties: false }),
]);
export type TaskReportResult = Static<typeof TaskReportResult>;

export const TaskReportResults = Type.Object({
  kind: Type.Literal('task-report-results'),
  batch: Type.Integer({ minimum: 0 }),
  results: Type.Array(TaskReportResult, { maxItems: reportsPerBatchMax }),
}, { additionalProperties: false });
export type TaskReportResults = Static<typeof TaskReportResults>;

export const taskReportBatchCodec = jsonCodec('task report batch', TaskReportBatch, reportBatchBytesMax);
/** Results are small: apply results carry the task view, output included, so allow as much as a batch. */
export const taskReportResultsCodec = jsonCodec('task report results', TaskReportResults, reportBatchBytesMax * 2);
