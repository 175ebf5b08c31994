// The node list keeps every node the consensus configuration names: a voter that stopped is
// listed dead (with its last known facts) by a node that heard it, and by a node restarted
// since, which never heard it, as dead with its id, the name it wrote into the replicated
// state, and neverHeard. Before, a stopped voter
// vanished from /api/status/agents at once (and a crashed one after the 10 min forget
// period) while `hivemesh status` still listed it among the voters.
import type { NodeStatus } from '../../protocol/api.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { agentsStatus, clusterStatus, daemonById, formCluster, outputTails, prepareDaemons, startAll, submitTask, waitForAgreement, writeClusterKey } from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

describe('a stopped voter in the node list', () => {
  const group = new ProcessGroup();
  afterAll(() => group.stopAll());

  it('stays listed, dead, on a node that heard it and on one restarted since', async () => {
    const secretFile = writeClusterKey(tempDir('voters-listed-key'));
    const daemons = await prepareDaemons(group, ['vl-a', 'vl-b', 'vl-c'].map((name) => ({ name, mdns: false, secretFile })), { bootstrapAll: true });
    const agreement = await formCluster(daemons, 40_000, { voters: 3 });
    const followers = daemons.filter((daemon) => daemon.nodeId !== agreement.leaderId);
    const leader = daemonById(daemons, agreement.leaderId);
    const stopped = followers[0]!;
    const restarted = followers[1]!;

    // Each member writes its name and its admin token into the replicated state, retrying
    // every second, in the same turn: once its token works on the leader, and a second more,
    // its name is there too (on a loaded machine formation can finish before either is in).
    await waitUntil('the stopped-to-be voter\'s writes to be replicated', async () => (await leader.api('/api/status/cluster', { token: stopped.adminToken })).status === 200, 15_000, 200);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await stopped.stop();
    const entryOn = async (daemon: typeof leader): Promise<NodeStatus | null> => (await agentsStatus(daemon))?.nodes.find((node) => node.id === stopped.nodeId) ?? null;
    const heard = await waitUntil('the leader to list the stopped voter as dead', async () => {
      const entry = await entryOn(leader);
      return entry?.state === 'dead' ? entry : null;
    }, 10_000, 200).catch((error: Error) => { throw new Error(`${error.message}\n${outputTails(daemons)}`); });
    expect(heard).toMatchObject({ name: stopped.spec.name, raftRole: 'follower', self: false });
    expect(heard.neverHeard).toBeUndefined();
    const leaderStatus = await clusterStatus(leader);
    expect(leaderStatus!.voters).toContain(stopped.nodeId);
    expect(leaderStatus!.nodes).toMatchObject({ alive: 2, dead: 1, total: 3 });

    // A node restarted after the voter stopped never hears from it, and still lists it.
    await restarted.stop();
    await startAll([restarted]);
    await waitForAgreement([leader, restarted], 30_000);
    const unheard = await waitUntil('the restarted node to list the stopped voter as dead', async () => {
      const entry = await entryOn(restarted);
      return entry?.state === 'dead' ? entry : null;
    }, 15_000, 200).catch((error: Error) => { throw new Error(`${error.message}\n${outputTails(daemons)}`); });
    // Its name comes from the replicated state (each member writes its own), so a pin by name
    // finds it too, and is refused as dead.
    expect(unheard).toMatchObject({ id: stopped.nodeId, name: stopped.spec.name, raftRole: 'follower', neverHeard: true, self: false });
    const queued = await submitTask(restarted, 'pin-to-the-unheard');
    expect(queued.status).toBe(201);
    const pin = await restarted.api<{ error: { code: string; message: string } }>(`/api/tasks/${queued.task!.id}/assign`, { method: 'PUT', body: { node: stopped.spec.name } });
    expect(pin.status).toBe(409);
    expect(pin.body.error.message).toMatch(new RegExp(`^node ${stopped.spec.name} \\(${stopped.nodeId}\\) is dead \\(never heard from by this node\\)`));
    expect(Date.parse(unheard.lastSeen)).toBeGreaterThan(0);
    const restartedStatus = await clusterStatus(restarted);
    expect(restartedStatus!.voters).toContain(stopped.nodeId);
    expect(restartedStatus!.nodes).toMatchObject({ alive: 2, dead: 1, total: 3 });
  }, 120_000);
});
