// The report relay: reports of one turn travel to the leader as one batch and come back
// with one result each, in order; a leader that no longer leads, or a batch that cannot be
// delivered, falls back to proposing each report on its own; errors keep their codes.
import { describe, expect, it } from 'vitest';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import type { ApplyResult } from '../../scheduler/state/state.ts';
import type { Reply, RequestHandler } from '../p2p/host.ts';
import { ReportRelay } from './report-relay.ts';

/** Hosts whose requests reach the handler registered by the target node, in process. */
function network() {
  const handlers = new Map<string, RequestHandler>();
  let requests = 0;
  const host = (id: string, reachable = () => true) => ({
    handle: async (protocol: string, handler: RequestHandler) => { handlers.set(`${id} ${protocol}`, handler); },
    request: async function* (peer: string, protocol: string, bytes: Uint8Array): AsyncGenerator<Uint8Array> {
      requests += 1;
      const handler = handlers.get(`${peer} ${protocol}`);
      if (handler === undefined || !reachable()) throw new Error(`cannot reach ${peer}`);
      const frames: Uint8Array[] = [];
      const reply: Reply = { send: async (frame) => { frames.push(frame); }, end: async () => undefined };
      await handler(id, bytes, reply, { signal: new AbortController().signal });
      yield* frames;
    },
  });
  return { host, requests: () => requests };
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
    expect(net.requests()).toBe(1);
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
    expect(net.requests()).toBe(1);
  });

  it('falls back to proposing one by one when the batch cannot be delivered or the leader moved', async () => {
    const net = network();
    let reachable = false;
    const direct: string[] = [];
    const stale = new ReportRelay({ nodeId: 'L', host: net.host('L'), leader: () => 'X', isLeader: () => false, propose: async () => null });
    await stale.start();
    const follower = new ReportRelay({
      nodeId: 'F', host: net.host('F', () => reachable), leader: () => 'L', isLeader: () => false,
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
    expect(net.requests()).toBe(0);
    expect(relay.stats.direct).toBe(2);
  });
});
