// Bids: the wire codecs, a node's own estimates, and the exchange between a leader and
// bidders over an in-memory gossip network (who may ask, who is heard, how long to wait).
import { describe, expect, it } from 'vitest';
import { bidRequestCodec, bidResponseCodec, bidTasksPerRequestMax } from '../../protocol/bids.ts';
import { nodeViewFromHeartbeat } from '../../scheduler/tasks/node-view.ts';
import { Harness } from '../../scheduler/state/test-helpers.ts';
import { BidService, estimateBids } from './bids.ts';
import { FakeNetwork, heartbeatOf } from './test-cluster.ts';

const encoder = new TextEncoder();

describe('bid codecs', () => {
  it('round-trip and refuse oversized or malformed messages with the reason', () => {
    const request = { kind: 'bid-request' as const, round: 'n1:3:1', leader: 'n1', term: 3, tasks: [{ id: 't1', model: 'llama3', capability: null, expectedTokens: 256 }] };
    expect(bidRequestCodec.decode(bidRequestCodec.encode(request))).toEqual(request);
    const response = { kind: 'bid-response' as const, round: 'n1:3:1', node: 'n2', bids: [{ taskId: 't1', estimateMs: 1200 }] };
    expect(bidResponseCodec.decode(bidResponseCodec.encode(response))).toEqual(response);
    expect(() => bidRequestCodec.decode(encoder.encode(JSON.stringify({ ...request, tasks: [] })))).toThrow(/invalid bid request/);
    const tooMany = { ...request, tasks: Array.from({ length: bidTasksPerRequestMax + 1 }, (_, n) => ({ id: `t${n}`, model: 'm', capability: null, expectedTokens: 1 })) };
    expect(() => bidRequestCodec.decode(encoder.encode(JSON.stringify(tooMany)))).toThrow(/invalid bid request/);
    expect(() => bidResponseCodec.decode(encoder.encode(JSON.stringify({ ...response, bids: [{ taskId: 't1', estimateMs: -5 }] })))).toThrow(/invalid bid response/);
    expect(() => bidResponseCodec.decode(new Uint8Array(70 * 1024))).toThrow(/over the 65536-byte limit/);
  });
});

describe('estimateBids', () => {
  it('bids with the cluster\'s typical speed when the node has measured nothing', () => {
    const log = new Harness();
    log.submit('t1', { model: 'llama3', options: { num_predict: 200 } });
    const fresh = nodeViewFromHeartbeat(heartbeatOf({ id: 'n2', models: ['llama3'], loaded: ['llama3'] }), true);
    const [unknown] = estimateBids(log.state, fresh, [{ id: 't1', model: 'llama3', capability: null, expectedTokens: 200 }]);
    const [typical] = estimateBids(log.state, fresh, [{ id: 't1', model: 'llama3', capability: null, expectedTokens: 200, typicalTokensPerSecond: 100 }]);
    expect(typical!.estimateMs).toBeLessThan(unknown!.estimateMs / 3);
  });

  it('bids on queued tasks the node can run, lower when the model is in VRAM, and skips the rest', () => {
    const log = new Harness();
    log.submit('t1', { model: 'llama3' });
    log.submit('t2', { model: 'mistral' });
    log.submit('t3', { model: 'llama3' });
    log.assign('t3', 'n9', 1);
    const tasks = ['t1', 't2', 't3', 'unknown'].map((id) => ({ id, model: 'llama3', capability: null, expectedTokens: 256 }));
    const cold = nodeViewFromHeartbeat(heartbeatOf({ id: 'n2', models: ['llama3'] }), true);
    const warm = nodeViewFromHeartbeat(heartbeatOf({ id: 'n3', models: ['llama3'], loaded: ['llama3'] }), true);
    const coldBids = estimateBids(log.state, cold, tasks);
    const warmBids = estimateBids(log.state, warm, tasks);
    expect(coldBids.map((bid) => bid.taskId)).toEqual(['t1']);
    expect(warmBids[0]!.estimateMs).toBeLessThan(coldBids[0]!.estimateMs);
  });
});

describe('BidService', () => {
  function setup(leaderOf: () => string | null) {
    const network = new FakeNetwork();
    const log = new Harness();
    log.submit('t1', { model: 'llama3' });
    const make = (id: string, loaded: string[]) => new BidService({
      nodeId: id, host: network.host(id), state: () => log.state, leader: leaderOf,
      selfView: () => nodeViewFromHeartbeat(heartbeatOf({ id, models: ['llama3'], loaded }), true),
    });
    return { network, log, leader: make('n1', []), fast: make('n2', ['llama3']), slow: make('n3', []) };
  }

  it('collects the answers of the expected nodes and returns as soon as all answered', async () => {
    const { leader, fast, slow } = setup(() => 'n1');
    for (const service of [leader, fast, slow]) await service.start();
    const started = Date.now();
    const bids = await leader.collect([{ id: 't1', model: 'llama3', capability: null, expectedTokens: 256 }], ['n1', 'n2', 'n3'], 1, 2_000);
    expect(Date.now() - started).toBeLessThan(1_000);
    const byNode = Object.fromEntries(bids.map((bid) => [bid.node, bid.estimateMs]));
    expect(Object.keys(byNode).sort()).toEqual(['n2', 'n3']);
    expect(byNode.n2).toBeLessThan(byNode.n3!);
    expect(fast.answeredCount).toBe(1);
  });

  it('waits no longer than its bound for nodes that do not answer', async () => {
    const { leader, fast } = setup(() => 'n1');
    await leader.start();
    await fast.start();
    const started = Date.now();
    const bids = await leader.collect([{ id: 't1', model: 'llama3', capability: null, expectedTokens: 256 }], ['n2', 'n3'], 1, 60);
    expect(Date.now() - started).toBeGreaterThanOrEqual(55);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(bids.map((bid) => bid.node)).toEqual(['n2']);
  });

  it('ignores requests from a node that is not the leader it follows', async () => {
    const { leader, fast } = setup(() => 'n7');
    await leader.start();
    await fast.start();
    const bids = await leader.collect([{ id: 't1', model: 'llama3', capability: null, expectedTokens: 256 }], ['n2'], 1, 50);
    expect(bids).toEqual([]);
    expect(fast.answeredCount).toBe(0);
  });

  it('does not publish at all when it expects nobody else', async () => {
    const { network, leader } = setup(() => 'n1');
    await leader.start();
    expect(await leader.collect([{ id: 't1', model: 'llama3', capability: null, expectedTokens: 1 }], ['n1'], 1, 1_000)).toEqual([]);
    expect(network.published).toBe(0);
  });
});
