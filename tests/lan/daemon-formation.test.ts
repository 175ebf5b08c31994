// Cluster formation on a namespace LAN (mDNS only) when fresh daemons could not hear each
// other at first: each host starts cut off the bridge, so each daemon founds a cluster of
// its own; once the cables are in, the split must heal into one cluster by itself as long
// as no cluster holds work, and a cluster that holds work must be the one that is joined,
// its tasks kept, whichever cluster id orders first (tests/FINDINGS.md #1, #2). Skips
// where namespaces are unavailable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  clusterStatus, outputTails, prepareDaemons, startAll, submitTask, waitForAgreement, waitTasksEverywhere, writeClusterKey, type MeshDaemon,
} from '../support/cluster.ts';
import { addManagementLinks, type ManagedHost } from '../support/lan-management.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';
import { createLan, netnsUnavailableReason, type Lan } from './netns.ts';

const unavailable = await netnsUnavailableReason();
if (unavailable !== null) console.warn(`[skip] daemon formation LAN suite skipped: ${unavailable}`);

describe.skipIf(unavailable !== null)('clusters founded apart on a namespace LAN', () => {
  const group = new ProcessGroup();
  let lan: Lan;
  let managed: ManagedHost[];

  beforeAll(async () => {
    lan = await createLan({ tag: 'dform', hostCount: 2, subnet: 23 });
    group.onCleanup(() => lan.destroy());
    managed = await addManagementLinks(lan, 23);
  }, 60_000);

  afterAll(() => group.stopAll());

  /** Two fresh daemons, one per host, each started while its host is cut off the LAN. */
  async function startApart(label: string): Promise<MeshDaemon[]> {
    const secretFile = writeClusterKey(tempDir(`form-${label}-key`));
    const daemons = await prepareDaemons(group, managed.map(({ host, apiAddress }, index) => ({
      name: `${label}-${index}`, netns: host.namespace, host: host.address, apiHost: apiAddress, apiReach: apiAddress, mdns: true, secretFile,
    })), { bootstrapAll: false });
    for (const host of lan.hosts) await lan.disconnect(host);
    await startAll(daemons, 40_000);
    // Each alone: founds its own cluster after the discovery window and leads it.
    for (const daemon of daemons) await waitForAgreement([daemon], 30_000, { voters: 1 });
    const ids = await Promise.all(daemons.map(async (daemon) => (await clusterStatus(daemon))!.clusterId));
    expect(new Set(ids).size).toBe(2);
    return daemons;
  }

  async function stopAll(daemons: MeshDaemon[]): Promise<void> {
    await Promise.all(daemons.map((daemon) => daemon.stop()));
  }

  it('two empty clusters founded apart merge into one once they see each other', async () => {
    const daemons = await startApart('empty');
    try {
      const healedAt = performance.now();
      for (const host of lan.hosts) await lan.reconnect(host);
      const agreement = await waitForAgreement(daemons, 40_000).catch((error: Error) => {
        throw new Error(`${error.message}\n${outputTails(daemons)}`);
      });
      console.log(`[measure] LAN: two empty clusters founded apart became one ${(performance.now() - healedAt).toFixed(0)} ms after the cables were in`);
      // The second-cluster alert is for an operator to act on: once merged it must go away.
      await waitUntil('the second-cluster alerts to clear', async () => {
        const statuses = await Promise.all(daemons.map((daemon) => clusterStatus(daemon)));
        return statuses.every((status) => status !== null && status.clusterId === agreement.clusterId && status.alerts.every((alert) => alert.kind !== 'second-cluster'));
      }, 30_000, 250);
      console.log(`[measure] LAN: second-cluster alerts cleared ${(performance.now() - healedAt).toFixed(0)} ms after the cables were in`);
      const write = await submitTask(daemons[1]!, 'after-merge', 10_000);
      expect(write.status).toBe(201);
      await waitTasksEverywhere(daemons, [write.task!.id], 10_000);
    } finally {
      await stopAll(daemons);
    }
  }, 90_000);

  it('a cluster holding work is the one joined, whichever id orders first, and keeps its tasks', async () => {
    const daemons = await startApart('work');
    try {
      // The hard case on purpose: the work goes to the cluster whose id orders last, so an
      // order-only rule would make the other, empty, cluster keep itself and wait forever.
      const ids = await Promise.all(daemons.map(async (daemon) => (await clusterStatus(daemon))!.clusterId!));
      const holderIndex = ids[0]! > ids[1]! ? 0 : 1;
      const holder = daemons[holderIndex]!;
      const written = await submitTask(holder, 'held-work', 10_000);
      expect(written.status).toBe(201);
      const holderCluster = ids[holderIndex]!;
      const emptyCluster = ids[1 - holderIndex]!;
      expect(emptyCluster < holderCluster).toBe(true);
      const healedAt = performance.now();
      for (const host of lan.hosts) await lan.reconnect(host);
      const agreement = await waitForAgreement(daemons, 40_000).catch(async (error: Error) => {
        const statuses = await Promise.all(daemons.map((daemon) => clusterStatus(daemon)));
        throw new Error(`${error.message}\n(cluster with work ${holderCluster}, empty cluster ${emptyCluster}, which orders first)\n` +
          `alerts: ${JSON.stringify(statuses.map((status) => status?.alerts))}\n${outputTails(daemons)}`);
      });
      console.log(`[measure] LAN: an empty cluster joined the cluster holding work ${(performance.now() - healedAt).toFixed(0)} ms after the cables were in`);
      expect(agreement.clusterId).toBe(holderCluster);
      await waitTasksEverywhere(daemons, [written.task!.id], 10_000);
    } finally {
      await stopAll(daemons);
    }
  }, 90_000);
});
