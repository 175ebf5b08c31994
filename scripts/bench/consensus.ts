// Consensus benchmarks: replicated commit latency and throughput on three daemons in this
// process (real libp2p on loopback, real LevelDB with fsync), against raw synced LevelDB
// writes measured in the same run; simulator speed; failover and planned-stop times with
// real daemon processes (kill -9, SIGTERM) over many trials.
import { rmSync } from 'node:fs';
import { Level } from 'level';
import { loadConfig } from '../../daemon/config.ts';
import { Daemon } from '../../daemon/daemon.ts';
import { setLogLevel } from '../../daemon/log.ts';
import { encodeCommand } from '../../scheduler/state/commands.ts';
import { raftCore } from '../../scheduler/sim/core.ts';
import { runSeed } from '../../scheduler/sim/sim.ts';
import { freePort, listenAddressOf, ProcessGroup, tempDir, waitUntil, type DaemonProcess } from '../../tests/support/processes.ts';
import { mean, median, percentile, type BenchRow } from './report.ts';

const section = 'consensus';

async function rawLevelDb(writes: number, concurrency: number): Promise<{ latencyMs: number[]; perSecond: number }> {
  const dir = tempDir('bench-level');
  const db = new Level<string, string>(dir, { valueEncoding: 'utf8' });
  await db.open();
  const latencyMs: number[] = [];
  for (let index = 0; index < 300; index += 1) {
    const started = performance.now();
    await db.put(`k${index}`, 'x'.repeat(100), { sync: true });
    latencyMs.push(performance.now() - started);
  }
  const started = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < writes) {
      const index = next++;
      await db.put(`t${index}`, 'x'.repeat(100), { sync: true });
    }
  }));
  const perSecond = writes / ((performance.now() - started) / 1000);
  await db.close();
  rmSync(dir, { recursive: true, force: true });
  return { latencyMs, perSecond };
}

async function startInProcessCluster(size: number): Promise<{ daemons: Daemon[]; dirs: string[] }> {
  const daemons: Daemon[] = [];
  const dirs: string[] = [];
  let bootstrap: string | null = null;
  for (let index = 0; index < size; index += 1) {
    const dir = tempDir(`bench-node${index}`);
    dirs.push(dir);
    const args = ['--data-dir', dir, '--name', `bench-${index}`, '--api-host', '127.0.0.1', '--api-port', String(await freePort()),
      '--p2p-host', '127.0.0.1', '--p2p-port', String(await freePort()), '--no-mdns', '--ollama-url', 'http://127.0.0.1:9'];
    if (index > 0) args.push('--secret-file', `${dirs[0]}/cluster.key`, '--bootstrap', bootstrap!);
    const daemon = await Daemon.start(loadConfig(args, {}));
    if (index === 0) bootstrap = daemon.host.multiaddrs().find((address) => address.includes('/127.0.0.1/'))!;
    daemons.push(daemon);
  }
  await waitUntil('three voters and a leader', () => {
    const status = daemons[0]!.cluster.raft?.status();
    return status !== undefined && status.leader !== null && status.config.voters.length === size
      && daemons.every((daemon) => daemon.cluster.raft?.status().leader === status.leader);
  }, 60_000, 50);
  return { daemons, dirs };
}

export async function benchCommit(rows: BenchRow[], options: { writes: number }): Promise<void> {
  setLogLevel('error');
  const { daemons, dirs } = await startInProcessCluster(3);
  try {
    const leaderId = daemons[0]!.cluster.raft!.status().leader!;
    const leader = daemons.find((daemon) => daemon.nodeId === leaderId)!;
    const command = (value: number) => encodeCommand({ type: 'kv.put', key: `bench-${value % 100}`, value: 'x'.repeat(100) });
    const latencyMs: number[] = [];
    for (let index = 0; index < 300; index += 1) {
      const started = performance.now();
      await leader.cluster.propose(command(index));
      latencyMs.push(performance.now() - started);
    }
    const concurrency = 256;
    let next = 0;
    const started = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < options.writes) await leader.cluster.propose(command(next++));
    }));
    const perSecond = options.writes / ((performance.now() - started) / 1000);
    const raw = await rawLevelDb(options.writes, concurrency);
    rows.push({ section, name: 'commit latency p50, 3 nodes, fsync', value: median(latencyMs), unit: 'ms', baseline: { name: 'raw LevelDB synced put p50', value: median(raw.latencyMs) } });
    rows.push({ section, name: 'commit latency p99, 3 nodes, fsync', value: percentile(latencyMs, 99), unit: 'ms', baseline: { name: 'raw LevelDB synced put p99', value: percentile(raw.latencyMs, 99) } });
    rows.push({
      section, name: `committed entries/s, 3 nodes, ${concurrency} in flight`, value: perSecond, unit: 'entries/s',
      baseline: { name: `raw LevelDB synced puts/s, ${concurrency} in flight`, value: raw.perSecond },
      goal: { text: '>= 5,000 entries/s', met: perSecond >= 5_000 },
    });
  } finally {
    await Promise.all(daemons.map((daemon) => daemon.stop()));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

export function benchSimulator(rows: BenchRow[], options: { seconds: number }): void {
  const started = performance.now();
  let seeds = 0;
  let elections = 0;
  let oneRound = 0;
  let quiet = 0;
  let quietOneRound = 0;
  let failed = 0;
  while (performance.now() - started < options.seconds * 1000) {
    const result = runSeed({ seed: 1_000_000 + seeds, voters: 3, steps: 3_000, core: raftCore });
    seeds += 1;
    elections += result.stats.elections;
    oneRound += result.stats.electionsInOneRound;
    quiet += result.stats.electionsQuiet;
    quietOneRound += result.stats.electionsQuietInOneRound;
    if (!result.ok) failed += 1;
  }
  const perMinute = seeds / ((performance.now() - started) / 60_000);
  rows.push({ section, name: `simulator seeds/min (one core, ${seeds} seeds, ${failed} failed)`, value: perMinute, unit: 'seeds/min', goal: { text: '>= 1,000 seeds/min', met: perMinute >= 1_000 } });
  const share = elections === 0 ? 0 : (oneRound / elections) * 100;
  const quietShare = quiet === 0 ? 0 : (quietOneRound / quiet) * 100;
  rows.push({ section, name: `simulated elections in a quiet network decided in one round (${quiet})`, value: quietShare, unit: '%', goal: { text: '>= 99 %', met: quietShare >= 99 } });
  rows.push({ section, name: `all simulated elections, faults included (drops, partitions, crashes mid-election), one round (${elections})`, value: share, unit: '%' });
}

async function leaderOf(daemons: DaemonProcess[]): Promise<DaemonProcess> {
  return waitUntil('a leader', async () => {
    for (const daemon of daemons) {
      if (!daemon.running) continue;
      const { status, body } = await daemon.api<{ role: string; voters: string[] }>('/api/status/cluster', { timeoutMs: 2_000 }).catch(() => ({ status: 0, body: { role: '', voters: [] } }));
      if (status === 200 && body.role === 'leader') return daemon;
    }
    return null;
  }, 30_000, 20);
}

async function termOf(daemon: DaemonProcess): Promise<number> {
  const { body } = await daemon.api<{ term: number }>('/api/status/cluster', { timeoutMs: 2_000 });
  return body.term;
}

/** Time until some survivor commits a write (POST /api/tasks answers 201). */
async function timeToCommit(survivors: DaemonProcess[], since: number, token: string): Promise<number> {
  return waitUntil('a write to commit after the leader went away', async () => {
    const attempts = survivors.map(async (daemon) => {
      const { status } = await daemon.api('/api/tasks', { method: 'POST', token, body: { model: 'bench', prompt: 'failover probe' }, timeoutMs: 1_500 });
      if (status !== 201) throw new Error(`status ${status}`);
      return performance.now() - since;
    });
    return Promise.any(attempts).catch(() => null);
  }, 30_000, 10).catch(async (error: Error) => {
    // What each survivor thought and logged: the figure alone would not say why.
    const views = await Promise.all(survivors.map(async (daemon) => {
      const { body } = await daemon.api<Record<string, unknown>>('/api/status/cluster', { token, timeoutMs: 2_000 }).catch(() => ({ body: {} as Record<string, unknown> }));
      const nodes = await daemon.api<{ nodes: Array<{ name: string; state: string }> }>('/api/nodes', { token, timeoutMs: 2_000 }).then(({ body: list }) => list.nodes.map((node) => `${node.name}:${node.state}`).join(' ')).catch((failure: Error) => failure.message);
      const p2p = daemon.output.split('\n').filter((line) => /peer|dial|exchange/.test(line)).slice(-40).join('\n');
      return `--- ${daemon.spec.name}: role ${String(body['role'])}, term ${String(body['term'])}, leader ${String(body['leaderId'])}; sees ${nodes}\n${p2p}\n${daemon.output.slice(-4_000)}`;
    }));
    throw new Error(`${error.message}\n${views.join('\n')}`);
  });
}

export async function benchFailover(rows: BenchRow[], options: { trials: number; sizes: number[] }): Promise<void> {
  for (const size of options.sizes) {
    const group = new ProcessGroup();
    try {
      const daemons: DaemonProcess[] = [];
      const first = await group.daemon({ name: 'f0', mdns: false });
      first.start();
      const bootstrap = await listenAddressOf(first, 30_000);
      daemons.push(first);
      for (let index = 1; index < size; index += 1) {
        const daemon = await group.daemon({ name: `f${index}`, mdns: false, secretFile: first.clusterKeyPath, bootstrap: [bootstrap] });
        daemon.start();
        daemons.push(daemon);
      }
      const token = first.adminToken;
      await waitUntil(`${size} voters`, async () => {
        const { body } = await first.api<{ voters: string[] }>('/api/status/cluster');
        return body.voters.length === Math.min(size, 5) || null;
      }, 90_000, 200);
      // The token must work on every node before we start killing them.
      await waitUntil('the admin token everywhere', async () => {
        for (const daemon of daemons) if ((await daemon.api('/api/status/cluster', { token })).status !== 200) return null;
        return true;
      }, 30_000, 200);
      for (const mode of ['crash', 'planned'] as const) {
        const times: number[] = [];
        for (let trial = 0; trial < options.trials; trial += 1) {
          const leader = await leaderOf(daemons);
          const termBefore = await termOf(leader);
          const survivors = daemons.filter((daemon) => daemon !== leader && daemon.running);
          const since = performance.now();
          leader.kill(mode === 'crash' ? 'SIGKILL' : 'SIGTERM');
          times.push(await timeToCommit(survivors, since, token));
          if (process.env['HIVEMESH_BENCH_DETAIL'] === '1') {
            // A term that moved by more than one is an election that took several rounds.
            const termAfter = await termOf(await leaderOf(survivors));
            process.stderr.write(`bench: ${mode} ${size} nodes trial ${trial}: ${times[times.length - 1]!.toFixed(0)} ms, term ${termBefore} -> ${termAfter}\n`);
          }
          await leader.waitExit(20_000);
          leader.start();
          await waitUntil('the restarted node to rejoin', async () => {
            const { status, body } = await leader.api<{ leaderId: string | null }>('/health/ready', { token: null, timeoutMs: 1_000 }).catch(() => ({ status: 0, body: { leaderId: null } }));
            return status === 200 && body.leaderId !== null ? true : null;
          }, 60_000, 100).catch((error: Error) => {
            throw new Error(`${error.message} (trial ${trial}, ${mode}, node ${leader.spec.name})\n${leader.output.slice(-3000)}`);
          });
        }
        const label = mode === 'crash' ? `failover (leader kill -9 until a write commits), ${size} nodes, ${options.trials} trials` : `planned leader stop (SIGTERM, transfer) until a write commits, ${size} nodes, ${options.trials} trials`;
        const goalMs = mode === 'crash' ? 1_000 : 300;
        rows.push({ section, name: `${label}: median`, value: median(times), unit: 'ms' });
        rows.push({ section, name: `${label}: p99`, value: percentile(times, 99), unit: 'ms', goal: { text: `p99 <= ${goalMs} ms`, met: percentile(times, 99) <= goalMs } });
        rows.push({ section, name: `${label}: max`, value: Math.max(...times), unit: 'ms' });
        rows.push({ section, name: `${label}: mean`, value: mean(times), unit: 'ms' });
      }
    } finally {
      await group.stopAll();
    }
  }
}
