// Reports of an executing node to the replicated log (task.start, task.complete,
// task.fail), retried through leader changes and short outages while they still matter.
// Retrying is safe because every report is fenced by its attempt number: a second copy of
// a report that already committed is refused as stale or finished, never applied twice.
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import { encodeCommand, MalformedCommandError, type Command } from '../../scheduler/state/commands.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import { logger } from '../log.ts';

const log = logger('tasks:reports');

export interface ReporterDeps {
  propose: (data: string) => Promise<ApplyResult | null>;
  /** Delay before retry n (0-based); tests shorten it. */
  retryDelayMs?: (retry: number) => number;
  /** A report is given up after this long (the leader's own timeouts take over then). */
  giveUpAfterMs?: number;
}

const retryableCodes = new Set<string>([ErrorCode.noLeader, ErrorCode.noQuorum, ErrorCode.unavailable, ErrorCode.rateLimited, ErrorCode.internal]);

/** Whether a failed proposal may succeed later: no leader, no quorum, a broken stream. */
export function isRetryableProposeError(error: unknown): boolean {
  if (error instanceof MalformedCommandError) return false;
  if (error instanceof HivemeshError) return retryableCodes.has(error.code);
  // Network errors of the forwarding path (PeerUnreachable, RequestTimeout, RequestFailed...).
  return true;
}

/**
 * The log entry of a report. A completion (or a cancelled attempt's partial output) whose output is within taskOutputBytesMax can
 * still exceed the proposal bound once JSON escapes it (control characters become \uXXXX);
 * its output is then cut further, and marked truncated, rather than the report lost.
 */
export function encodeReport(command: Command): string {
  let current = command;
  for (let tries = 0; ; tries += 1) {
    try {
      return encodeCommand(current);
    } catch (error) {
      if (!(error instanceof MalformedCommandError) || (current.type !== 'task.complete' && current.type !== 'task.output') || current.output.length <= 1 || tries >= 16) throw error;
      current = { ...current, output: current.output.slice(0, Math.floor(current.output.length / 2)), outputTruncated: true };
    }
  }
}

export class Reporter {
  private readonly deps: ReporterDeps;
  private stopped = false;
  private readonly stopController = new AbortController();
  private pendingCount = 0;

  constructor(deps: ReporterDeps) {
    this.deps = deps;
  }

  get pending(): number {
    return this.pendingCount;
  }

  stop(): void {
    this.stopped = true;
    this.stopController.abort();
  }

  /**
   * Proposes `command` until it commits (resolving with the apply result, which may be a
   * refusal), or resolves null once it no longer matters (`relevant` says so), the node is
   * stopping, or giveUpAfterMs passed. Never rejects.
   */
  async report(command: Command, relevant: () => boolean): Promise<ApplyResult | null> {
    let data: string;
    try {
      data = encodeReport(command);
    } catch (error) {
      log.error('an executor report is invalid; this is a bug', { type: command.type, error: error as Error });
      return null;
    }
    const giveUpAt = Date.now() + (this.deps.giveUpAfterMs ?? 120_000);
    this.pendingCount += 1;
    try {
      for (let retry = 0; ; retry += 1) {
        try {
          return await this.deps.propose(data);
        } catch (error) {
          if (!isRetryableProposeError(error)) {
            log.warn('an executor report was refused', { type: command.type, error: error as Error });
            return null;
          }
          if (this.stopped || !relevant() || Date.now() >= giveUpAt) {
            log.debug('gave up an executor report', { type: command.type, error: error as Error });
            return null;
          }
          const delayMs = this.deps.retryDelayMs?.(retry) ?? Math.min(1_000, 50 * 2 ** retry);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(finish, delayMs);
            const signal = this.stopController.signal;
            function finish() {
              clearTimeout(timer);
              signal.removeEventListener('abort', finish);
              resolve();
            }
            signal.addEventListener('abort', finish, { once: true });
          });
        }
      }
    } finally {
      this.pendingCount -= 1;
    }
  }
}
