// GET /metrics (Prometheus text, every name prefixed hivemesh_) and GET
// /api/metrics/performance (JSON per node and for the cluster). Figures that live
// elsewhere (raft status, members, tasks, send queues, the event bus) are read at scrape
// time by a collector, so they cannot drift; counts of things that happen (HTTP requests,
// task transitions, gateway requests) are counted as they happen.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Type, type Static } from '@sinclair/typebox';
import type { AgentsStatus, ClusterStatus } from '../../protocol/api.ts';
import { heartbeatCodec, type Heartbeat } from '../../protocol/heartbeat.ts';
import { performanceWindowMs } from '../../protocol/limits.ts';
import type { ReplicatedState } from '../../scheduler/state/state.ts';
import type { EventBus } from '../events.ts';
import type { App } from '../http/app.ts';
import { logger } from '../log.ts';
import type { SendStats } from '../p2p/host.ts';
import { latencyBucketsSeconds, metrics as defaultMetrics, type MetricsRegistry } from './registry.ts';

const log = logger('metrics');

export interface MetricsRouteDeps {
  registry?: MetricsRegistry;
  clusterStatus: () => ClusterStatus;
  agentsStatus: () => AgentsStatus;
  /** The last heartbeat of every known node (for their encoded size). */
  heartbeats: () => Heartbeat[];
  /** The p2p host's one-way send queues (host.sendStats()). */
  sendStats: () => SendStats[];
  state: () => ReplicatedState;
  bus: EventBus;
}

const Count = Type.Integer({ minimum: 0 });
const NullableMs = Type.Union([Type.Number({ minimum: 0 }), Type.Null()]);

export const NodePerformance = Type.Object({
  id: Type.String(),
  name: Type.String(),
  state: Type.String(),
  self: Type.Boolean(),
  /** Measured generation speed per model, from finished generations. */
  tokensPerSecond: Type.Record(Type.String(), Type.Number()),
  load: Type.Object({ running: Count, queued: Count, concurrencyLimit: Count }),
  loadedModels: Type.Array(Type.Object({ name: Type.String(), vramBytes: Type.Number({ minimum: 0 }) })),
  /** Tasks the replicated log has assigned to or running on the node. */
  tasksInFlight: Count,
});

export const PerformanceReport = Type.Object({
  generatedAt: Type.String(),
  windowMs: Count,
  nodes: Type.Array(NodePerformance),
  cluster: Type.Object({
    nodesAlive: Count,
    tasksQueued: Count,
    tasksRunning: Count,
    /** Tasks completed in the window, divided by its length in seconds. */
    tasksCompletedPerSecond: Type.Number({ minimum: 0 }),
    tasksCompletedInWindow: Count,
    tasksFailedInWindow: Count,
    /** Over tasks completed in the window: submission to first start. */
    meanQueueWaitMs: NullableMs,
    /** Over tasks completed in the window: submission to completion. */
    meanCompletionMs: NullableMs,
    /** Sum over alive nodes of their best measured speed of any model. */
    tokensPerSecondCapacity: Type.Number({ minimum: 0 }),
  }),
});
export type PerformanceReport = Static<typeof PerformanceReport>;

function mean(values: number[]): number | null {
  return values.length === 0 ? null : Math.round(values.reduce((sum, value) => sum + value, 0) / values.length);
}

/** The cluster's performance figures, from heartbeats and the replicated task state. */
export function performanceReport(deps: Pick<MetricsRouteDeps, 'agentsStatus' | 'state'>, nowMs: number): PerformanceReport {
  const state = deps.state();
  const inFlight = state.inFlightByNode();
  const nodes = deps.agentsStatus().nodes.map((node) => ({
    id: node.id,
    name: node.name,
    state: node.state,
    self: node.self,
    tokensPerSecond: node.models.tokensPerSecond,
    load: node.load,
    loadedModels: node.models.loaded.map((model) => ({ name: model.name, vramBytes: model.vramBytes })),
    tasksInFlight: inFlight.get(node.id) ?? 0,
  }));
  const since = nowMs - performanceWindowMs;
  const queueWaits: number[] = [];
  const completions: number[] = [];
  for (const record of state.tasksWithStatus('completed')) {
    if (record.completedAt === null || record.completedAt < since) continue;
    completions.push(Math.max(0, record.completedAt - record.createdAt));
    if (record.startedAt !== null) queueWaits.push(Math.max(0, record.startedAt - record.createdAt));
  }
  let failed = 0;
  for (const record of state.tasksWithStatus('failed')) if (record.completedAt !== null && record.completedAt >= since) failed++;
  const counts = state.countsByStatus();
  const alive = nodes.filter((node) => node.state === 'alive');
  return {
    generatedAt: new Date(nowMs).toISOString(),
    windowMs: performanceWindowMs,
    nodes,
    cluster: {
      nodesAlive: alive.length,
      tasksQueued: counts.queued,
      tasksRunning: counts.running + counts.assigned,
      tasksCompletedPerSecond: completions.length / (performanceWindowMs / 1000),
      tasksCompletedInWindow: completions.length,
      tasksFailedInWindow: failed,
      meanQueueWaitMs: mean(queueWaits),
      meanCompletionMs: mean(completions),
      tokensPerSecondCapacity: alive.reduce((sum, node) => sum + Math.max(0, ...Object.values(node.tokensPerSecond)), 0),
    },
  };
}

/**
 * A route template for a raw request, so HTTP metrics have one series per route rather
 * than per URL: the path with each matched parameter put back as `:name`.
 */
function routeTemplate(app: App, method: string, url: string): string {
  const path = url.split('?')[0] ?? '/';
  const found = app.findRoute({ method: method as 'GET', url: path });
  if (found === null) return 'unmatched';
  const params = (found.params ?? {}) as Record<string, string>;
  if (params['*'] !== undefined) return path.slice(0, path.length - encodeURI(params['*']).length) + '*';
  const values = new Map(Object.entries(params).map(([name, value]) => [value, name]));
  return path.split('/').map((segment) => {
    let decoded = segment;
    try {
      decoded = decodeURIComponent(segment);
    } catch { /* keep the raw segment */ }
    const name = values.get(decoded);
    return name === undefined ? segment : `:${name}`;
  }).join('/');
}

/**
 * How late a 20 ms timer fires: the event loop's delay, sampled in JavaScript. (Node's
 * monitorEventLoopDelay misses a stall that starts right after its reset, which is when a
 * scrape would reset it.)
 */
class LoopDelaySampler {
  private static readonly everyMs = 20;
  private static readonly samplesMax = 10_000;
  private samples: number[] = [];
  private max = 0;
  private last = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => {
      const now = performance.now();
      const late = Math.max(0, now - this.last - LoopDelaySampler.everyMs);
      this.last = now;
      this.max = Math.max(this.max, late);
      if (this.samples.length < LoopDelaySampler.samplesMax) this.samples.push(late);
    }, LoopDelaySampler.everyMs);
    this.timer.unref();
  }

  /** p50, p99 and the longest delay (ms) since the previous call, or null without samples. */
  take(): Record<'0.5' | '0.99' | '1', number> | null {
    if (this.samples.length === 0) return null;
    const sorted = this.samples.sort((a, b) => a - b);
    const at = (fraction: number) => sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
    const figures = { '0.5': at(0.5), '0.99': at(0.99), '1': this.max };
    this.samples = [];
    this.max = 0;
    return figures;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export function metricsRoutes(deps: MetricsRouteDeps) {
  return async (app: App): Promise<void> => {
    const registry = deps.registry ?? defaultMetrics;
    const httpRequests = registry.counter('hivemesh_http_requests_total', 'HTTP requests answered, by route template, method and status.');
    const httpSeconds = registry.histogram('hivemesh_http_request_duration_seconds', 'HTTP requests from arrival to the end of the answer (streams included), by route.', latencyBucketsSeconds);
    const tasksFinished = registry.counter('hivemesh_tasks_finished_total', 'Task transitions to a final status seen by this node (completed, failed, cancelled).');
    const nodes = registry.gauge('hivemesh_nodes', 'Known nodes by failure-detector state.');
    const raftTerm = registry.gauge('hivemesh_raft_term', 'Current Raft term on this node.');
    const raftCommit = registry.gauge('hivemesh_raft_commit_index', 'Raft commit index on this node.');
    const raftApplied = registry.gauge('hivemesh_raft_applied_index', 'Raft entries applied to the state machine on this node.');
    const raftRole = registry.gauge('hivemesh_raft_role', 'This node\'s Raft role (1 for the current role, 0 for the others).');
    const raftLeaderKnown = registry.gauge('hivemesh_raft_leader_known', '1 when this node knows a leader.');
    const tasks = registry.gauge('hivemesh_tasks', 'Tasks in the replicated state by status.');
    const tokensPerSecond = registry.gauge('hivemesh_generation_tokens_per_second', 'Measured generation speed per node and model, from heartbeats.');
    const nodeRunning = registry.gauge('hivemesh_node_running', 'Generations running per node (tasks and gateway requests), from heartbeats.');
    const nodeConcurrency = registry.gauge('hivemesh_node_concurrency_limit', 'Generations a node runs at once, from heartbeats.');
    const heartbeatBytes = registry.gauge('hivemesh_heartbeat_bytes', 'Encoded size of the last heartbeat of each node.');
    const sendDropped = registry.counter('hivemesh_p2p_send_dropped_total', 'One-way p2p messages dropped per peer and protocol (queue full or peer unreachable); resets when an idle channel is pruned.');
    const sendQueued = registry.gauge('hivemesh_p2p_send_queued', 'One-way p2p messages waiting per peer and protocol.');
    const busSubscribers = registry.gauge('hivemesh_event_bus_subscribers', 'Open event streams (SSE clients and the task event streams behind them) on this node.');
    const loopDelaySeconds = registry.gauge('hivemesh_event_loop_delay_seconds',
      'How late this node\'s event loop ran its timers since the previous scrape (quantile 0.5, 0.99 and 1 for the longest). While it is held the node hears nothing: a longest delay of hundreds of ms shows in elections and in submit latency.');
    const loopDelay = new LoopDelaySampler();

    const removeCollector = registry.collect(() => {
      try {
        const status = deps.clusterStatus();
        for (const state of ['alive', 'suspect', 'dead'] as const) nodes.set({ state }, status.nodes[state] ?? 0);
        raftTerm.set({}, status.term);
        raftCommit.set({}, status.commitIndex);
        raftApplied.set({}, status.appliedIndex);
        for (const role of ['leader', 'follower', 'candidate', 'learner', 'unknown'] as const) raftRole.set({ role }, status.role === role ? 1 : 0);
        raftLeaderKnown.set({}, status.leaderId === null ? 0 : 1);
        for (const [name, count] of Object.entries(status.tasks)) if (name !== 'total') tasks.set({ status: name }, count ?? 0);
      } catch (error) {
        // A node still starting has no consensus yet: its raft figures are simply absent.
        log.debug('cluster status not available for metrics', { error: error as Error });
      }
      // Nodes come and go: rebuild the per-node families so forgotten nodes disappear.
      for (const family of [tokensPerSecond, nodeRunning, nodeConcurrency, heartbeatBytes, sendQueued]) family.reset();
      sendDropped.reset();
      for (const node of deps.agentsStatus().nodes) {
        for (const [model, speed] of Object.entries(node.models.tokensPerSecond)) tokensPerSecond.set({ node: node.name, model }, speed);
        nodeRunning.set({ node: node.name }, node.load.running);
        nodeConcurrency.set({ node: node.name }, node.load.concurrencyLimit);
      }
      for (const heartbeat of deps.heartbeats()) {
        try {
          heartbeatBytes.set({ node: heartbeat.name }, heartbeatCodec.encode(heartbeat).byteLength);
        } catch {
          // A heartbeat that no longer encodes (over the bound) is reported by membership itself.
        }
      }
      for (const stats of deps.sendStats()) {
        sendDropped.setTotal({ peer: stats.peerId, protocol: stats.protocol }, stats.dropped);
        sendQueued.set({ peer: stats.peerId, protocol: stats.protocol }, stats.queued);
      }
      busSubscribers.set({}, deps.bus.subscriberCount);
      const delay = loopDelay.take();
      if (delay !== null) for (const [quantile, ms] of Object.entries(delay)) loopDelaySeconds.set({ quantile }, ms / 1000);
    });

    // Task transitions, counted from the event bus as entries are applied.
    const stopCounting = deps.bus.listen((event) => {
      if (event.type !== 'task.status') return;
      const status = event.event.status;
      if (status === 'completed' || status === 'failed' || status === 'cancelled') tasksFinished.inc({ status });
    });

    // Every HTTP request of the server, whatever plugin answers it (hooks here would only
    // see this plugin's routes): counted when the answer ends or the client leaves.
    const onRequest = (request: IncomingMessage, response: ServerResponse): void => {
      const startedAtMs = performance.now();
      response.once('close', () => {
        const method = request.method ?? 'GET';
        const route = routeTemplate(app, method, request.url ?? '/');
        httpRequests.inc({ route, method, status: String(response.statusCode) });
        httpSeconds.observe({ route }, (performance.now() - startedAtMs) / 1000);
      });
    };
    app.server.on('request', onRequest);
    app.addHook('onClose', async () => {
      loopDelay.stop();
      stopCounting();
      removeCollector();
      app.server.off('request', onRequest);
    });

    app.get('/metrics', { config: { action: 'read' } }, async (_request, reply) =>
      reply.type('text/plain; version=0.0.4; charset=utf-8').send(registry.render()));

    app.get('/api/metrics/performance', {
      config: { action: 'read' },
      schema: { response: { 200: PerformanceReport } },
    }, async () => performanceReport(deps, Date.now()));
  };
}
