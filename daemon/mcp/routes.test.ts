// The MCP endpoint on the real fastify app, listening on loopback, with the MCP SDK's own
// Streamable HTTP client (as Claude Code uses it) and a fake task service whose tasks never
// finish. Checked: a wait whose node dies (its connections cut) fails the call at once
// instead of leaving it to the client's timeout, which calls are answered as JSON and which
// as an SSE stream, the task API's bounds in the tools' schemas, and nodes named by name.
import type { Socket } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentsStatus } from '../../protocol/api.ts';
import * as limits from '../../protocol/limits.ts';
import type { Task } from '../../protocol/tasks.ts';
import { buildApp, type App } from '../http/app.ts';
import type { HttpServices } from '../http/services.ts';
import type { TaskService } from '../tasks/service.ts';
import { answerAsJson, mcpJsonWaitMsMax, mcpRoutes } from './routes.ts';

const token = 'admin-token';
const running = { id: 't_1', status: 'running', assignedNode: 'node-b', attempt: 1, maxAttempts: 3, waitingFor: null, error: null, output: null } as unknown as Task;

// Tasks that never finish: a wait ends only when its time is up or the call goes away.
let waitsAborted = 0;
const tasks = {
  find: async () => running,
  waitFinished: (_id: string, timeoutMs: number, signal?: AbortSignal) => new Promise<Task>((resolve) => {
    const timer = setTimeout(() => resolve(running), timeoutMs);
    signal?.addEventListener('abort', () => {
      waitsAborted += 1;
      clearTimeout(timer);
      resolve(running);
    }, { once: true });
  }),
} as unknown as TaskService;

let app: App;
let url: URL;
const sockets = new Set<Socket>();

/** The app with the MCP routes, listening on a free loopback port. */
async function startApp(): Promise<{ app: App; url: URL }> {
  const services: HttpServices = {
    nodeId: 'self',
    authenticate: (presented) => (presented === token ? { tokenId: 'admin', name: 'admin', role: 'admin' } : null),
    can: () => true,
    readiness: () => ({ ready: true, leaderId: 'self' }),
    clusterStatus: () => { throw new Error('not used'); },
    agentsStatus: () => ({ nodes: [{ id: 'node-b', name: 'gpu-box' }] }) as unknown as AgentsStatus,
    reportInternalError: () => undefined,
  };
  const started = await buildApp({
    services,
    plugins: [mcpRoutes({ clusterStatus: services.clusterStatus, agentsStatus: services.agentsStatus, tasks, can: () => true })],
  });
  started.server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const address = await started.listen({ host: '127.0.0.1', port: 0 });
  return { app: started, url: new URL(`${address}/mcp`) };
}

beforeAll(async () => {
  ({ app, url } = await startApp());
});

afterAll(async () => {
  await app.close();
});

async function connect(at: URL = url): Promise<Client> {
  const client = new Client({ name: 'routes-test', version: '1.0.0' });
  client.onerror = () => undefined;
  await client.connect(new StreamableHTTPClientTransport(at, { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return client;
}

async function contentTypeOf(params: Record<string, unknown>): Promise<string | null> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  await response.text();
  return response.headers.get('content-type');
}

describe('MCP endpoint transport', () => {
  it('fails a wait at once when the node it entered through dies, instead of at the client timeout', async () => {
    const client = await connect();
    const startedAt = Date.now();
    const call = client.callTool({ name: 'wait_for_task', arguments: { id: 't_1', timeoutMs: 30_000 } }, undefined, { timeout: 20_000 });
    const settled = call.then(() => 'answered', (error: Error) => error.message);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // What a killed daemon's kernel does: every connection closes at once.
    for (const socket of sockets) socket.destroy();
    const outcome = await settled;
    expect(outcome).not.toBe('answered');
    expect(outcome).not.toMatch(/timed out/i);
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    // The server side lets go of the wait too.
    await expect.poll(() => waitsAborted, { timeout: 2_000 }).toBe(1);
    await client.close();
  }, 30_000);

  it('answers as JSON unless progress is asked for or the wait outlasts a fetch\'s header timeout', async () => {
    expect(await contentTypeOf({ name: 'wait_for_task', arguments: { id: 't_1', timeoutMs: 10 } })).toMatch(/^application\/json/);
    expect(await contentTypeOf({ name: 'wait_for_task', arguments: { id: 't_1', timeoutMs: 10 }, _meta: { progressToken: 7 } })).toMatch(/^text\/event-stream/);
    expect(answerAsJson({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'wait_for_task', arguments: { id: 't', timeoutMs: mcpJsonWaitMsMax + 1 } } })).toBe(false);
    expect(answerAsJson({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_prompt', arguments: { prompt: 'x', waitMs: mcpJsonWaitMsMax + 1 } } })).toBe(false);
    // run_prompt's timeoutMs bounds the task's attempts, not the wait.
    expect(answerAsJson({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_prompt', arguments: { prompt: 'x', timeoutMs: 3_600_000 } } })).toBe(true);
    expect(answerAsJson([{ jsonrpc: '2.0', id: 1, method: 'tools/list' }, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'list_nodes', _meta: { progressToken: 'p' } } }])).toBe(false);
    expect(answerAsJson({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } })).toBe(true);
  });

  it('gives the task API\'s bounds in the schemas and names nodes by name', async () => {
    const client = await connect();
    const { tools } = await client.listTools();
    for (const name of ['submit_task', 'run_prompt']) {
      const properties = tools.find((tool) => tool.name === name)!.inputSchema.properties as Record<string, Record<string, unknown>>;
      expect(properties.timeoutMs).toMatchObject({ minimum: limits.taskTimeoutMsMin, maximum: limits.taskTimeoutMsMax });
      expect(properties.maxAttempts).toMatchObject({ minimum: 1, maximum: limits.taskMaxAttemptsMax });
      expect(properties.title).toMatchObject({ maxLength: limits.taskTitleLengthMax });
      expect(properties.dependsOn).toMatchObject({ maxItems: limits.taskDependsOnMax });
    }
    const refused = await client.callTool({ name: 'submit_task', arguments: { model: 'm', prompt: 'x', maxAttempts: 50 } }) as { isError?: boolean; content: Array<{ text: string }> };
    expect(refused.isError).toBe(true);
    expect(refused.content[0]!.text).toMatch(/maxAttempts/);
    const got = await client.callTool({ name: 'get_task', arguments: { id: 't_1' } }) as { content: Array<{ text: string }> };
    expect(got.content[0]!.text).toMatch(/^task t_1: running on gpu-box \(node-b\) \(attempt 1\/3\)/);
    await client.close();
  });

  it('answers a wait at once when its node stops, instead of holding the stop for the whole wait', async () => {
    const stopping = await startApp();
    const client = await connect(stopping.url);
    // One answered as JSON, one (asking for progress) as an SSE stream.
    const calls = [false, true].map((progress) => client.callTool({ name: 'wait_for_task', arguments: { id: 't_1', timeoutMs: 30_000 } }, undefined,
      { timeout: 20_000, ...(progress ? { onprogress: () => undefined } : {}) }) as Promise<{ content: Array<{ text: string }> }>);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const startedAt = Date.now();
    const closed = stopping.app.close();
    for (const answer of await Promise.all(calls)) {
      expect(answer.content[0]!.text).toMatch(/not finished yet, and this MCP endpoint's node is stopping; the task goes on in the cluster: call wait_for_task with id t_1 again/);
    }
    await closed;
    expect(Date.now() - startedAt).toBeLessThan(3_000);
  }, 30_000);
});
