// Throughput of the whole task path on three real daemons with instant stand-ins: HTTP
// submit (forwarded to the leader), Raft commit, scheduling, execution, streaming into
// the buffer, completion report. Prints the measured rates; asserts every task completed
// and a floor far below the target, so a loaded CI machine does not fail it spuriously.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../protocol/api.ts';
import type { Task } from '../../protocol/tasks.ts';
import { ProcessGroup, waitUntil } from '../support/processes.ts';
import { startTaskCluster, submit as submitTo, waitModelsGossiped, type TaskCluster } from './tasks-helpers.ts';

const taskCount = Number(process.env.HIVEMESH_THROUGHPUT_TASKS ?? 2_000);
const submitters = 96;
// Generation slots per node. The stand-in answers at once, so what is measured is the
// orchestration: assignment, execution, report, commit.
const concurrency = Number(process.env.HIVEMESH_THROUGHPUT_CONCURRENCY ?? 128);

describe('task throughput on three daemons', () => {
  const group = new ProcessGroup();
  let cluster: TaskCluster;

  beforeAll(async () => {
    cluster = await startTaskCluster(group, ['tp-a', 'tp-b', 'tp-c'].map((name) => ({
      name, concurrency,
      standin: {
        // The gate model is slow on purpose (see the second test); the other is instant.
        models: ['llama3.2:1b', { name: 'gate:1b', tokensPerSecond: 10 }],
        tokensPerSecond: 1_000_000, responseTokens: 4, maxConcurrency: 1_024, maxQueue: 4_096, logFile: null,
      },
    })));
    await waitModelsGossiped(cluster);
  }, 60_000);

  afterAll(async () => {
    await group.stopAll();
  }, 30_000);

  it(`runs ${taskCount} tasks end to end`, async () => {
    const { daemons } = cluster;
    const tokens = daemons.map((daemon) => daemon.adminToken);
    let next = 0;
    let failures = 0;
    let retries = 0;
    const failureSamples: string[] = [];
    const started = performance.now();
    await Promise.all(Array.from({ length: submitters }, async (_, worker) => {
      while (next < taskCount) {
        const n = next++;
        const index = (n + worker) % daemons.length;
        // A client retries a 503 (no leader reachable for a moment) with the same idempotency key.
        for (let tries = 0; ; tries += 1) {
          const response = await fetch(`${daemons[index]!.apiUrl}/api/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${tokens[index]}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'llama3.2:1b', prompt: `throughput ${n}`, idempotencyKey: `throughput-${n}` }),
            signal: AbortSignal.timeout(20_000),
          });
          const text = await response.text();
          if (response.status === 201 || response.status === 200) break;
          if (response.status === 503 && tries < 5) {
            retries += 1;
            await new Promise((resolve) => setTimeout(resolve, 200));
            continue;
          }
          failures += 1;
          if (failureSamples.length < 3) failureSamples.push(`${response.status} ${text.slice(0, 200)}`);
          break;
        }
      }
    }));
    const submittedMs = performance.now() - started;
    let last: ClusterStatus | null = null;
    await waitUntil(`${taskCount} tasks to complete`, async () => {
      const { body } = await daemons[0]!.api<ClusterStatus>('/api/status/cluster', { timeoutMs: 3_000 });
      last = body;
      return (body.tasks.completed ?? 0) + (body.tasks.failed ?? 0) >= taskCount - failures;
    }, 45_000, 50).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify((last as ClusterStatus | null)?.tasks)}`, { cause: error });
    });
    const totalMs = performance.now() - started;
    const counts = (last as unknown as ClusterStatus).tasks;
    console.log(`[measure] ${taskCount} tasks on 3 daemons (instant stand-ins): submitted in ${submittedMs.toFixed(0)} ms ` +
      `(${(taskCount / submittedMs * 1000).toFixed(0)}/s), all completed after ${totalMs.toFixed(0)} ms (${(taskCount / totalMs * 1000).toFixed(0)} tasks/s end to end); ` +
      `submit failures ${failures} (503s retried: ${retries}), failed tasks ${counts.failed}`);
    expect(failures, failureSamples.join('\n')).toBe(0);
    expect(counts.failed ?? 0).toBe(0);
    expect(counts.completed ?? 0).toBeGreaterThanOrEqual(taskCount);
    expect(taskCount / totalMs * 1000).toBeGreaterThan(50);
  }, 90_000);

  it(`schedules and runs ${taskCount} tasks that become ready at once`, async () => {
    // Every task waits for one gate task that runs a few seconds: they are all submitted
    // (at whatever rate the submit path allows) before the gate completes, and all become
    // ready in the same applied entry. Their completion times then measure scheduling and
    // execution alone, from the replicated timestamps.
    const { daemons } = cluster;
    const before = (await daemons[0]!.api<ClusterStatus>('/api/status/cluster', { timeoutMs: 3_000 })).body.tasks.completed ?? 0;
    const gate = await submitTo(daemons[0]!, { model: 'gate:1b', prompt: 'gate', options: { num_predict: 150 } });
    let next = 0;
    await Promise.all(Array.from({ length: submitters }, async (_, worker) => {
      while (next < taskCount) {
        const n = next++;
        const body = { model: 'llama3.2:1b', prompt: `gated ${n}`, dependsOn: [gate.id], idempotencyKey: `gated-${n}` };
        for (let tries = 0; ; tries += 1) {
          try {
            await submitTo(daemons[(n + worker) % daemons.length]!, body);
            break;
          } catch (error) {
            // Retry a 503 (no leader reachable for a moment), as a client would.
            if (tries >= 5 || !/answered 503/.test((error as Error).message)) throw error;
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        }
      }
    }));
    const gateTask = await waitUntil('the gate to complete', async () => {
      const { body } = await daemons[0]!.api<Task>(`/api/tasks/${gate.id}`, { timeoutMs: 3_000 });
      return body.status === 'completed' ? body : null;
    }, 30_000, 100);
    expect(gateTask.completedAt).not.toBeNull();
    const completed: Task[] = [];
    await waitUntil(`${taskCount} gated tasks to complete`, async () => {
      const { body } = await daemons[0]!.api<ClusterStatus>('/api/status/cluster', { timeoutMs: 3_000 });
      return (body.tasks.completed ?? 0) >= before + taskCount + 1;
    }, 45_000, 100);
    let cursor: string | null = null;
    do {
      const query: string = `/api/tasks?status=completed&limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`;
      const { body } = await daemons[0]!.api<{ tasks: Task[]; nextCursor: string | null }>(query, { timeoutMs: 10_000 });
      completed.push(...body.tasks.filter((task) => task.dependsOn.includes(gate.id)));
      cursor = body.nextCursor;
    } while (cursor !== null);
    expect(completed).toHaveLength(taskCount);
    const lastMs = Math.max(...completed.map((task) => task.completedAt!)) - gateTask.completedAt!;
    const perNode = new Map<string, number>();
    for (const task of completed) perNode.set(task.assignedNode!, (perNode.get(task.assignedNode!) ?? 0) + 1);
    console.log(`[measure] ${taskCount} tasks ready at once on 3 daemons (concurrency ${concurrency} each, instant stand-ins): all completed ` +
      `${lastMs} ms after the gate (${(taskCount / Math.max(1, lastMs) * 1000).toFixed(0)} tasks/s scheduled and run); per node ${[...perNode.values()].join('/')}`);
    // Where the time goes: waiting for a slot and the assignment (gate -> assignedAt, both
    // leader clocks), then execution and the completion report (assignedAt -> completedAt).
    const percentile = (values: number[], fraction: number) => values.sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * fraction))]!;
    const runMs = completed.map((task) => task.completedAt! - task.attempts[0]!.assignedAt);
    console.log(`[measure] per task, assignment to completion committed: median ${percentile(runMs, 0.5)} ms, p90 ${percentile(runMs, 0.9)} ms, max ${percentile(runMs, 1)} ms`);
    expect(perNode.size).toBe(3);
  }, 120_000);
});
