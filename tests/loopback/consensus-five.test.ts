// Consensus with five daemons on loopback (five voters): SIGKILL of the leader is survived
// with a measured failover and no acknowledged write lost, and so is SIGKILL of the next
// leader -- two of five voters lost still leaves a quorum of three that takes writes.
// A writer keeps writing to every live node across each crash; nothing it was told was
// acknowledged may be missing afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ContinuousWriter, daemonById, formCluster, prepareDaemons, waitForAgreement, waitTasksEverywhere, writeClusterKey, writeUntilAcknowledged, type MeshDaemon,
} from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

describe('five daemons on loopback', () => {
  const group = new ProcessGroup();
  let daemons: MeshDaemon[];
  const acknowledged: string[] = [];

  beforeAll(async () => {
    const secretFile = writeClusterKey(tempDir('consensus5-key'));
    daemons = await prepareDaemons(group, ['c5-a', 'c5-b', 'c5-c', 'c5-d', 'c5-e'].map((name) => ({ name, mdns: false, secretFile })), { bootstrapAll: true });
    await formCluster(daemons, 50_000, { voters: 5 });
  }, 90_000);

  afterAll(() => group.stopAll());

  async function killLeaderAndMeasure(alive: MeshDaemon[], label: string): Promise<MeshDaemon[]> {
    const before = await waitForAgreement(alive, 15_000);
    const leader = daemonById(alive, before.leaderId);
    const survivors = alive.filter((daemon) => daemon !== leader);
    // Writes keep arriving at every live node, the leader included, across the crash.
    const writer = new ContinuousWriter();
    writer.start(alive, `across-${label.replaceAll(' ', '-')}`, { pauseMs: 100 });
    try {
      await waitUntil('writes to flow before the crash', () => writer.acknowledged.length >= 5, 15_000);
      const killedAt = performance.now();
      leader.kill('SIGKILL');
      await leader.waitExit(5_000);
      const after = await waitForAgreement(survivors, 15_000);
      const electedMs = performance.now() - killedAt;
      expect(after.leaderId).not.toBe(leader.nodeId);
      expect(after.term).toBeGreaterThan(before.term);
      const write = await writeUntilAcknowledged(survivors, `after-${label.replaceAll(' ', '-')}`, 15_000);
      const writableMs = performance.now() - killedAt;
      acknowledged.push(write.task.id);
      console.log(`[measure] 5 nodes, ${label}: new leader known to all ${survivors.length} survivors after ${electedMs.toFixed(0)} ms, first write acknowledged after ${writableMs.toFixed(0)} ms`);
      const mark = writer.acknowledged.length;
      await waitUntil('writes to flow again after the crash', () => writer.acknowledged.length >= mark + 5, 15_000);
    } finally {
      await writer.stop();
    }
    console.log(`[measure] 5 nodes, writes across the ${label}: ${writer.summary()}`);
    for (const status of writer.statusCounts.keys()) expect(['201', '503/no_leader', '503/no_quorum', '503/unavailable', '0']).toContain(status);
    acknowledged.push(...writer.acknowledged);
    await waitTasksEverywhere(survivors, acknowledged, 15_000);
    return survivors;
  }

  it('survives SIGKILL of the leader, then of the next leader, losing no acknowledged write', async () => {
    for (let index = 0; index < 5; index++) acknowledged.push((await writeUntilAcknowledged(daemons, `five-before-${index}`, 10_000)).task.id);
    await waitTasksEverywhere(daemons, acknowledged, 10_000);
    const survivors = await killLeaderAndMeasure(daemons, 'first leader killed');
    const lastThree = await killLeaderAndMeasure(survivors, 'second leader killed');
    expect(lastThree).toHaveLength(3);
  }, 75_000);
});
