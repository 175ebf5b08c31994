// Batches this node's executor reports to the leader (protocol/task-reports.ts). Thousands
// of short tasks a second mean thousands of reports; forwarding each on its own stream
// would compete with client writes for the leader's inbound stream slots. Here reports
// made within the same turn of the event loop travel together, a few batches in flight at
// once. On the leader, or with no leader known, reports go straight to `propose`; a batch
// that cannot be delivered falls back to proposing each report on its own.
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import {
  TASK_REPORTS_PROTOCOL, reportBatchBytesMax, reportsPerBatchMax, taskReportBatchCodec, taskReportResultsCodec,
  type TaskReportResult,
} from '../../protocol/task-reports.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import { NotLeaderError } from '../consensus/raft-node.ts';
import { logger } from '../log.ts';
import type { P2PHost } from '../p2p/host.ts';

const log = logger('tasks:relay');

export interface ReportRelayDeps {
  nodeId: string;
  host: Pick<P2PHost, 'handle' | 'request'>;
  /** The cluster's propose: local on the leader, forwarded elsewhere. */
  propose: (data: string) => Promise<ApplyResult | null>;
  leader: () => string | null;
  /** Whether this node leads now (it then serves batches). */
  isLeader: () => boolean;
  /** Batches on the wire at once. */
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

/**
 * An apply result without the task view: the reporter reads only whether the report was
 * taken or refused, and the view (output included) would double what travels back.
 */
function slim(result: ApplyResult | null): ApplyResult | null {
  if (result === null || !result.ok) return result;
  return { ...result, task: null, events: [], prunedTaskIds: [] };
}

export class ReportRelay {
  private readonly deps: ReportRelayDeps;
  private readonly queue: Pending[] = [];
  private inFlight = 0;
  private flushScheduled = false;
  readonly stats: RelayStats = { batches: 0, batchedReports: 0, direct: 0, fallbacks: 0 };

  constructor(deps: ReportRelayDeps) {
    this.deps = deps;
  }

  async start(): Promise<void> {
    await this.deps.host.handle(TASK_REPORTS_PROTOCOL, async (from, bytes, reply) => {
      let batch;
      try {
        batch = taskReportBatchCodec.decode(bytes);
      } catch (error) {
        log.debug('refused a malformed report batch', { from, error: error as Error });
        throw error;
      }
      let results: TaskReportResult[];
      if (!this.deps.isLeader()) {
        results = batch.commands.map(() => ({ ok: false, code: 'not_leader', message: `node ${this.deps.nodeId} is not the leader` }));
      } else {
        const full = new Set(batch.full ?? []);
        results = await Promise.all(batch.commands.map((data, position) => this.deps.propose(data).then(
          (result): TaskReportResult => ({ ok: true, result: full.has(position) ? result : slim(result) }),
          errorToResult,
        )));
      }
      await reply.send(taskReportResultsCodec.encode({ kind: 'task-report-results', results }));
    });
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

  private async send(batch: Pending[]): Promise<void> {
    const leader = this.deps.leader();
    let results: TaskReportResult[] | null = null;
    if (leader !== null && leader !== this.deps.nodeId) {
      try {
        const full = batch.flatMap((item, position) => (item.full ? [position] : []));
        const request = taskReportBatchCodec.encode({ kind: 'task-reports', commands: batch.map((item) => item.data), ...(full.length === 0 ? {} : { full }) });
        for await (const frame of this.deps.host.request(leader, TASK_REPORTS_PROTOCOL, request, { timeoutMs: this.deps.requestTimeoutMs ?? 10_000 })) {
          results = taskReportResultsCodec.decode(frame).results;
          break;
        }
        this.stats.batches += 1;
        this.stats.batchedReports += batch.length;
      } catch (error) {
        log.debug('a report batch did not reach the leader; proposing one by one', { leader, size: batch.length, error: error as Error });
      }
    }
    for (const [position, item] of batch.entries()) {
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
