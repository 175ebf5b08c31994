// Batches this node's writes to the leader (protocol/task-reports.ts): executor reports
// and client writes. Thousands of short tasks a second mean thousands of them; forwarding
// each on a stream of its own would cost a protocol negotiation and several frames each
// way. Here writes made within the same turn of the event loop travel together, as one
// message on the long-lived channel to the leader, a few batches in flight at once, and
// the leader answers each batch with one message on the channel back. On the leader, or
// with no leader known, writes go straight to `propose`; a batch that cannot be delivered
// (the leader went away, no answer in time) falls back to proposing each write on its
// own through the cluster's forwarding. A write proposed twice that way is harmless:
// reports are fenced by attempt, a submit carries its task id, a cancel is idempotent.
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import {
  TASK_REPORTS_PROTOCOL, TASK_REPORT_RESULTS_PROTOCOL, reportBatchBytesMax, reportsPerBatchMax, taskReportBatchCodec, taskReportResultsCodec,
  type TaskReportResult,
} from '../../protocol/task-reports.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import * as limits from '../../protocol/limits.ts';
import { NotLeaderError } from '../consensus/raft-node.ts';
import { logger } from '../log.ts';
import type { P2PHost } from '../p2p/host.ts';

const log = logger('tasks:relay');

export interface ReportRelayDeps {
  nodeId: string;
  host: Pick<P2PHost, 'handleMessages' | 'send' | 'on' | 'isConnected'>;
  /** The cluster's propose: local on the leader, forwarded elsewhere. */
  propose: (data: string) => Promise<ApplyResult | null>;
  leader: () => string | null;
  /** Whether this node leads now (it then serves batches). */
  isLeader: () => boolean;
  /** Batches on the wire at once (each waits for its answer). */
  batchesInFlightMax?: number;
  /** Reports waiting for a batch; beyond, they are proposed one by one. */
  queueMax?: number;
  requestTimeoutMs?: number;
}

interface Pending {
  data: string;
  full: boolean;
  resolve: (result: ApplyResult | null) => void;
  reject: (error: Error) => void;
}

/** A batch sent and not yet answered. */
interface InFlight {
  leader: string;
  items: Pending[];
  timer: NodeJS.Timeout;
  /** Frees the batch's place among those in flight. */
  done: () => void;
}

export interface RelayStats {
  batches: number;
  batchedReports: number;
  direct: number;
  fallbacks: number;
}

function errorToResult(error: unknown): TaskReportResult {
  if (error instanceof NotLeaderError) return { ok: false, code: 'not_leader', message: error.message.slice(0, 4096) };
  if (error instanceof HivemeshError) return { ok: false, code: error.code, message: error.message.slice(0, 4096) };
  return { ok: false, code: ErrorCode.internal, message: String((error as Error)?.message ?? error).slice(0, 4096) };
}

/** A message decoded, or null (logged) when a peer sent something malformed. */
function decodeOrDrop<T>(decode: () => T, from: string, what: string): T | null {
  try {
    return decode();
  } catch (error) {
    log.debug(`refused malformed ${what}`, { from, error: error as Error });
    return null;
  }
}

/**
 * An apply result without the task view: the reporter reads only whether the report was
 * taken or refused, and the view (output included) would double what travels back.
 */
function slim(result: ApplyResult | null): ApplyResult | null {
  if (result === null || !result.ok) return result;
  return { ...result, task: null, events: [], prunedTaskIds: [] };
}

/**
 * A leader answers a batch within its proposal timeout (5 s: committed, or refused); past
 * a little more, the batch or its answer was lost with a connection and the writes go the
 * cluster's way (a write proposed twice is harmless, see above).
 */
const relayAnswerTimeoutMsDefault = 6_000;

/** Past this, an answer goes without task views (below the p2p frame bound, with room). */
const resultsBytesMax = limits.p2pFrameBytesMax / 2;

export class ReportRelay {
  private readonly deps: ReportRelayDeps;
  private readonly queue: Pending[] = [];
  private inFlight = 0;
  private flushScheduled = false;
  private nextBatch = 0;
  private readonly inFlightBatches = new Map<number, InFlight>();
  private unsubscribe: (() => void) | null = null;
  readonly stats: RelayStats = { batches: 0, batchedReports: 0, direct: 0, fallbacks: 0 };

  constructor(deps: ReportRelayDeps) {
    this.deps = deps;
  }

  async start(): Promise<void> {
    // As the leader: batches in, one answer each. Not awaited per batch: the channel
    // delivers in order, and a batch must not wait for the previous one's commit.
    await this.deps.host.handleMessages(TASK_REPORTS_PROTOCOL, (from, bytes) => {
      const batch = decodeOrDrop(() => taskReportBatchCodec.decode(bytes), from, 'report batch');
      if (batch === null) return;
      void this.serve(from, batch.batch, batch.commands, new Set(batch.full ?? []));
    });
    // As a sender: the leader's answers.
    await this.deps.host.handleMessages(TASK_REPORT_RESULTS_PROTOCOL, (from, bytes) => {
      const answer = decodeOrDrop(() => taskReportResultsCodec.decode(bytes), from, 'report results');
      if (answer === null) return;
      const entry = this.inFlightBatches.get(answer.batch);
      if (entry === undefined || entry.leader !== from) return;
      this.settle(answer.batch, answer.results);
    });
    // A leader that went away answers nothing: fall back at once rather than at the timeout.
    this.unsubscribe = this.deps.host.on('peer:disconnected', ({ peerId }) => {
      for (const [batch, entry] of this.inFlightBatches) if (entry.leader === peerId) this.settle(batch, null);
    });
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    for (const batch of [...this.inFlightBatches.keys()]) this.settle(batch, null);
  }

  private async serve(from: string, batch: number, commands: string[], full: Set<number>): Promise<void> {
    let results: TaskReportResult[];
    if (!this.deps.isLeader()) {
      results = commands.map(() => ({ ok: false, code: 'not_leader', message: `node ${this.deps.nodeId} is not the leader` }));
    } else {
      results = await Promise.all(commands.map((data, position) => this.deps.propose(data).then(
        (result): TaskReportResult => ({ ok: true, result: full.has(position) ? result : slim(result) }),
        errorToResult,
      )));
    }
    try {
      let answer: Uint8Array | null = null;
      try {
        answer = taskReportResultsCodec.encode({ kind: 'task-report-results', batch, results });
      } catch {
        answer = null;
      }
      // Task views (outputs included) can add up past one message: then none travel, and
      // the sender reads the tasks from its own state once it has applied the writes.
      if (answer === null || answer.byteLength > resultsBytesMax) {
        const slimmed = results.map((entry): TaskReportResult => (entry.ok ? { ok: true, result: slim(entry.result as ApplyResult | null) } : entry));
        answer = taskReportResultsCodec.encode({ kind: 'task-report-results', batch, results: slimmed });
      }
      this.deps.host.send(from, TASK_REPORT_RESULTS_PROTOCOL, answer);
    } catch (error) {
      // The sender falls back to proposing one by one when no answer comes.
      log.debug('could not answer a report batch', { to: from, error: error as Error });
    }
  }

  /**
   * Proposes one command, batched with others when this node is not the leader. Results
   * come back without the task view unless `fullResult` (any command may travel this way;
   * a client write that answers with the task needs the view).
   */
  propose(data: string, options: { fullResult?: boolean } = {}): Promise<ApplyResult | null> {
    const leader = this.deps.leader();
    if (leader === null || leader === this.deps.nodeId || this.queue.length >= (this.deps.queueMax ?? 4_096)) {
      this.stats.direct += 1;
      return this.deps.propose(data);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ data, full: options.fullResult === true, resolve, reject });
      this.scheduleFlush();
    });
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Reports of one turn of the event loop (one applied batch, one burst of completions) go together.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.queue.length > 0 && this.inFlight < (this.deps.batchesInFlightMax ?? 4)) {
      const batch: Pending[] = [];
      let bytes = 64;
      while (batch.length < reportsPerBatchMax && this.queue.length > 0) {
        const next = this.queue[0]!;
        // JSON-escaping may double a command's size inside the batch; count it that way.
        const size = next.data.length * 2 + 8;
        if (batch.length > 0 && bytes + size > reportBatchBytesMax) break;
        batch.push(this.queue.shift()!);
        bytes += size;
      }
      this.inFlight += 1;
      void this.send(batch).finally(() => {
        this.inFlight -= 1;
        if (this.queue.length > 0) this.scheduleFlush();
      });
    }
  }

  private send(items: Pending[]): Promise<void> {
    const leader = this.deps.leader();
    // Not connected to the leader (it died, and no election has told us yet): a message
    // would be dropped unanswered, so go the cluster's way at once instead of waiting.
    if (leader === null || leader === this.deps.nodeId || !this.deps.host.isConnected(leader)) {
      this.resolveItems(items, null);
      return Promise.resolve();
    }
    const batch = this.nextBatch;
    this.nextBatch = (this.nextBatch + 1) % Number.MAX_SAFE_INTEGER;
    return new Promise<void>((done) => {
      const timer = setTimeout(() => {
        log.debug('no answer to a report batch in time; proposing one by one', { leader, size: items.length });
        this.settle(batch, null);
      }, this.deps.requestTimeoutMs ?? relayAnswerTimeoutMsDefault);
      this.inFlightBatches.set(batch, { leader, items, timer, done });
      try {
        const full = items.flatMap((item, position) => (item.full ? [position] : []));
        const request = taskReportBatchCodec.encode({ kind: 'task-reports', batch, commands: items.map((item) => item.data), ...(full.length === 0 ? {} : { full }) });
        this.deps.host.send(leader, TASK_REPORTS_PROTOCOL, request);
      } catch (error) {
        log.debug('a report batch could not be sent; proposing one by one', { leader, size: items.length, error: error as Error });
        this.settle(batch, null);
      }
    });
  }

  /** Ends a batch in flight with its results, or with null (not delivered: fall back). */
  /**
   * The known leader changed (or is unknown now): batches sent to another node fall back
   * at once instead of at their answer timeout. A cut-off leader's connection stays open
   * for a while, so the disconnect that also triggers this comes late or never.
   */
  leaderChanged(): void {
    const leader = this.deps.leader();
    for (const [batch, entry] of [...this.inFlightBatches]) if (entry.leader !== leader) this.settle(batch, null);
  }

  private settle(batch: number, results: TaskReportResult[] | null): void {
    const entry = this.inFlightBatches.get(batch);
    if (entry === undefined) return;
    this.inFlightBatches.delete(batch);
    clearTimeout(entry.timer);
    if (results !== null) {
      this.stats.batches += 1;
      this.stats.batchedReports += entry.items.length;
    }
    this.resolveItems(entry.items, results);
    entry.done();
  }

  private resolveItems(items: Pending[], results: TaskReportResult[] | null): void {
    for (const [position, item] of items.entries()) {
      const result = results?.[position];
      if (result === undefined || (!result.ok && result.code === 'not_leader')) {
        // Not delivered, or the leader changed: the cluster's own forwarding finds the new one.
        this.stats.fallbacks += 1;
        this.deps.propose(item.data).then(item.resolve, item.reject);
      } else if (result.ok) {
        item.resolve(result.result as ApplyResult | null);
      } else {
        item.reject(new HivemeshError(result.code as ErrorCode, result.message, { retryAfterSeconds: 1 }));
      }
    }
  }
}
