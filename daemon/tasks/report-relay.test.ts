// The report relay: reports of one turn travel to the leader as one batch and come back
// with one result each, in order; a leader that no longer leads, or a batch that cannot be
// delivered, falls back to proposing each report on its own; errors keep their codes.
import { describe, expect, it } from 'vitest';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import type { MessageHandler, P2PHost } from '../p2p/host.ts';
import { TASK_REPORT_RESULTS_PROTOCOL, taskReportResultsCodec } from '../../protocol/task-reports.ts';
import { ReportRelay } from './report-relay.ts';

/**
 * Hosts whose messages reach the handler the target node registered, in process, one turn
 * later (as the real channel delivers); an unreachable target drops them, as the host does.
 */
function network() {
  const handlers = new Map<string, MessageHandler>();
  const disconnectListeners = new Map<string, Array<(detail: { peerId: string }) => void>>();
  let sent = 0;
  const host = (id: string, reachable = () => true) => ({
    handleMessages: async (protocol: string, handler: MessageHandler) => { handlers.set(`${id} ${protocol}`, handler); },
    send: (peer: string, protocol: string, bytes: Uint8Array) => {
      sent += 1;
      const handler = handlers.get(`${peer} ${protocol}`);
      if (handler === undefined || !reachable()) return;
      setImmediate(() => void handler(id, bytes));
    },
    isConnected: (peer: string) => reachable() && peer !== 'X',
    on: ((type: string, listener: (detail: { peerId: string }) => void) => {
      if (type !== 'peer:disconnected') return () => undefined;
      const list = disconnectListeners.get(id) ?? [];
      list.push(listener);
      disconnectListeners.set(id, list);
      return () => list.splice(list.indexOf(listener), 1);
    }) as P2PHost['on'],
  });
  /** `observer` loses its connection to `peer`. */
  const disconnect = (observer: string, peer: string) => {
    for (const listener of disconnectListeners.get(observer) ?? []) listener({ peerId: peer });
  };
  /** Batches sent (results not counted). */
  return { host, batches: () => sent, disconnect };
}

function applied(index: number, data: string): ApplyResult {
  return { ok: true, index, task: null, created: false, events: [], prunedTaskIds: [], echo: data } as unknown as ApplyResult;
}

describe('ReportRelay', () => {
  it('sends the reports of one turn as one batch and resolves each with its own result', async () => {
    const net = network();
    const proposedOnLeader: string[] = [];
    let index = 0;
    const leader = new ReportRelay({
      nodeId: 'L', host: net.host('L'), leader: () => 'L', isLeader: () => true,
      propose: async (data) => { proposedOnLeader.push(data); return applied(++index, data); },
    });
    const follower = new ReportRelay({
      nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false,
      propose: async () => { throw new Error('the follower must not propose directly here'); },
    });
    await leader.start();
    await follower.start();
    const results = await Promise.all(Array.from({ length: 10 }, (_, n) => follower.propose(`{"n":${n}}`)));
    expect(results.map((result) => (result as unknown as { echo: string }).echo)).toEqual(Array.from({ length: 10 }, (_, n) => `{"n":${n}}`));
    expect(proposedOnLeader).toHaveLength(10);
    expect(net.batches()).toBe(2);
    expect(follower.stats).toMatchObject({ batches: 1, batchedReports: 10, fallbacks: 0 });
  });

  it('strips the task view from results unless asked for it', async () => {
    const net = network();
    const withTask = (index: number) => ({ ok: true, index, task: { id: 't1' }, created: true, events: [{ type: 'status' }], prunedTaskIds: [] }) as unknown as ApplyResult;
    let index = 0;
    const leader = new ReportRelay({ nodeId: 'L', host: net.host('L'), leader: () => 'L', isLeader: () => true, propose: async () => withTask(++index) });
    const follower = new ReportRelay({ nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false, propose: async () => null });
    await leader.start();
    await follower.start();
    const [report, write] = await Promise.all([follower.propose('report'), follower.propose('write', { fullResult: true })]);
    expect(report).toMatchObject({ ok: true, task: null, events: [] });
    expect(write).toMatchObject({ ok: true, task: { id: 't1' }, created: true });
    // One batch there, one answer back.
    expect(net.batches()).toBe(2);
  });

  it('falls back to proposing one by one when the batch cannot be delivered or the leader moved', async () => {
    const net = network();
    let reachable = false;
    const direct: string[] = [];
    const stale = new ReportRelay({ nodeId: 'L', host: net.host('L'), leader: () => 'X', isLeader: () => false, propose: async () => null });
    await stale.start();
    const follower = new ReportRelay({
      nodeId: 'F', host: net.host('F', () => reachable), leader: () => 'L', isLeader: () => false, requestTimeoutMs: 50,
      propose: async (data) => { direct.push(data); return applied(direct.length, data); },
    });
    await follower.start();
    await Promise.all([follower.propose('a'), follower.propose('b')]);
    expect(direct).toEqual(['a', 'b']);
    reachable = true;
    await follower.propose('c');
    expect(direct).toEqual(['a', 'b', 'c']);
    expect(follower.stats.fallbacks).toBe(3);
  });

  it('passes the leader errors on with their codes, so the reporter knows to retry', async () => {
    const net = network();
    const leader = new ReportRelay({
      nodeId: 'L', host: net.host('L'), leader: () => 'L', isLeader: () => true,
      propose: async () => { throw new HivemeshError(ErrorCode.noQuorum, 'no quorum committed the write within 5000 ms'); },
    });
    const follower = new ReportRelay({ nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false, propose: async () => null });
    await leader.start();
    await follower.start();
    const error = await follower.propose('x').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(HivemeshError);
    expect((error as HivemeshError).code).toBe('no_quorum');
  });

  it('proposes directly on the leader and when no leader is known', async () => {
    const net = network();
    const seen: string[] = [];
    let leader: string | null = 'F';
    const relay = new ReportRelay({ nodeId: 'F', host: net.host('F'), leader: () => leader, isLeader: () => leader === 'F', propose: async (data) => { seen.push(data); return null; } });
    await relay.propose('on the leader');
    leader = null;
    await relay.propose('no leader');
    expect(seen).toEqual(['on the leader', 'no leader']);
    expect(net.batches()).toBe(0);
    expect(relay.stats.direct).toBe(2);
  });

  it('falls back at once when the connection to the leader drops with a batch in flight', async () => {
    const net = network();
    const direct: string[] = [];
    // A leader that takes the batch and never answers (it is about to crash).
    const silent = new ReportRelay({ nodeId: 'L', host: net.host('L'), leader: () => 'L', isLeader: () => true, propose: () => new Promise<never>(() => undefined) });
    await silent.start();
    const follower = new ReportRelay({
      nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false, requestTimeoutMs: 60_000,
      propose: async (data) => { direct.push(data); return applied(direct.length, data); },
    });
    await follower.start();
    const pending = follower.propose('late');
    await new Promise((resolve) => setTimeout(resolve, 20));
    net.disconnect('F', 'L');
    await expect(pending).resolves.toMatchObject({ ok: true, index: 1 });
    expect(direct).toEqual(['late']);
  });

  it('ignores answers from a node the batch was not sent to', async () => {
    const net = network();
    const follower = new ReportRelay({ nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false, requestTimeoutMs: 100, propose: async (data) => applied(7, data) });
    await follower.start();
    const pending = follower.propose('x');
    await new Promise((resolve) => setImmediate(resolve));
    // An impostor answers batch 0 with a refusal; only the leader's answer counts.
    net.host('M').send('F', TASK_REPORT_RESULTS_PROTOCOL, taskReportResultsCodec.encode({
      kind: 'task-report-results', batch: 0, results: [{ ok: false, code: 'forbidden', message: 'no' }],
    }));
    await expect(pending).resolves.toMatchObject({ ok: true, index: 7 });
  });

  it('leaves the task views out of an answer that would be too large, and says nothing else differently', async () => {
    const net = network();
    const big = 'x'.repeat(300 * 1024);
    let index = 0;
    const leader = new ReportRelay({
      nodeId: 'L', host: net.host('L'), leader: () => 'L', isLeader: () => true,
      propose: async () => ({ ok: true, index: ++index, task: { id: `t${index}`, output: big }, created: true, events: [], prunedTaskIds: [] }) as unknown as ApplyResult,
    });
    const follower = new ReportRelay({ nodeId: 'F', host: net.host('F'), leader: () => 'L', isLeader: () => false, propose: async () => null });
    await leader.start();
    await follower.start();
    // 40 views of 300 KiB: over the bound for one answer.
    const results = await Promise.all(Array.from({ length: 40 }, (_, n) => follower.propose(`w${n}`, { fullResult: true })));
    expect(results.every((result) => result !== null && result.ok && result.task === null && result.created)).toBe(true);
    expect(results.map((result) => (result as { index: number }).index).sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, n) => n + 1));
    expect(follower.stats.fallbacks).toBe(0);
  });
});
