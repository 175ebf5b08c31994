// A node that was down while the leader compacted its log catches up from a snapshot of a
// state larger than one 16 MiB frame (sent in pieces), and is a working voter afterwards:
// with it, the cluster survives the loss of another node. (Before, every snapshot over
// 4 MiB was dropped at the sender: the node never caught up, and losing one more node
// stopped all writes.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../protocol/api.ts';
import { absentModel, clusterStatus, killAndWait, waitForAgreement, type MeshDaemon } from '../support/cluster.ts';
import { ProcessGroup, waitUntil } from '../support/processes.ts';
import { startTaskCluster, submit, type TaskCluster } from './tasks-helpers.ts';

describe('catching up from a large snapshot', () => {
  const group = new ProcessGroup();
  let cluster: TaskCluster;

  beforeAll(async () => {
    cluster = await startTaskCluster(group, ['snap-a', 'snap-b', 'snap-c'].map((name) => ({
      name, standin: { models: ['llama3.2:1b'] }, extraArgs: ['--snapshot-every-entries', '200'],
    })));
  }, 60_000);

  afterAll(async () => {
    await group.stopAll();
  }, 30_000);

  it('a node down during compaction receives a 17 MiB snapshot, then keeps the cluster writable when another node dies', async () => {
    const agreement = await waitForAgreement(cluster.daemons, 15_000, { voters: 3 });
    const leader = cluster.daemons.find((daemon) => daemon.nodeId === agreement.leaderId)!;
    const [lagging, other] = cluster.daemons.filter((daemon) => daemon !== leader) as [MeshDaemon, MeshDaemon];
    await killAndWait(lagging, 'SIGKILL');

    // Tasks for a model no node has stay queued, prompts and all: 72 of 240 KiB make the
    // state about 17 MiB; 300 small ones after them pass the 200-entry snapshot period.
    const ids: string[] = [];
    const bigPrompt = 'x'.repeat(240 * 1024);
    for (let n = 0; n < 72; n += 1) ids.push((await submit(leader, { model: absentModel, prompt: `${n} ${bigPrompt}` }, 20_000)).id);
    for (let n = 0; n < 300; n += 1) ids.push((await submit(leader, { model: absentModel, prompt: `small ${n}` })).id);

    lagging.start();
    const caughtUp = await waitUntil('the restarted node to catch up with the leader', async () => {
      const [mine, theirs] = await Promise.all([clusterStatus(lagging), clusterStatus(leader)]);
      // Applied, not just committed: on a loaded machine the 17 MiB snapshot and the entries
      // after it are applied a while after the commit index arrives.
      return mine !== null && theirs !== null && mine.leaderId === leader.nodeId && mine.appliedIndex >= theirs.commitIndex ? mine : null;
    }, 45_000, 250) as ClusterStatus;
    expect(caughtUp.tasks.queued).toBe(ids.length);
    const listed = await lagging.api<{ id: string }>(`/api/tasks/${ids[0]}`);
    expect(listed.status).toBe(200);

    // The caught-up node is a voter that works: without `other`, leader and it are a quorum.
    await killAndWait(other, 'SIGKILL');
    const after = await submit(leader, { model: absentModel, prompt: 'after the second loss' }, 15_000);
    await waitUntil('the caught-up node to apply the write', async () => (await lagging.api(`/api/tasks/${after.id}`)).status === 200, 10_000, 100);
  }, 150_000);
});
