// Cluster formation when fresh daemons start at the same moment, each given the others
// in --bootstrap: they end up in exactly one cluster. A node with static peers waits to
// hear one before founding, and a cluster founded alone that holds nothing yet yields to
// another it sees (tests/FINDINGS.md, finding 1), so a transient split heals by itself.
// HIVEMESH_REPRO_ROUNDS repeats the start to show the rate.
import { afterEach, describe, expect, it } from 'vitest';
import { clusterStatus, outputTails, prepareDaemons, startAll, waitForAgreement, writeClusterKey } from '../support/cluster.ts';
import { listenAddressOf, ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

const rounds = Number(process.env.HIVEMESH_REPRO_ROUNDS ?? 1);

describe('three fresh daemons started together', () => {
  let group = new ProcessGroup();
  afterEach(async () => {
    await group.stopAll();
    group = new ProcessGroup();
  });

  it(`form exactly one cluster (${rounds} rounds)`, async () => {
    const splits: string[] = [];
    for (let round = 0; round < rounds; round++) {
      const secretFile = writeClusterKey(tempDir('formation-key'));
      const daemons = await prepareDaemons(group, ['f-a', 'f-b', 'f-c'].map((name) => ({ name: `${name}${round}`, mdns: false, secretFile })), { bootstrapAll: true });
      await startAll(daemons);
      // Every node ends up in one and the same cluster (a transient split may heal first).
      let last: string[] = [];
      const converged = await waitUntil('every daemon to be in one cluster', async () => {
        const statuses = await Promise.all(daemons.map((daemon) => clusterStatus(daemon)));
        last = statuses.map((status) => status?.clusterId ?? 'none');
        return statuses.every((status) => status !== null && status.clusterId !== null) && new Set(last).size === 1 ? true : null;
      }, 45_000, 200).catch(() => false);
      if (!converged) splits.push(`round ${round}: clusters ${last.join(', ')}\n${outputTails(daemons, 1_000)}`);
      else await waitForAgreement(daemons, 30_000, { voters: 3 });
      await group.stopAll();
      group = new ProcessGroup();
    }
    expect(splits, `${splits.length} of ${rounds} simultaneous starts formed more than one cluster`).toEqual([]);
  }, 60_000 * rounds);
});

describe('two clusters that each hold nothing yet', () => {
  const group = new ProcessGroup();
  afterEach(() => group.stopAll());

  it('merge into one when they meet, and a cluster with work never yields', async () => {
    const secretFile = writeClusterKey(tempDir('merge-key'));
    const a = await group.daemon({ name: 'merge-a', mdns: false, secretFile });
    const b = await group.daemon({ name: 'merge-b', mdns: false, secretFile });
    a.start();
    b.start();
    // Neither knows the other: each founds its own cluster.
    const idOf = async (daemon: typeof a) => (await clusterStatus(daemon))?.clusterId ?? null;
    const [first, second] = await Promise.all([a, b].map((daemon) => waitUntil(`${daemon.spec.name} to found`, () => idOf(daemon), 30_000, 200)));
    expect(first).not.toBe(second);
    // Give a some work: a cluster with tasks never gives itself up.
    const task = await a.api<{ id: string }>('/api/tasks', { method: 'POST', body: { model: 'hm-absent-model:1b', prompt: 'keep me' } });
    expect(task.status).toBe(201);
    // Restart b pointed at a: the two meet; b (empty) joins a's cluster, whatever the ids' order.
    await b.stop();
    b.spec.bootstrap = [await listenAddressOf(a)];
    b.start();
    await waitUntil('b to join a\'s cluster', async () => ((await idOf(b)) === first ? true : null), 45_000, 200)
      .catch((error: Error) => { throw new Error(`${error.message}\n--- a ---\n${a.output.slice(-4000)}\n--- b ---\n${b.output.slice(-4000)}`); });
    const seen = await waitUntil('the task on b', async () => {
      const response = await b.api('/api/tasks/' + task.body.id, { token: a.adminToken });
      return response.status === 200 ? true : null;
    }, 20_000, 200);
    expect(seen).toBe(true);
    expect(await idOf(a)).toBe(first);
  }, 120_000);
});
