// A stand-in for a hivemesh node's HTTP API, for the dashboard's browser tests: the real
// fastify app (buildApp) with a fake HttpServices, plus a small plugin for the task API
// and the event streams that follows ARCHITECTURE.md and protocol/tasks.ts (validation
// with the real validateTaskSubmit, opaque numeric cursors, SSE with `type` as the event
// name), and the real token routes (GET /api/tokens/self tells the page its role). Tests
// drive it: add tasks, push task events, read which cancels were asked for.
import type { ServerResponse } from 'node:http';
import type { AgentsStatus, ClusterStatus, NodeStatus } from '../../protocol/api.ts';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import { isFinished, refusalToError, validateTaskSubmit, validationError, type Task, type TaskEvent, type TaskStatus } from '../../protocol/tasks.ts';
import { buildApp, type App } from '../../daemon/http/app.ts';
import { tokenRoutes } from '../../daemon/http/routes/tokens.ts';
import type { HttpServices, Principal } from '../../daemon/http/services.ts';
import type { TokenService } from '../../daemon/tokens.ts';
import { can } from '../../protocol/tokens.ts';

export const adminToken = 'hm_admin_test_token_0123456789';
export const viewerToken = 'hm_viewer_test_token_0123456789';
export const operatorToken = 'hm_operator_test_token_0123456789';
/** A node name that would run script if the page used innerHTML. */
export const hostileNodeName = '<img src=x onerror="window.__pwned=1">gpu-box';

const selfId = '12D3KooWSelfNode000000000000000000000000000001';
const suspectId = '12D3KooWSuspectNode00000000000000000000000002';
const deadId = '12D3KooWDeadNode0000000000000000000000000003';
const borealisId = '12D3KooWBorealis0000000000000000000000000004';
const gib = 1024 ** 3;

/** Streams open at once in the fake; a test that leaks more than this has a bug. */
const openStreamsMax = 64;

function node(overrides: Partial<NodeStatus> & Pick<NodeStatus, 'id' | 'name' | 'state' | 'raftRole'>, nowMs: number): NodeStatus {
  return {
    apiUrl: `http://${overrides.name.replace(/[^a-z0-9-]/gi, '')}.lan:7420`,
    self: false,
    clusterId: 'c0ffee00-1234-4abc-9def-000000000001',
    softwareVersion: '0.1.0',
    protocolVersion: 1,
    startedAt: new Date(nowMs - 3_600_000).toISOString(),
    hardware: { cpu: { model: 'AMD Ryzen 9 7950X', cores: 32, load: 0.18 }, memory: { totalBytes: 64 * gib, usedBytes: 21 * gib }, gpus: [] },
    ollama: { url: 'http://127.0.0.1:11434', reachable: true, version: '0.12.3', error: null },
    models: { installed: [], loaded: [], tokensPerSecond: {} },
    load: { running: 0, queued: 0, concurrencyLimit: 2 },
    agents: [],
    capabilities: [],
    lastSeen: new Date(nowMs).toISOString(),
    lastSeenAgoMs: 0,
    ...overrides,
  };
}

export function sampleAgents(nowMs: number): AgentsStatus {
  return {
    nodes: [
      node({
        id: selfId, name: 'atlas', state: 'alive', raftRole: 'leader', self: true, apiUrl: 'http://127.0.0.1:7420',
        hardware: {
          cpu: { model: 'AMD Ryzen 9 7950X', cores: 32, load: 0.42 },
          memory: { totalBytes: 128 * gib, usedBytes: 40 * gib },
          gpus: [
            { model: 'GeForce RTX 4090', vendor: 'NVIDIA', vramTotalBytes: 24 * gib, vramUsedBytes: 19.5 * gib, utilization: 0.87 },
            { model: 'GeForce RTX 3090', vendor: 'NVIDIA', vramTotalBytes: 24 * gib, vramUsedBytes: 4 * gib, utilization: 0.05 },
          ],
        },
        models: {
          installed: [
            { name: 'llama3.1:8b', sizeBytes: 4.9 * gib, family: 'llama', parameterSize: '8.0B', quantization: 'Q4_K_M' },
            { name: 'qwen2.5-coder:14b', sizeBytes: 9 * gib, family: 'qwen2', parameterSize: '14.8B', quantization: 'Q4_K_M' },
          ],
          loaded: [{ name: 'llama3.1:8b', sizeBytes: 6 * gib, vramBytes: 5.6 * gib, expiresAt: new Date(nowMs + 240_000).toISOString() }],
          tokensPerSecond: { 'llama3.1:8b': 92.4 },
        },
        load: { running: 1, queued: 2, concurrencyLimit: 4 },
        agents: [{ id: 'coder', model: 'qwen2.5-coder:14b', capabilities: [{ name: 'code', proficiency: 0.9 }, { name: 'review', proficiency: 0.7 }] }],
        capabilities: ['code', 'review'],
      }, nowMs),
      node({
        id: suspectId, name: hostileNodeName, state: 'suspect', raftRole: 'follower', lastSeenAgoMs: 3_200,
        apiUrl: 'javascript:alert(1)',
        hardware: { cpu: { model: 'Intel Xeon', cores: 16, load: 0.9 }, memory: { totalBytes: 32 * gib, usedBytes: 30 * gib }, gpus: [{ model: 'Radeon RX 7900 XTX', vendor: 'AMD', vramTotalBytes: 24 * gib, vramUsedBytes: null, utilization: null }] },
        models: { installed: [{ name: 'mistral:7b', sizeBytes: 4.1 * gib }], loaded: [], tokensPerSecond: {} },
        agents: [{ id: 'writer', model: 'mistral:7b', capabilities: [{ name: 'summarize', proficiency: 0.8 }] }],
        capabilities: ['summarize'],
      }, nowMs),
      node({
        id: borealisId, name: 'borealis', state: 'alive', raftRole: 'learner', lastSeenAgoMs: 800,
        ollama: { url: 'http://127.0.0.1:11434', reachable: false, version: null, error: 'connect ECONNREFUSED 127.0.0.1:11434' },
      }, nowMs),
      node({
        id: deadId, name: 'old-laptop', state: 'dead', raftRole: 'learner', lastSeenAgoMs: 95_000,
        ollama: { url: 'http://127.0.0.1:11434', reachable: false, version: null, error: 'connect ETIMEDOUT 127.0.0.1:11434' },
      }, nowMs),
    ],
  };
}

export function sampleCluster(tasks: Iterable<Task>): ClusterStatus {
  const counts = { queued: 0, assigned: 0, running: 0, completed: 0, failed: 0, cancelled: 0, total: 0 };
  for (const task of tasks) {
    counts[task.status] += 1;
    counts.total += 1;
  }
  return {
    clusterId: 'c0ffee00-1234-4abc-9def-000000000001',
    nodeId: selfId,
    nodeName: 'atlas',
    leaderId: selfId,
    term: 7,
    commitIndex: 1234,
    appliedIndex: 1234,
    role: 'leader',
    voters: [selfId, suspectId],
    learners: [deadId, borealisId],
    nodes: { alive: 2, suspect: 1, dead: 1, total: 4 },
    tasks: counts,
    softwareVersion: '0.1.0',
    protocolVersion: 1,
    clusterKeyFingerprint: 'ab:cd:ef:01',
    listenAddresses: ['/ip4/127.0.0.1/tcp/7421'],
    alerts: [{ kind: 'identity-conflict', message: 'two live processes claim node id 12D3KooWX: a data dir was probably copied', since: new Date().toISOString() }],
  };
}

type Subscriber = { taskId: string | null; raw: ServerResponse };

export class FakeCluster {
  readonly tasks = new Map<string, Task>();
  readonly cancelRequests: string[] = [];
  readonly submissions: unknown[] = [];
  private readonly subscribers = new Set<Subscriber>();
  private nextTaskNumber = 1;
  /** While true, submissions are refused as the replicated state does when its queue is full (429). */
  queueFull = false;
  /** Lets a test change what the node reports about its peers from one poll to the next. */
  editAgents: (agents: AgentsStatus) => AgentsStatus = (agents) => agents;
  /** Likewise for the cluster status (leader, alerts). */
  editCluster: (cluster: ClusterStatus) => ClusterStatus = (cluster) => cluster;
  app: App | null = null;
  baseUrl = '';

  addTask(overrides: Partial<Task> = {}): Task {
    const now = Date.now();
    const id = overrides.id ?? `task-${String(this.nextTaskNumber++).padStart(4, '0')}`;
    const task: Task = {
      id, status: 'queued', model: 'llama3.1:8b', capability: null, title: null, priority: 5, pinnedNode: null, assignedNode: null,
      attempt: 0, maxAttempts: 3, timeoutMs: 600_000, attempts: [], output: null, outputTruncated: false, error: null, usage: null,
      waitingFor: null, notBefore: null, dependsOn: [], createdAt: now - 1_000 * this.tasks.size, startedAt: null, completedAt: null,
      metadata: {}, idempotencyKey: null, ...overrides,
    };
    this.tasks.set(id, task);
    return task;
  }

  /** Open task event streams for a task (the test waits for the page to connect). */
  streamsFor(taskId: string): number {
    return [...this.subscribers].filter((subscriber) => subscriber.taskId === taskId).length;
  }

  get clusterStreams(): number {
    return [...this.subscribers].filter((subscriber) => subscriber.taskId === null).length;
  }

  /** Sends a task event to the task's streams; a final event also ends them, as the daemon does. */
  emitTaskEvent(taskId: string, event: TaskEvent): void {
    if (event.type === 'final') this.tasks.set(taskId, event.task);
    if (event.type === 'status') {
      const task = this.tasks.get(taskId);
      if (task !== undefined) this.tasks.set(taskId, { ...task, status: event.status, attempt: event.attempt, assignedNode: event.node });
    }
    for (const subscriber of this.subscribers) {
      if (subscriber.taskId !== taskId) continue;
      writeSse(subscriber.raw, event.type, event);
      if (event.type === 'final') subscriber.raw.end();
    }
  }

  emitClusterEvent(name: string, data: unknown): void {
    for (const subscriber of this.subscribers) if (subscriber.taskId === null) writeSse(subscriber.raw, name, data);
  }

  services(): HttpServices {
    const principals: Record<string, Principal> = {
      [adminToken]: { tokenId: 'admin', name: 'admin', role: 'admin' },
      [viewerToken]: { tokenId: 'dash', name: 'dash', role: 'viewer' },
      [operatorToken]: { tokenId: 'ci', name: 'ci', role: 'operator' },
    };
    return {
      nodeId: selfId,
      authenticate: (token) => principals[token] ?? null,
      can,
      readiness: () => ({ ready: true, leaderId: selfId }),
      clusterStatus: () => this.editCluster(sampleCluster(this.tasks.values())),
      agentsStatus: () => this.editAgents(sampleAgents(Date.now())),
      reportInternalError: (error) => {
        throw error;
      },
    };
  }

  /** The task API and event streams, per the contract. */
  plugin() {
    return async (app: App) => {
      app.post('/api/tasks', { config: { action: 'submit' } }, async (request, reply) => {
        this.submissions.push(request.body);
        const result = validateTaskSubmit(request.body);
        if (!result.ok) throw validationError(result.errors);
        if (this.queueFull) throw refusalToError({ code: 'queue-full', message: 'the task queue is full (10000 active tasks); wait for some to finish' });
        const task = this.addTask({
          model: result.input.model, capability: result.input.capability, title: result.input.title,
          priority: result.input.priority, createdAt: Date.now(), waitingFor: 'no node has this model loaded yet',
        });
        return reply.code(201).send(task);
      });

      app.get('/api/tasks', { config: { action: 'read' } }, async (request) => {
        const query = request.query as { status?: string; limit?: string; cursor?: string };
        const limit = query.limit === undefined ? 100 : Number(query.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
          throw new HivemeshError(ErrorCode.invalidInput, 'invalid querystring: limit: must be an integer from 1 to 1000', { details: [{ field: 'limit', reason: 'must be an integer from 1 to 1000' }] });
        }
        const offset = query.cursor === undefined ? 0 : Number(query.cursor);
        const all = [...this.tasks.values()]
          .filter((task) => query.status === undefined || task.status === (query.status as TaskStatus))
          .sort((a, b) => b.createdAt - a.createdAt || a.id.localeCompare(b.id));
        const tasks = all.slice(offset, offset + limit);
        return { tasks, nextCursor: offset + limit < all.length ? String(offset + limit) : null };
      });

      app.get('/api/tasks/:id', { config: { action: 'read' } }, async (request) => this.task((request.params as { id: string }).id));

      app.delete('/api/tasks/:id', { config: { action: 'cancel' } }, async (request) => {
        const task = this.task((request.params as { id: string }).id);
        this.cancelRequests.push(task.id);
        if (isFinished(task.status)) throw new HivemeshError(ErrorCode.conflict, `task ${task.id} is already ${task.status}`);
        const cancelled: Task = { ...task, status: 'cancelled', completedAt: Date.now(), error: 'cancelled by admin' };
        this.emitTaskEvent(task.id, { type: 'status', taskId: task.id, status: 'cancelled', attempt: task.attempt, node: task.assignedNode, at: Date.now(), reason: 'cancelled by admin' });
        this.emitTaskEvent(task.id, { type: 'final', task: cancelled });
        return cancelled;
      });

      app.get('/api/tasks/:id/events', { config: { action: 'read' } }, async (request, reply) => {
        const task = this.task((request.params as { id: string }).id);
        this.openStream(reply.raw, task.id, reply);
        writeSse(reply.raw, 'status', { type: 'status', taskId: task.id, status: task.status, attempt: task.attempt, node: task.assignedNode, at: Date.now(), reason: task.error });
        if (isFinished(task.status)) {
          writeSse(reply.raw, 'final', { type: 'final', task });
          reply.raw.end();
        }
      });

      app.get('/api/events', { config: { action: 'read' } }, async (_request, reply) => {
        this.openStream(reply.raw, null, reply);
        writeSse(reply.raw, 'leader.changed', { type: 'leader.changed', at: Date.now(), leaderId: selfId, term: 7 });
        writeSse(reply.raw, 'node.suspect', { type: 'node.suspect', at: Date.now(), nodeId: suspectId, name: hostileNodeName });
      });
    };
  }

  private task(id: string): Task {
    const task = this.tasks.get(id);
    if (task === undefined) throw new HivemeshError(ErrorCode.notFound, `no task ${id}`);
    return task;
  }

  private openStream(raw: ServerResponse, taskId: string | null, reply: { hijack(): void }): void {
    if (this.subscribers.size >= openStreamsMax) throw new HivemeshError(ErrorCode.rateLimited, 'too many open streams in the fake', { retryAfterSeconds: 1 });
    reply.hijack();
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    raw.flushHeaders();
    const subscriber = { taskId, raw };
    this.subscribers.add(subscriber);
    raw.once('close', () => this.subscribers.delete(subscriber));
  }

  async start(): Promise<string> {
    const app = await buildApp({ services: this.services(), plugins: [this.plugin(), tokenRoutes(tokenManagementNotFaked)] });
    this.app = app;
    this.baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    return this.baseUrl;
  }

  async stop(): Promise<void> {
    for (const subscriber of this.subscribers) subscriber.raw.end();
    this.subscribers.clear();
    const app = this.app;
    this.app = null;
    await app?.close();
  }
}

/** The page never manages tokens; a test that makes it try fails loudly. */
const tokenManagementNotFaked = new Proxy({}, {
  get: (_target, name) => () => {
    throw new Error(`the fake node does not manage tokens (TokenService.${String(name)} was called)`);
  },
}) as TokenService;

function writeSse(raw: ServerResponse, event: string, data: unknown): void {
  if (raw.writableEnded) return;
  raw.write(`event: ${event}\n${JSON.stringify(data).split('\n').map((line) => `data: ${line}`).join('\n')}\n\n`);
}
