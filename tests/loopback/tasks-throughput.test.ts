// Throughput of the whole task path on three real daemons with instant stand-ins: HTTP
// submit (forwarded to the leader), Raft commit, scheduling, execution, streaming into
// the buffer, completion report. Prints the measured rates; asserts every task completed
// and a floor far below the target, so a loaded CI machine does not fail it spuriously.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../protocol/api.ts';
import { ProcessGroup, waitUntil } from '../support/processes.ts';
import { runtimeWired, startTaskCluster, waitModelsGossiped, type TaskCluster } from './tasks-helpers.ts';

const taskCount = Number(process.env.HIVEMESH_THROUGHPUT_TASKS ?? 2_000);
const submitters = 96;

describe.skipIf(!runtimeWired)('task throughput on three daemons', () => {
  const group = new ProcessGroup();
  let cluster: TaskCluster;

  beforeAll(async () => {
    cluster = await startTaskCluster(group, ['tp-a', 'tp-b', 'tp-c'].map((name) => ({
      name, concurrency: 64,
      standin: { models: ['llama3.2:1b'], tokensPerSecond: 1_000_000, responseTokens: 4, maxConcurrency: 256, maxQueue: 2_048, logFile: null },
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
    const failureSamples: string[] = [];
    const started = performance.now();
    await Promise.all(Array.from({ length: submitters }, async (_, worker) => {
      while (next < taskCount) {
        const n = next++;
        const index = (n + worker) % daemons.length;
        const response = await fetch(`${daemons[index]!.apiUrl}/api/tasks`, {
          method: 'POST',
          headers: { authorization: `Bearer ${tokens[index]}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'llama3.2:1b', prompt: `throughput ${n}` }),
          signal: AbortSignal.timeout(20_000),
        });
        const text = await response.text();
        if (response.status !== 201) {
          failures += 1;
          if (failureSamples.length < 3) failureSamples.push(`${response.status} ${text.slice(0, 200)}`);
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
      `submit failures ${failures}, failed tasks ${counts.failed}`);
    expect(failures, failureSamples.join('\n')).toBe(0);
    expect(counts.failed ?? 0).toBe(0);
    expect(counts.completed ?? 0).toBeGreaterThanOrEqual(taskCount);
    expect(taskCount / totalMs * 1000).toBeGreaterThan(50);
  }, 90_000);
});
