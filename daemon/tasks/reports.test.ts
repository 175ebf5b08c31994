// Executor reports: retried through outages while they matter, given up when they no
// longer do, not retried when the error says a retry cannot help, and completions too big
// for one log entry once JSON-escaped are cut rather than lost.
import { describe, expect, it } from 'vitest';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import { raftProposalBytesMax } from '../../protocol/limits.ts';
import { decodeCommand } from '../../scheduler/state/commands.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import { encodeReport, isRetryableProposeError, Reporter } from './reports.ts';

const usage = { promptTokens: 1, completionTokens: 1, tokensPerSecond: 1, loadMs: 0, totalMs: 1 };
const fail = { type: 'task.fail' as const, id: 't1', attempt: 1, error: 'boom', retryable: true, at: 1 };
const committed = { ok: true, index: 7, task: null, created: false, events: [], prunedTaskIds: [] } as ApplyResult;

describe('Reporter', () => {
  it('retries through a missing leader until the report commits', async () => {
    let calls = 0;
    const reporter = new Reporter({
      retryDelayMs: () => 1,
      propose: async () => {
        calls += 1;
        if (calls < 3) throw new HivemeshError(ErrorCode.noLeader, 'no leader is known');
        return committed;
      },
    });
    expect(await reporter.report(fail, () => true)).toBe(committed);
    expect(calls).toBe(3);
    expect(reporter.pending).toBe(0);
  });

  it('gives up once the report no longer matters, and at once on an error no retry can fix', async () => {
    let relevant = true;
    let calls = 0;
    const reporter = new Reporter({
      retryDelayMs: () => 1,
      propose: async () => {
        calls += 1;
        relevant = calls < 2;
        throw new HivemeshError(ErrorCode.noQuorum, 'no quorum');
      },
    });
    expect(await reporter.report(fail, () => relevant)).toBeNull();
    expect(calls).toBe(2);
    const refusing = new Reporter({ propose: async () => { throw new HivemeshError(ErrorCode.payloadTooLarge, 'too large'); } });
    expect(await refusing.report(fail, () => true)).toBeNull();
    expect(isRetryableProposeError(new HivemeshError(ErrorCode.invalidInput, 'bad'))).toBe(false);
    expect(isRetryableProposeError(new Error('stream reset'))).toBe(true);
  });

  it('stops retrying when stopped', async () => {
    const reporter = new Reporter({ retryDelayMs: () => 60_000, propose: async () => { throw new HivemeshError(ErrorCode.noLeader, 'none'); } });
    const pending = reporter.report(fail, () => true);
    await new Promise((resolve) => setTimeout(resolve, 10));
    reporter.stop();
    expect(await pending).toBeNull();
  });
});

describe('encodeReport', () => {
  it('cuts a completion whose escaped output would exceed the proposal bound, and marks it truncated', () => {
    // Control characters become six bytes each in JSON: 256 Ki of them is 1.5 MiB escaped.
    const output = '\u0001'.repeat(256 * 1024);
    const data = encodeReport({ type: 'task.complete', id: 't1', attempt: 1, output, usage, at: 1 });
    expect(new TextEncoder().encode(data).byteLength).toBeLessThanOrEqual(raftProposalBytesMax);
    const command = decodeCommand(data);
    expect(command.type).toBe('task.complete');
    if (command.type !== 'task.complete') return;
    expect(command.outputTruncated).toBe(true);
    expect(command.output.length).toBeGreaterThan(64 * 1024);
    expect(command.output.length).toBeLessThan(output.length);
  });
});
