// The metrics routes on a real fastify app over a real port (HTTP requests are counted on
// the server itself): /metrics needs a read token and parses as Prometheus text with the
// raft, node, task, heartbeat, send-queue, bus and HTTP series; task transitions are
// counted from the bus; /api/metrics/performance computes the window figures.
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentsStatus, ClusterStatus } from '../../protocol/api.ts';
import { performanceWindowMs } from '../../protocol/limits.ts';
import { Harness } from '../../scheduler/state/test-helpers.ts';
import { EventBus } from '../events.ts';
import { buildApp, type App } from '../http/app.ts';
import type { HttpServices } from '../http/services.ts';
import { parsePrometheusText, type Sample } from './parse.ts';
import { MetricsRegistry } from './registry.ts';
import { metricsRoutes, performanceReport } from './routes.ts';

const token = 'test-token';

function clusterStatus(): ClusterStatus {
  return {
    clusterId: 'c1', nodeId: 'n1', nodeName: 'one', leaderId: 'n1', term: 7, commitIndex: 42, appliedIndex: 41, role: 'leader',
    voters: ['n1'], learners: [], nodes: { alive: 2, suspect: 1, dead: 0, total: 3 },
    tasks: { queued: 3, assigned: 0, running: 1, completed: 5, failed: 1, cancelled: 0, total: 10 },
    softwareVersion: '0', protocolVersion: 1, clusterKeyFingerprint: '', listenAddresses: [], alerts: [],
  };
}

function agentsStatus(): AgentsStatus {
  const node = (id: string, name: string, tokensPerSecond: Record<string, number>, state: 'alive' | 'dead') => ({
    id, name, apiUrl: '', state, raftRole: 'follower' as const, self: id === 'n1', clusterId: 'c1', softwareVersion: '0', protocolVersion: 1,
    startedAt: '2026-11-22T00:00:00.000Z',
    hardware: { cpu: { model: '', cores: 1, load: 0 }, memory: { totalBytes: 0, usedBytes: 0 }, gpus: [] },
    ollama: { url: '', reachable: true, version: '0.12.6', error: null },
    models: { installed: [], loaded: [{ name: 'm:1b', sizeBytes: 10, vramBytes: 9, expiresAt: null }], tokensPerSecond },
    load: { running: 1, queued: 0, concurrencyLimit: 2 }, agents: [], capabilities: [], lastSeen: '', lastSeenAgoMs: 0,
  });
  return { nodes: [node('n1', 'one', { 'm:1b': 40 }, 'alive'), node('n2', 'two', { 'm:1b': 10, 'q:7b': 25 }, 'alive'), node('n3', 'three', { 'm:1b': 99 }, 'dead')] };
}

const services: HttpServices = {
  nodeId: 'n1',
  authenticate: (candidate) => (candidate === token ? { tokenId: 't', name: 'viewer', role: 'viewer' } : null),
  can: (role, action) => role !== 'viewer' || action === 'read',
  readiness: () => ({ ready: true, leaderId: 'n1' }),
  clusterStatus,
  agentsStatus,
  reportInternalError: () => undefined,
};

let app: App | null = null;
afterEach(async () => {
  await app?.close();
  app = null;
});

describe('metrics routes', () => {
  it('serves Prometheus text with the hivemesh series, and counts HTTP requests by route template', async () => {
    const registry = new MetricsRegistry();
    const bus = new EventBus();
    const harness = new Harness();
    app = await buildApp({
      services,
      plugins: [
        metricsRoutes({
          registry, bus, clusterStatus, agentsStatus,
          heartbeats: () => [],
          sendStats: () => [{ peerId: 'p2', protocol: '/hivemesh/raft/1', queued: 3, sent: 10, dropped: 4 }],
          state: () => harness.state,
        }),
        async (scope) => {
          scope.get('/things/:id', { config: { action: 'read' } }, async () => ({ ok: true }));
        },
      ],
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
    const get = (path: string, withToken = true) => fetch(base + path, { headers: withToken ? { authorization: `Bearer ${token}` } : {} });

    expect((await get('/metrics', false)).status).toBe(401);
    await get('/things/abc');
    await get('/things/def');
    await get('/nowhere');
    bus.publish({ type: 'task.status', at: 1, event: { type: 'status', taskId: 't1', status: 'completed', attempt: 1, node: 'n1', at: 1, reason: null } });
    bus.publish({ type: 'task.status', at: 1, event: { type: 'status', taskId: 't2', status: 'failed', attempt: 1, node: 'n1', at: 1, reason: 'x' } });
    bus.publish({ type: 'task.status', at: 1, event: { type: 'status', taskId: 't3', status: 'running', attempt: 1, node: 'n1', at: 1, reason: null } });
    await new Promise((resolve) => setTimeout(resolve, 20));

    const response = await get('/metrics');
    expect(response.status).toBe(200);
    const { samples } = parsePrometheusText(await response.text());
    const value = (name: string, labels: Record<string, string> = {}) => samples
      .filter((sample: Sample) => sample.name === name && Object.entries(labels).every(([key, text]) => sample.labels[key] === text))
      .reduce((sum, sample) => sum + sample.value, 0);
    expect(value('hivemesh_raft_term')).toBe(7);
    expect(value('hivemesh_raft_commit_index')).toBe(42);
    expect(value('hivemesh_raft_applied_index')).toBe(41);
    expect(value('hivemesh_raft_role', { role: 'leader' })).toBe(1);
    expect(value('hivemesh_raft_role', { role: 'follower' })).toBe(0);
    expect(value('hivemesh_nodes', { state: 'suspect' })).toBe(1);
    expect(value('hivemesh_tasks', { status: 'queued' })).toBe(3);
    expect(value('hivemesh_tasks_finished_total', { status: 'completed' })).toBe(1);
    expect(value('hivemesh_tasks_finished_total', { status: 'failed' })).toBe(1);
    expect(value('hivemesh_tasks_finished_total')).toBe(2);
    expect(value('hivemesh_generation_tokens_per_second', { node: 'two', model: 'q:7b' })).toBe(25);
    expect(value('hivemesh_p2p_send_dropped_total', { peer: 'p2' })).toBe(4);
    expect(value('hivemesh_p2p_send_queued', { peer: 'p2' })).toBe(3);
    // The metrics plugin counts transitions with a listener, not a stream: no SSE client is open.
    expect(value('hivemesh_event_bus_subscribers')).toBe(0);
    expect(value('hivemesh_http_requests_total', { route: '/things/:id', method: 'GET', status: '200' })).toBe(2);
    expect(value('hivemesh_http_requests_total', { route: 'unmatched', status: '404' })).toBe(1);
    expect(value('hivemesh_http_requests_total', { route: '/metrics', status: '401' })).toBe(1);

    // The event loop held for 300 ms (as a busy loop of promises once held a stopping leader):
    // the next scrape's longest delay shows it, and the one after starts afresh.
    const heldUntil = performance.now() + 300;
    while (performance.now() < heldUntil) { /* hold the loop */ }
    await new Promise((resolve) => setTimeout(resolve, 50));
    const held = parsePrometheusText(await (await get('/metrics')).text()).samples;
    const delay = (samples: Sample[], quantile: string) => samples.find((sample) => sample.name === 'hivemesh_event_loop_delay_seconds' && sample.labels.quantile === quantile)?.value;
    expect(delay(held, '1')).toBeGreaterThanOrEqual(0.25);
    expect(delay(held, '0.5')).toBeLessThan(delay(held, '1')!);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const after = parsePrometheusText(await (await get('/metrics')).text()).samples;
    expect(delay(after, '1')).toBeLessThan(0.25);
  });

  it('computes the performance window from the replicated tasks', () => {
    const harness = new Harness();
    const now = 1_000_000;
    // Two completed inside the window: queue waits 2 ms (submit to start), totals 3 ms.
    harness.runToCompletion('t1', 'n1', 'out', {}, now - 10_000);
    harness.runToCompletion('t2', 'n2', 'out', {}, now - 5_000);
    // One completed before the window: not counted.
    harness.runToCompletion('t0', 'n1', 'out', {}, now - performanceWindowMs - 10_000);
    harness.submit('t3', {}, now - 1_000);
    const report = performanceReport({ agentsStatus, state: () => harness.state }, now);
    expect(report.windowMs).toBe(performanceWindowMs);
    expect(report.cluster.tasksCompletedInWindow).toBe(2);
    expect(report.cluster.tasksCompletedPerSecond).toBeCloseTo(2 / (performanceWindowMs / 1000));
    expect(report.cluster.meanQueueWaitMs).toBe(2);
    expect(report.cluster.meanCompletionMs).toBe(3);
    expect(report.cluster.tasksQueued).toBe(1);
    expect(report.cluster.nodesAlive).toBe(2);
    // Best speed per alive node: 40 (one) + 25 (two); the dead node is left out.
    expect(report.cluster.tokensPerSecondCapacity).toBe(65);
    expect(report.nodes.find((node) => node.id === 'n2')!.loadedModels).toEqual([{ name: 'm:1b', vramBytes: 9 }]);
  });
});
