// Cluster formation when fresh daemons start at the same moment, each given the others
// in --bootstrap: they should form exactly one cluster. Today they sometimes form two
// (tests/FINDINGS.md, "two clusters from a simultaneous start"), so this suite runs only
// with HIVEMESH_REPRO_FORMATION=1 (it repeats the start `rounds` times to show the rate);
// the other suites start one node first. Enable it by default once the finding is fixed.
import { afterEach, describe, expect, it } from 'vitest';
import { clusterStatus, outputTails, prepareDaemons, startAll, waitForAgreement, writeClusterKey } from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

const enabled = process.env.HIVEMESH_REPRO_FORMATION === '1';
const rounds = Number(process.env.HIVEMESH_REPRO_ROUNDS ?? 3);

describe.runIf(enabled)('three fresh daemons started together', () => {
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
      // Every node has joined some cluster once it reports a cluster id.
      const ids = await waitUntil('every daemon to be in a cluster', async () => {
        const statuses = await Promise.all(daemons.map((daemon) => clusterStatus(daemon)));
        return statuses.every((status) => status?.clusterId !== null && status !== null) ? statuses.map((status) => status!.clusterId!) : null;
      }, 20_000, 200);
      if (new Set(ids).size > 1) {
        splits.push(`round ${round}: clusters ${ids.join(', ')}\n${outputTails(daemons, 1_000)}`);
      } else {
        await waitForAgreement(daemons, 20_000, { voters: 3 });
      }
      await group.stopAll();
      group = new ProcessGroup();
    }
    expect(splits, `${splits.length} of ${rounds} simultaneous starts formed more than one cluster`).toEqual([]);
  }, 60_000 * rounds);
});
