// A single hivemesh daemon alone (no peers, no mDNS) forms a working cluster of one: it
// becomes ready, leads with itself as the only voter, and acknowledges and serves writes.
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, formCluster, prepareDaemons, submitTask } from '../support/cluster.ts';
import { ProcessGroup } from '../support/processes.ts';

describe('a single daemon alone', () => {
  const group = new ProcessGroup();
  afterAll(() => group.stopAll());

  it('forms a cluster of one that is ready and accepts writes', async () => {
    const [solo] = await prepareDaemons(group, [{ name: 'solo', mdns: false }], { bootstrapAll: false });
    const started = performance.now();
    const agreement = await formCluster([solo!], 45_000, { voters: 1 });
    console.log(`[measure] a lone fresh daemon was leader of its own cluster ${(performance.now() - started).toFixed(0)} ms after spawn (3 s discovery window included)`);
    expect(agreement.leaderId).toBe(solo!.nodeId);
    const ready = await solo!.api<{ status: string; leaderId: string }>('/health/ready', { token: null });
    expect(ready.status).toBe(200);
    expect(ready.body.leaderId).toBe(solo!.nodeId);
    const write = await submitTask(solo!, 'solo-write');
    expect(write.status).toBe(201);
    expect(write.task!.status).toBe('queued');
    const read = await solo!.api<{ id: string; title: string }>(`/api/tasks/${write.task!.id}`);
    expect(read.status).toBe(200);
    expect(read.body.title).toBe('solo-write');
    const status = await clusterStatus(solo!);
    expect(status!.voters).toEqual([solo!.nodeId]);
    expect(status!.tasks.total).toBe(1);
  }, 60_000);
});
