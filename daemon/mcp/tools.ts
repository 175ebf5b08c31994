// The MCP tools Claude Code and other MCP clients use to look at the mesh and run tasks on
// it. A tool that fails returns `isError` with a sentence the model can act on; protocol
// errors are reserved for broken requests. Loaded on the first /mcp request (routes.ts):
// the SDK and zod are a sizeable part of an idle daemon's memory otherwise.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import type { AgentsStatus, ClusterStatus } from '../../protocol/api.ts';
import { ErrorCode, HivemeshError } from '../../protocol/errors.ts';
import {
  capabilityLengthMax, idempotencyKeyLengthMax, listLimitMax, modelNameLengthMax, systemPromptLengthMax, taskDependsOnMax,
  taskMaxAttemptsDefault, taskMaxAttemptsMax, taskPriorityMax, taskPriorityMin, taskTimeoutMsDefault, taskTimeoutMsMax, taskTimeoutMsMin,
  taskTitleLengthMax,
} from '../../protocol/limits.ts';
import { taskStatuses, type Task } from '../../protocol/tasks.ts';
import { actionWords, type Action, type Role } from '../../protocol/tokens.ts';
import { SOFTWARE_VERSION } from '../../protocol/version.ts';
import { missingOnLiveNodes, nodeLabel } from '../../scheduler/tasks/node-view.ts';
import type { Principal } from '../http/services.ts';
import type { TaskService } from '../tasks/service.ts';

export interface McpDeps {
  clusterStatus(): ClusterStatus;
  agentsStatus(): AgentsStatus;
  tasks: TaskService;
  can(role: Role, action: Action): boolean;
}

/** Longest a wait_for_task or run_prompt call blocks; the model can call again after. */
export const mcpWaitMsMax = 10 * 60_000;
/**
 * A call that does not say how long blocks at most this long: under the MCP SDK client's
 * default request timeout (60 s), so a default call answers (still running: call
 * wait_for_task again) instead of the client giving up. Longer waits may be asked for.
 */
const waitMsDefault = 45_000;
/** A progress notification this often while a call waits, for clients that asked for them. */
const progressEveryMs = 10_000;

type ToolExtra = { signal: AbortSignal; _meta?: { progressToken?: string | number }; sendNotification: (notification: { method: 'notifications/progress'; params: { progressToken: string | number; progress: number; message?: string } }) => Promise<void> };

/** Waits for the task, telling a client that passed a progress token every 10 s that it still runs. */
async function waitWithProgress(tasks: TaskService, id: string, waitMs: number, extra: ToolExtra, closing: AbortSignal): Promise<Task> {
  const token = extra._meta?.progressToken;
  let ticks = 0;
  const timer = token === undefined ? null : setInterval(() => {
    ticks += 1;
    void extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: ticks, message: `task ${id} still running after ${(ticks * progressEveryMs) / 1000} s` } }).catch(() => undefined);
  }, progressEveryMs);
  try {
    // A node that stops answers its waits with the task as it is, instead of holding the stop.
    return await tasks.waitFinished(id, waitMs, AbortSignal.any([extra.signal, closing]));
  } finally {
    if (timer !== null) clearInterval(timer);
  }
}

type ToolResult = { content: Array<{ type: 'text'; text: string }>; structuredContent?: Record<string, unknown>; isError?: boolean };

function ok(text: string, structured: Record<string, unknown>): ToolResult {
  return { content: [{ type: 'text', text }], structuredContent: structured };
}

function failure(error: unknown): ToolResult {
  const message = error instanceof HivemeshError ? `${error.code}: ${error.message}` : `internal error: ${(error as Error).message}`;
  return { content: [{ type: 'text', text: message }], isError: true };
}

/** The node as `name (id)` when the node list knows it, as the CLI and the logs name nodes. */
function nodeNameOf(deps: McpDeps, id: string): string {
  return nodeLabel(deps.agentsStatus().nodes.find((node) => node.id === id) ?? { id });
}

function summarize(task: Task, deps: McpDeps, closing?: AbortSignal): string {
  const lines = [`task ${task.id}: ${task.status}${task.assignedNode === null ? '' : ` on ${nodeNameOf(deps, task.assignedNode)}`} (attempt ${task.attempt}/${task.maxAttempts})`];
  if (task.status === 'queued' || task.status === 'assigned' || task.status === 'running') {
    lines.push(closing?.aborted === true
      ? `not finished yet, and this MCP endpoint's node is stopping; the task goes on in the cluster: call wait_for_task with id ${task.id} again (through another node if this one stays down)`
      : `not finished yet: call wait_for_task with id ${task.id} to keep waiting`);
  }
  if (task.waitingFor !== null) lines.push(`waiting for: ${task.waitingFor}`);
  if (task.error !== null) lines.push(`error: ${task.error}`);
  if (task.output !== null) lines.push('', task.output);
  return lines.join('\n');
}

// The bounds are the task API's (protocol/limits.ts), so a client sees them in the schema
// instead of learning them from a refused call.
const submitShape = {
  model: z.string().min(1).max(modelNameLengthMax).optional().describe('Ollama model to run, e.g. "llama3.2:3b" (see list_models)'),
  capability: z.string().min(1).max(capabilityLengthMax).optional().describe('or a capability an agent offers, e.g. "code"; the scheduler picks the agent'),
  prompt: z.string().min(1).describe('the prompt'),
  system: z.string().max(systemPromptLengthMax).optional().describe('system prompt'),
  title: z.string().max(taskTitleLengthMax).optional(),
  priority: z.number().int().min(taskPriorityMin).max(taskPriorityMax).optional().describe('0..10, higher runs first (default 5)'),
  dependsOn: z.array(z.string()).max(taskDependsOnMax).optional().describe('task ids that must complete first; use {{tasks.ID.output}} in the prompt to insert their output'),
  timeoutMs: z.number().int().min(taskTimeoutMsMin).max(taskTimeoutMsMax).optional().describe(`how long one attempt may run, in ms (default ${taskTimeoutMsDefault}); time queued does not count`),
  maxAttempts: z.number().int().min(1).max(taskMaxAttemptsMax).optional().describe(`attempts before the task fails (default ${taskMaxAttemptsDefault}); a failed or lost attempt is retried on another node`),
  idempotencyKey: z.string().max(idempotencyKeyLengthMax).optional().describe('the same key and body return the same task instead of a new one'),
  options: z.record(z.string(), z.unknown()).optional().describe('Ollama options such as temperature, num_predict'),
};

/** `closing` aborts when the node begins to stop: the calls that wait then answer at once. */
export function buildServer(deps: McpDeps, principal: Principal, closing: AbortSignal = new AbortController().signal): McpServer {
  const server = new McpServer({ name: 'hivemesh', version: SOFTWARE_VERSION }, {
    instructions: 'hivemesh runs LLM tasks on the GPU machines of a LAN. Use list_models to see what can run, run_prompt for a quick answer, submit_task + wait_for_task for longer work or several tasks in parallel.',
  });
  const guard = (action: Action) => {
    if (!deps.can(principal.role, action)) throw new HivemeshError(ErrorCode.forbidden, `this token (role ${principal.role}) may not ${actionWords[action]}; ask an admin for an operator token`);
  };
  const readOnly = { readOnlyHint: true, openWorldHint: false };

  server.registerTool('cluster_status', {
    title: 'Cluster status',
    description: 'The mesh as this node sees it: cluster id, leader, term, commit index, node counts by state, task counts by status, alerts.',
    annotations: readOnly,
  }, async () => {
    try {
      guard('read');
      const status = deps.clusterStatus();
      const text = [
        `cluster ${status.clusterId ?? '(not formed)'}, leader ${status.leaderId ?? 'none'}, term ${status.term}, commit ${status.commitIndex}`,
        `nodes: ${status.nodes.alive} alive, ${status.nodes.suspect} suspect, ${status.nodes.dead} dead`,
        `tasks: ${taskStatuses.map((name) => `${status.tasks[name]} ${name}`).join(', ')}`,
        ...status.alerts.map((alert) => `ALERT ${alert.kind}: ${alert.message}`),
      ].join('\n');
      return ok(text, status as unknown as Record<string, unknown>);
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('list_nodes', {
    title: 'List nodes',
    description: 'Every node: name, state (alive/suspect/dead), raft role, GPUs, models installed and loaded in VRAM, load, agents.',
    annotations: readOnly,
  }, async () => {
    try {
      guard('read');
      const { nodes } = deps.agentsStatus();
      const text = nodes.map((node) => `${node.name} (${node.id}) ${node.state} ${node.raftRole}; GPUs: ${node.hardware.gpus.map((gpu) => gpu.model).join(', ') || 'none'}; models: ${node.models.installed.map((model) => model.name).join(', ') || 'none'}; loaded: ${node.models.loaded.map((model) => model.name).join(', ') || 'none'}; load ${node.load.running}/${node.load.concurrencyLimit}`).join('\n');
      return ok(text || 'no nodes known yet', { nodes });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('list_models', {
    title: 'List models',
    description: 'The models the cluster can run, with the nodes that have each and where it is already loaded in VRAM (fastest to start).',
    annotations: readOnly,
  }, async () => {
    try {
      guard('read');
      const models = new Map<string, { name: string; nodes: string[]; loadedOn: string[]; capabilities: Set<string> }>();
      for (const node of deps.agentsStatus().nodes) {
        if (node.state !== 'alive') continue;
        for (const model of node.models.installed) {
          const entry = models.get(model.name) ?? { name: model.name, nodes: [], loadedOn: [], capabilities: new Set<string>() };
          entry.nodes.push(node.name);
          if (node.models.loaded.some((loaded) => loaded.name === model.name)) entry.loadedOn.push(node.name);
          for (const agent of node.agents) if (agent.model === model.name) for (const capability of agent.capabilities) entry.capabilities.add(capability.name);
          models.set(model.name, entry);
        }
      }
      const list = [...models.values()].sort((a, b) => a.name.localeCompare(b.name)).map((entry) => ({ ...entry, capabilities: [...entry.capabilities].sort() }));
      const text = list.map((entry) => `${entry.name}: on ${entry.nodes.join(', ')}${entry.loadedOn.length > 0 ? ` (loaded on ${entry.loadedOn.join(', ')})` : ''}${entry.capabilities.length > 0 ? `; capabilities ${entry.capabilities.join(', ')}` : ''}`).join('\n');
      return ok(text || 'no live node has a model installed', { models: list });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('submit_task', {
    title: 'Submit a task',
    description: 'Queue an LLM task on the mesh; returns at once with the task id. Use wait_for_task or get_task for the result.',
    inputSchema: submitShape,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
  }, async (args) => {
    try {
      guard('submit');
      const { task } = await deps.tasks.submit(args);
      // A task no node can run yet waits, possibly for ever: say so, as the CLI does.
      const waiting = task.status === 'queued' && task.waitingFor !== null ? `; it waits: ${task.waitingFor}` : '';
      return ok(`submitted ${task.id} (${task.status})${waiting}`, { task });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('get_task', {
    title: 'Get a task',
    description: 'A task\'s status, node, attempts, usage and output.',
    inputSchema: { id: z.string().min(1) },
    annotations: readOnly,
  }, async ({ id }) => {
    try {
      guard('read');
      const task = await deps.tasks.find(id);
      return ok(summarize(task, deps), { task });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('list_tasks', {
    title: 'List tasks',
    description: 'Tasks, newest first, optionally by status; pass nextCursor back as cursor for more.',
    inputSchema: {
      status: z.enum(taskStatuses as unknown as [string, ...string[]]).optional(),
      limit: z.number().int().min(1).max(listLimitMax).optional(),
      cursor: z.string().optional(),
    },
    annotations: readOnly,
  }, async ({ status, limit, cursor }) => {
    try {
      guard('read');
      const page = deps.tasks.list({
        ...(status === undefined ? {} : { status: status as Task['status'] }),
        limit: limit ?? 20,
        ...(cursor === undefined ? {} : { cursor }),
      });
      const text = page.tasks.map((task) => `${task.id} ${task.status} ${task.model ?? `capability:${task.capability}`} ${task.title ?? ''}`.trim()).join('\n');
      return ok(text || 'no tasks', page as unknown as Record<string, unknown>);
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('cancel_task', {
    title: 'Cancel a task',
    description: 'Cancel a queued or running task; a running generation is aborted.',
    inputSchema: { id: z.string().min(1) },
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  }, async ({ id }) => {
    try {
      guard('cancel');
      const task = await deps.tasks.cancel(id, `cancelled by ${principal.name} over MCP`);
      return ok(`task ${task.id} ${task.status}`, { task });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('wait_for_task', {
    title: 'Wait for a task',
    description: `Block until a task finishes (or timeoutMs passes, default ${waitMsDefault} ms, at most ${mcpWaitMsMax} ms) and return it with its output.`,
    inputSchema: { id: z.string().min(1), timeoutMs: z.number().int().positive().max(mcpWaitMsMax).optional() },
    annotations: readOnly,
  }, async ({ id, timeoutMs }, extra) => {
    try {
      guard('read');
      const task = await waitWithProgress(deps.tasks, id, timeoutMs ?? waitMsDefault, extra as ToolExtra, closing);
      return ok(summarize(task, deps, closing), { task });
    } catch (error) {
      return failure(error);
    }
  });

  server.registerTool('run_prompt', {
    title: 'Run a prompt',
    description: 'Submit a prompt, wait for it, and return the output: the quick way to get an answer from a model on the mesh.',
    inputSchema: { ...submitShape, waitMs: z.number().int().positive().max(mcpWaitMsMax).optional().describe(`how long to wait (default ${waitMsDefault} ms)`) },
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
  }, async ({ waitMs, ...input }, extra) => {
    try {
      guard('submit');
      // submit_task queues such a task (it runs once a node with the model joins); run_prompt
      // is for an answer now, so it says at once that none can come.
      const missing = missingOnLiveNodes(deps.agentsStatus().nodes, input);
      if (missing !== null) {
        const text = missing === 'model'
          ? `no live node has model "${input.model}"; call list_models for the models the mesh has`
          : `no live node offers capability "${input.capability}"; call list_nodes for what the agents offer`;
        return { content: [{ type: 'text', text }], isError: true };
      }
      const { task } = await deps.tasks.submit(input);
      const finished = await waitWithProgress(deps.tasks, task.id, waitMs ?? waitMsDefault, extra as ToolExtra, closing);
      if (finished.status === 'completed') return ok(finished.output ?? '', { task: finished });
      const result = ok(summarize(finished, deps, closing), { task: finished });
      if (finished.status === 'failed' || finished.status === 'cancelled') result.isError = true;
      return result;
    } catch (error) {
      return failure(error);
    }
  });

  return server;
}

