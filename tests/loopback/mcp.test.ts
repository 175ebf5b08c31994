// The MCP endpoint as Claude Code uses it: the SDK's Streamable HTTP client against a real
// daemon process with an Ollama stand-in, bearer tokens and roles, the Origin check.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStandin, type Standin } from '../ollama-standin/server.ts';
import { ProcessGroup, waitUntil, type DaemonProcess } from '../support/processes.ts';

const group = new ProcessGroup();
let daemon: DaemonProcess;
let standin: Standin;

async function connect(token: string): Promise<Client> {
  const client = new Client({ name: 'hivemesh-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${daemon.apiUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  return client;
}

type ToolResult = { content: Array<{ type: string; text: string }>; structuredContent?: Record<string, unknown>; isError?: boolean };

beforeAll(async () => {
  standin = await startStandin({ host: '127.0.0.1', port: 0, models: ['llama3.2:3b', 'qwen2.5-coder:7b'], tokensPerSecond: 500 });
  group.onCleanup(() => standin.close());
  daemon = await group.daemon({ name: 'mcp-node', mdns: false, ollamaUrl: standin.url });
  daemon.start();
  await waitUntil('the node to be ready with its models', async () => {
    const ready = await daemon.api('/health/ready', { token: null });
    if (ready.status !== 200) return null;
    const { body } = await daemon.api<{ nodes: Array<{ models: { installed: unknown[] } }> }>('/api/status/agents');
    return body.nodes[0]?.models.installed.length === 2 ? true : null;
  }, 30_000, 200);
}, 60_000);

afterAll(() => group.stopAll(), 30_000);

describe('MCP endpoint', () => {
  it('lists the contract tools with schemas and read-only hints', async () => {
    const client = await connect(daemon.adminToken);
    const { tools } = await client.listTools();
    const names = tools.map((tool) => tool.name).sort();
    expect(names).toEqual(['cancel_task', 'cluster_status', 'get_task', 'list_models', 'list_nodes', 'list_tasks', 'run_prompt', 'submit_task', 'wait_for_task']);
    const submit = tools.find((tool) => tool.name === 'submit_task')!;
    expect(submit.inputSchema.properties).toHaveProperty('prompt');
    expect(tools.find((tool) => tool.name === 'list_models')!.annotations?.readOnlyHint).toBe(true);
    await client.close();
  });

  it('answers status, nodes and models from the mesh', async () => {
    const client = await connect(daemon.adminToken);
    const status = (await client.callTool({ name: 'cluster_status', arguments: {} })) as ToolResult;
    expect(status.isError).not.toBe(true);
    expect(status.structuredContent?.leaderId).toBeTruthy();
    const models = (await client.callTool({ name: 'list_models', arguments: {} })) as ToolResult;
    expect(models.content[0]!.text).toContain('llama3.2:3b');
    expect(models.content[0]!.text).toContain('mcp-node');
    const nodes = (await client.callTool({ name: 'list_nodes', arguments: {} })) as ToolResult;
    expect(nodes.content[0]!.text).toContain('mcp-node');
    await client.close();
  });

  it('submits, reads, lists and cancels tasks', async () => {
    const client = await connect(daemon.adminToken);
    const submitted = (await client.callTool({ name: 'submit_task', arguments: { model: 'no-such-model:1b', prompt: 'hello', title: 'mcp test' } })) as ToolResult;
    expect(submitted.isError).not.toBe(true);
    // No node has the model: the answer says the task waits, and why.
    expect((submitted.content[0] as { text: string }).text).toMatch(/\(queued\); it waits: no node has model no-such-model:1b/);
    const task = submitted.structuredContent!.task as { id: string; status: string };
    expect(task.status).toBe('queued');
    const got = (await client.callTool({ name: 'get_task', arguments: { id: task.id } })) as ToolResult;
    expect(got.content[0]!.text).toContain(task.id);
    expect(got.content[0]!.text).toMatch(/waiting for: .*no-such-model/);
    const listed = (await client.callTool({ name: 'list_tasks', arguments: { status: 'queued' } })) as ToolResult;
    expect(listed.content[0]!.text).toContain(task.id);
    const cancelled = (await client.callTool({ name: 'cancel_task', arguments: { id: task.id } })) as ToolResult;
    expect(cancelled.content[0]!.text).toContain('cancelled');
    const missing = (await client.callTool({ name: 'get_task', arguments: { id: 't_missing' } })) as ToolResult;
    expect(missing.isError).toBe(true);
    expect(missing.content[0]!.text).toContain('not_found');
    const invalid = (await client.callTool({ name: 'submit_task', arguments: { prompt: 'no model' } })) as ToolResult;
    expect(invalid.isError).toBe(true);
    expect(invalid.content[0]!.text).toMatch(/model/);
    // run_prompt wants an answer now: for a model no node has it says so at once, queueing nothing.
    const before = await daemon.api<{ tasks: unknown[] }>('/api/tasks?limit=1000');
    const nobody = (await client.callTool({ name: 'run_prompt', arguments: { model: 'no-such-model:1b', prompt: 'hello' } })) as ToolResult;
    expect(nobody.isError).toBe(true);
    expect(nobody.content[0]!.text).toMatch(/no live node has model "no-such-model:1b".*list_models/);
    expect((await daemon.api<{ tasks: unknown[] }>('/api/tasks?limit=1000')).body.tasks).toHaveLength(before.body.tasks.length);
    // A wait that ends before the task says how to keep waiting.
    const waiting = (await client.callTool({ name: 'submit_task', arguments: { model: 'no-such-model:1b', prompt: 'wait for me' } })) as ToolResult;
    const waitingId = (waiting.structuredContent!.task as { id: string }).id;
    const waited = (await client.callTool({ name: 'wait_for_task', arguments: { id: waitingId, timeoutMs: 300 } })) as ToolResult;
    expect(waited.content[0]!.text).toMatch(new RegExp(`not finished yet: call wait_for_task with id ${waitingId}`));
    // A client that asks for progress hears every 10 s that the task still runs.
    const progress: Array<{ progress: number; message?: string }> = [];
    const longer = (await client.callTool({ name: 'wait_for_task', arguments: { id: waitingId, timeoutMs: 10_700 } }, undefined, {
      timeout: 30_000, onprogress: (update) => progress.push(update),
    })) as ToolResult;
    expect(longer.content[0]!.text).toMatch(/not finished yet/);
    expect(progress).toHaveLength(1);
    expect(progress[0]!.message).toMatch(new RegExp(`task ${waitingId} still running after 10 s`));
    await client.callTool({ name: 'cancel_task', arguments: { id: waitingId } });
    await client.close();
  });

  it('enforces tokens, roles and the Origin check', async () => {
    await expect(connect('hm_not_a_real_token_aaaaaaaaaaaa')).rejects.toThrow();
    const created = await daemon.api<{ token: string }>('/api/tokens', { method: 'POST', body: { role: 'viewer', name: 'mcp-viewer' } });
    expect(created.status).toBe(201);
    const viewer = await connect(created.body.token);
    const refused = (await viewer.callTool({ name: 'submit_task', arguments: { model: 'llama3.2:3b', prompt: 'x' } })) as ToolResult;
    expect(refused.isError).toBe(true);
    expect(refused.content[0]!.text).toContain('forbidden');
    const allowed = (await viewer.callTool({ name: 'cluster_status', arguments: {} })) as ToolResult;
    expect(allowed.isError).not.toBe(true);
    await viewer.close();
    const foreign = await fetch(`${daemon.apiUrl}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${daemon.adminToken}`, origin: 'http://evil.example', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(foreign.status).toBe(403);
  });
});
