// Helpers of the multi-process task suites (tests/loopback/tasks*.test.ts): a cluster of
// daemons each with its own Ollama stand-in (logging every generation to a file), task
// submission and waits over HTTP, an SSE reader, and the per-prompt generation counts
// that prove "completed exactly once" from the stand-ins' own logs.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Task, TaskEvent } from '../../protocol/tasks.ts';
import { readStandinLog } from '../ollama-standin/events.ts';
import { startStandin, type Standin, type StandinOptions } from '../ollama-standin/server.ts';
import { formCluster, outputTails, prepareDaemons, writeClusterKey, type MeshDaemon } from '../support/cluster.ts';
import { tempDir, waitUntil, type ProcessGroup } from '../support/processes.ts';
import { sseData } from '../support/sse.ts';

export interface TaskNodeSpec {
  name: string;
  standin: StandinOptions;
  concurrency?: number;
  /** More `hivemesh start` flags for this node. */
  extraArgs?: string[];
}

export interface TaskCluster {
  daemons: MeshDaemon[];
  standins: Standin[];
  logFiles: string[];
}

/** Starts one stand-in per node (own log file), then the daemons as one cluster. */
export async function startTaskCluster(group: ProcessGroup, specs: TaskNodeSpec[], timeoutMs = 45_000): Promise<TaskCluster> {
  const dir = tempDir('tasks');
  group.onCleanup(async () => (await import('node:fs')).rmSync(dir, { recursive: true, force: true }));
  const standins: Standin[] = [];
  const logFiles: string[] = [];
  for (const spec of specs) {
    const logFile = join(dir, `${spec.name}-standin.jsonl`);
    const standin = await startStandin({ host: '127.0.0.1', port: 0, coldLoadMs: 0, logFile, ...spec.standin });
    group.onCleanup(() => standin.close());
    standins.push(standin);
    logFiles.push(logFile);
  }
  const secretFile = writeClusterKey(tempDir('tasks-key'));
  const daemons = await prepareDaemons(group, specs.map((spec, index) => ({
    name: spec.name, mdns: false, secretFile, ollamaUrl: standins[index]!.url,
    extraArgs: ['--concurrency', String(spec.concurrency ?? 4), ...(spec.extraArgs ?? [])],
  })), { bootstrapAll: true });
  await formCluster(daemons, timeoutMs, { voters: Math.min(3, daemons.length) });
  return { daemons, standins, logFiles };
}

/** Waits until every daemon's gossip view shows every node's models (the probe polls in the background). */
export async function waitModelsGossiped(cluster: TaskCluster, timeoutMs = 20_000): Promise<void> {
  await waitUntil('every node to see every node\'s models', async () => {
    for (const observer of cluster.daemons) {
      const { body } = await observer.api<{ nodes: Array<{ id: string; models: { installed: Array<{ name: string }> } }> }>('/api/status/agents', { timeoutMs: 2_000 });
      for (const [index, subject] of cluster.daemons.entries()) {
        const node = body.nodes.find((candidate) => candidate.id === subject.nodeId);
        const names = node?.models.installed.map((model) => model.name) ?? [];
        if (!cluster.standins[index]!.installedModels().every((model) => names.includes(model))) return false;
      }
    }
    return true;
  }, timeoutMs, 200);
}

/**
 * Whether a client may send a write again after this answer, as the contract tells it to: a
 * 503 no_leader (the write reached no leader: a leader election on a loaded machine), or any
 * 503 for a write with an idempotencyKey (then a retry cannot make a second task).
 */
export function retryable503(status: number, answer: unknown, idempotent: boolean): boolean {
  return status === 503 && (idempotent || (answer as { error?: { code?: string } } | null)?.error?.code === 'no_leader');
}

export async function submit(daemon: MeshDaemon, body: Record<string, unknown>, timeoutMs = 10_000): Promise<Task> {
  for (let tries = 1; ; tries += 1) {
    const { status, body: answer } = await daemon.api<Task>('/api/tasks', { method: 'POST', body, timeoutMs });
    if (status === 201 || status === 200) return answer;
    if (tries < 5 && retryable503(status, answer, body.idempotencyKey !== undefined)) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      continue;
    }
    throw new Error(`POST /api/tasks on ${daemon.spec.name} answered ${status}: ${JSON.stringify(answer)}`);
  }
}

export async function getTask(daemon: MeshDaemon, id: string): Promise<Task | null> {
  const { status, body } = await daemon.api<Task>(`/api/tasks/${id}`, { timeoutMs: 3_000 });
  return status === 200 ? body : null;
}

const finished = new Set(['completed', 'failed', 'cancelled']);

/** Waits until every task is finished, asking the live daemons in turn; returns them by id. */
export async function waitFinished(daemons: MeshDaemon[], ids: string[], timeoutMs: number): Promise<Map<string, Task>> {
  const done = new Map<string, Task>();
  let turn = 0;
  await waitUntil(`${ids.length} tasks to finish`, async () => {
    const live = daemons.filter((daemon) => daemon.running);
    const daemon = live[turn++ % live.length]!;
    for (const id of ids) {
      if (done.has(id)) continue;
      const task = await getTask(daemon, id).catch(() => null);
      if (task !== null && finished.has(task.status)) done.set(id, task);
    }
    return done.size === ids.length;
  }, timeoutMs, 100).catch((error: Error) => {
    const pending = ids.filter((id) => !done.has(id));
    throw new Error(`${error.message}: ${pending.length} unfinished (${pending.slice(0, 5).join(', ')})\n${outputTails(daemons)}`, { cause: error });
  });
  return done;
}

/** Reads a task's SSE stream until it ends or the bound passes. */
export async function readEvents(daemon: MeshDaemon, id: string, timeoutMs: number, onEvent?: (event: TaskEvent) => void): Promise<TaskEvent[]> {
  const response = await fetch(`${daemon.apiUrl}/api/tasks/${id}/events`, {
    headers: { authorization: `Bearer ${daemon.adminToken}` },
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (response.status !== 200 || response.body === null) throw new Error(`GET /api/tasks/${id}/events answered ${response.status}`);
  const events: TaskEvent[] = [];
  for await (const event of sseData<TaskEvent>(response)) {
    events.push(event);
    onEvent?.(event);
    if (event.type === 'final') break;
  }
  return events;
}

export function promptSha(prompt: string): string {
  return createHash('sha256').update(prompt).digest('hex');
}

export interface GenerationTally {
  started: number;
  finished: number;
  aborted: number;
  /** Stand-in (node index) of each finished generation. */
  finishedOn: number[];
}

/** Generations per prompt hash over every stand-in log: started, finished, aborted. */
export function tallyGenerations(logFiles: string[]): Map<string, GenerationTally> {
  const tally = new Map<string, GenerationTally>();
  for (const [node, file] of logFiles.entries()) {
    const shaById = new Map<number, string>();
    for (const event of readStandinLog(file)) {
      if (event.event === 'start' && event.id !== undefined && event.promptSha256 !== undefined) {
        shaById.set(event.id, event.promptSha256);
        const entry = tally.get(event.promptSha256) ?? { started: 0, finished: 0, aborted: 0, finishedOn: [] };
        entry.started += 1;
        tally.set(event.promptSha256, entry);
      } else if ((event.event === 'finish' || event.event === 'abort' || event.event === 'break') && event.id !== undefined) {
        const sha = shaById.get(event.id);
        const entry = sha === undefined ? undefined : tally.get(sha);
        if (entry === undefined) continue;
        if (event.event === 'finish') {
          entry.finished += 1;
          entry.finishedOn.push(node);
        } else {
          entry.aborted += 1;
        }
      }
    }
  }
  return tally;
}
