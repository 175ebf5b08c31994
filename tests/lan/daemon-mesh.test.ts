// The mesh of real daemons on a namespace LAN, discovered by mDNS alone (no --bootstrap):
// three daemons with one cluster key find each other; a fourth with another key is never
// admitted (sampled all along the suite); a SIGKILLed daemon goes suspect then dead on the
// others (timed); a restarted one (same data dir) keeps its node id and is alive again; a
// SIGTERMed one is gone from the others' lists at once. Skips where namespaces are missing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentsStatus, clusterStatus, outputTails, prepareDaemons, startAll, writeClusterKey, type MeshDaemon } from '../support/cluster.ts';
import { addManagementLinks } from '../support/lan-management.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';
import { createLan, netnsUnavailableReason, type Lan } from './netns.ts';

const unavailable = await netnsUnavailableReason();
if (unavailable !== null) console.warn(`[skip] daemon mesh LAN suite skipped: ${unavailable}`);

/** Membership timings the daemons run with (their defaults), for the bounds below. */
const suspectAfterMs = 2_500;
const deadAfterMs = 4_500;

describe.skipIf(unavailable !== null)('daemon mesh on a namespace LAN (mDNS only)', () => {
  const group = new ProcessGroup();
  let lan: Lan;
  let members: MeshDaemon[];
  let stranger: MeshDaemon;
  const sampling = { running: false, loop: Promise.resolve(), samples: 0, strangerSamples: 0, violations: [] as string[] };

  beforeAll(async () => {
    lan = await createLan({ tag: 'dmesh', hostCount: 4, subnet: 21 });
    group.onCleanup(() => lan.destroy());
    const managed = await addManagementLinks(lan, 21);
    const secretFile = writeClusterKey(tempDir('lanmesh-key'));
    const specs = managed.map(({ host, apiAddress }, index) => ({
      name: index < 3 ? `lan-${index}` : 'stranger',
      netns: host.namespace,
      host: host.address,
      apiHost: apiAddress,
      apiReach: apiAddress,
      mdns: true,
      // The stranger makes its own cluster key on first start.
      ...(index < 3 ? { secretFile } : {}),
    }));
    const daemons = await prepareDaemons(group, specs, { bootstrapAll: false });
    members = daemons.slice(0, 3);
    stranger = daemons[3]!;
    await startAll(daemons, 40_000);
    startIsolationSampling();
  }, 90_000);

  afterAll(async () => {
    sampling.running = false;
    await sampling.loop;
    await group.stopAll();
  });

  /** All along the suite: the stranger never appears in a member's list, nor they in its. */
  function startIsolationSampling(): void {
    sampling.running = true;
    const memberIds = new Set(members.map((member) => member.nodeId));
    sampling.loop = (async () => {
      while (sampling.running) {
        for (const member of members) {
          const agents = await agentsStatus(member, 1_000);
          if (agents === null) continue;
          sampling.samples += 1;
          if (agents.nodes.some((node) => node.id === stranger.nodeId)) sampling.violations.push(`${member.spec.name} listed the stranger`);
        }
        const seen = await agentsStatus(stranger, 1_000);
        if (seen !== null) {
          sampling.strangerSamples += 1;
          const foreign = seen.nodes.filter((node) => memberIds.has(node.id)).map((node) => node.name);
          if (foreign.length > 0) sampling.violations.push(`the stranger listed ${foreign.join(', ')}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
  }

  async function stateOn(observer: MeshDaemon, subject: MeshDaemon): Promise<string | null> {
    const agents = await agentsStatus(observer, 1_000);
    if (agents === null) return 'no-answer';
    return agents.nodes.find((node) => node.id === subject.nodeId)?.state ?? null;
  }

  it('three daemons find each other by mDNS alone', async () => {
    const started = performance.now();
    await waitUntil('each member to list the three members alive', async () => {
      for (const observer of members) {
        const agents = await agentsStatus(observer, 1_000);
        const alive = new Set((agents?.nodes ?? []).filter((node) => node.state === 'alive').map((node) => node.id));
        if (!members.every((member) => alive.has(member.nodeId))) return false;
      }
      return true;
    }, 30_000, 200).catch((error: Error) => {
      throw new Error(`${error.message}\n${outputTails([...members, stranger])}`);
    });
    console.log(`[measure] LAN, mDNS only: 3 daemons all listed each other alive ${(performance.now() - started).toFixed(0)} ms after all were live`);
    for (const observer of members) {
      const agents = (await agentsStatus(observer))!;
      const byId = new Map(agents.nodes.map((node) => [node.id, node]));
      for (const member of members) {
        expect(byId.get(member.nodeId)?.name).toBe(member.spec.name);
        expect(byId.get(member.nodeId)?.apiUrl).toBe(member.apiUrl);
      }
    }
  }, 45_000);

  it('a daemon with another cluster key is never admitted', async () => {
    // Give discovery time to have tried: the stranger hears the members' mDNS announcements
    // (its LAN interface receives traffic) for several heartbeat and mDNS periods.
    const before = await lan.hosts[3]!.counters();
    await waitUntil('the isolation sampler to cover 6 s more', async () => {
      const after = await lan.hosts[3]!.counters();
      return after.rxBytes > before.rxBytes && sampling.strangerSamples >= 20 && sampling.samples >= 60;
    }, 30_000, 500);
    const mark = sampling.samples;
    await waitUntil('24 more member samples', () => sampling.samples >= mark + 24, 20_000, 250);
    expect(sampling.violations).toEqual([]);
    const strangerView = await agentsStatus(stranger);
    expect(strangerView!.nodes.map((node) => node.id)).toEqual([stranger.nodeId]);
    const strangerCluster = await clusterStatus(stranger);
    const memberCluster = await clusterStatus(members[0]!);
    expect(strangerCluster!.clusterKeyFingerprint).not.toBe(memberCluster!.clusterKeyFingerprint);
    // Found by mDNS alone, the members' connections fail in the handshake: the stranger says why.
    const alert = await waitUntil('the stranger to raise handshake-failing', async () => {
      const status = await clusterStatus(stranger);
      return status?.alerts.find((candidate) => candidate.kind === 'handshake-failing') ?? null;
    }, 20_000, 250);
    expect(alert.message).toMatch(/cluster key/);
  }, 60_000);

  it('a daemon killed with SIGKILL goes suspect, then dead, on the others', async () => {
    const victim = members[2]!;
    const observers = members.slice(0, 2);
    const killedAt = performance.now();
    victim.kill('SIGKILL');
    await victim.waitExit(5_000);
    const suspectAt: Array<number | null> = observers.map(() => null);
    const deadAt: Array<number | null> = observers.map(() => null);
    await waitUntil('both observers to mark the victim dead', async () => {
      await Promise.all(observers.map(async (observer, index) => {
        const state = await stateOn(observer, victim);
        const now = performance.now() - killedAt;
        if ((state === 'suspect' || state === 'dead') && suspectAt[index] === null) suspectAt[index] = now;
        if (state === 'dead' && deadAt[index] === null) deadAt[index] = now;
      }));
      return deadAt.every((at) => at !== null);
    }, deadAfterMs + 8_000, 100);
    console.log(`[measure] LAN, SIGKILL: suspect after ${suspectAt.map((at) => at!.toFixed(0)).join('/')} ms, dead after ${deadAt.map((at) => at!.toFixed(0)).join('/')} ms (configured ${suspectAfterMs}/${deadAfterMs} ms of silence)`);
    for (let index = 0; index < observers.length; index++) {
      // Suspect before dead, and neither much before the configured silence could have passed
      // (the last heartbeat left up to one period, 1 s, before the kill; more on a busy host).
      expect(suspectAt[index]!).toBeLessThan(deadAt[index]!);
      expect(suspectAt[index]!).toBeGreaterThan(suspectAfterMs - 2_000);
      expect(deadAt[index]!).toBeGreaterThan(deadAfterMs - 2_000);
      expect(deadAt[index]!).toBeLessThan(deadAfterMs + 3_000);
    }
  }, 30_000);

  it('the killed daemon, restarted with its data dir, keeps its node id and is alive again', async () => {
    const victim = members[2]!;
    const observers = members.slice(0, 2);
    const restartedAt = performance.now();
    await startAll([victim], 30_000);
    const status = await clusterStatus(victim);
    expect(status!.nodeId).toBe(victim.nodeId);
    await waitUntil('the restarted daemon to be alive on the others and see them', async () => {
      for (const observer of observers) if (await stateOn(observer, victim) !== 'alive') return false;
      for (const observer of observers) if (await stateOn(victim, observer) !== 'alive') return false;
      return true;
    }, 20_000, 100);
    console.log(`[measure] LAN, restart after SIGKILL: alive on the others again ${(performance.now() - restartedAt).toFixed(0)} ms after spawn`);
    const agents = await agentsStatus(observers[0]!);
    // Same identity: no second entry for the node under a new id.
    expect(agents!.nodes.filter((node) => node.name === victim.spec.name).map((node) => node.id)).toEqual([victim.nodeId]);
  }, 45_000);

  it('a daemon stopped with SIGTERM is down on the others at once', async () => {
    // A leader takes the slowest way out (it hands over leadership before announcing its
    // departure): stop the leader if one of the first two members leads.
    const candidates = [members[0]!, members[1]!];
    const roles = await Promise.all(candidates.map((member) => clusterStatus(member)));
    const leaving = candidates[roles.findIndex((status) => status?.role === 'leader')] ?? members[1]!;
    const observers = members.filter((member) => member !== leaving);
    const stoppedAt = performance.now();
    leaving.kill('SIGTERM');
    const goneAt: Array<number | null> = observers.map(() => null);
    // Down at once, not after the 4.5 s of silence a crash takes: off the list, or, while the
    // Raft configuration still names it (a voter may come back), listed as dead.
    await waitUntil('both observers to mark the stopped daemon down', async () => {
      await Promise.all(observers.map(async (observer, index) => {
        if (goneAt[index] !== null) return;
        const state = await stateOn(observer, leaving);
        if (state === null || state === 'dead') goneAt[index] = performance.now() - stoppedAt;
      }));
      return goneAt.every((at) => at !== null);
    }, 10_000, 50);
    await leaving.waitExit(10_000);
    console.log(`[measure] LAN, SIGTERM of a ${leaving === members[1] && roles[1]?.role !== 'leader' ? 'non-leader' : 'leader'}: down on the others after ${goneAt.map((at) => at!.toFixed(0)).join('/')} ms`);
    for (const at of goneAt) expect(at!).toBeLessThan(1_500);
    expect(sampling.violations).toEqual([]);
  }, 30_000);
});
