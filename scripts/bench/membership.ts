// Membership benchmarks (issue 2) on a LAN of network namespaces, mDNS only (no
// --bootstrap): how fast a new node is seen alive by every node, how fast a SIGKILLed one
// is marked dead, the wire bytes per node at rest against the heartbeat payload, and the
// idle RSS of a daemon against a bare Node process of the same runtime.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setLogLevel } from '../../daemon/log.ts';
import { createLan, netnsUnavailableReason, type Lan } from '../../tests/lan/netns.ts';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { agentsStatus, prepareDaemons, startAll, waitForAgreement, writeClusterKey, type MeshDaemon } from '../../tests/support/cluster.ts';
import { addManagementLinks, type ManagedHost } from '../../tests/support/lan-management.ts';
import { ProcessGroup, tempDir, waitUntil } from '../../tests/support/processes.ts';
import { median, percentile, type BenchRow } from './report.ts';

const section = 'membership';
/** Third octet of the LAN (10.77.X) and of its management links (10.78.X); unused by the test suites. */
const subnet = 61;
/** What a daemon logs (at info) once its libp2p host listens: daemon/p2p/host.ts. */
const p2pListeningLine = 'p2p host listening';
/** Goals from issue 2. */
const joinGoalMs = 2_000;
const deadGoalMs = 5_000;
const rssGoalMegabytes = 150;
/** How often the observers are polled while a trial runs: the resolution of the join and dead times. */
const pollIntervalMs = 25;
/** Bound on one trial's wait for a join or a death, far above the goals. */
const trialTimeoutMs = 30_000;

/** Resident set size of a process from /proc (kernel-reported), in bytes. */
function rssBytesOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status has no VmRSS line: is the process a zombie?`);
  return Number(match[1]) * 1024;
}

/** RSS of a bare `node -e 'setInterval(...)'` with this runtime after it has idled `idleMs`. */
async function bareNodeRssBytes(idleMs: number): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    await new Promise((resolve) => setTimeout(resolve, idleMs));
    if (child.pid === undefined || child.exitCode !== null) throw new Error('the bare node process did not start or exited early');
    return rssBytesOf(child.pid);
  } finally {
    child.kill('SIGKILL');
  }
}

/** The node process id of a daemon: `ip netns exec` execs the command in place, so it is the child's pid; checked. */
function daemonPid(daemon: MeshDaemon): number {
  const pid = daemon.child?.pid;
  if (pid === undefined || !daemon.running) throw new Error(`${daemon.spec.name} is not running`);
  const commandLine = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  if (!commandLine.includes('main.ts')) throw new Error(`pid ${pid} of ${daemon.spec.name} runs "${commandLine.replaceAll('\0', ' ')}", not the daemon`);
  return pid;
}

/** Mean of every node's last heartbeat size as reported by one daemon's /metrics. */
async function heartbeatPayloadBytes(daemon: MeshDaemon): Promise<number> {
  const { status, body } = await daemon.api<string>('/metrics', { timeoutMs: 5_000 });
  if (status !== 200) throw new Error(`GET /metrics on ${daemon.spec.name} answered ${status}`);
  const sizes = String(body).split('\n').filter((line) => line.startsWith('hivemesh_heartbeat_bytes{')).map((line) => Number(line.split(' ').at(-1)));
  if (sizes.length === 0) throw new Error(`/metrics of ${daemon.spec.name} has no hivemesh_heartbeat_bytes series`);
  return sizes.reduce((sum, size) => sum + size, 0) / sizes.length;
}

/** Polls every observer until each reports `subject` in `state`; resolves with ms since `since`. */
async function timeUntilAll(observers: MeshDaemon[], subject: MeshDaemon, state: 'alive' | 'dead', since: number): Promise<number> {
  const seenAt: Array<number | null> = observers.map(() => null);
  await waitUntil(`${observers.length} observers to list ${subject.spec.name} ${state}`, async () => {
    await Promise.all(observers.map(async (observer, index) => {
      if (seenAt[index] !== null) return;
      const agents = await agentsStatus(observer, 1_000);
      if (agents?.nodes.find((node) => node.id === subject.nodeId)?.state === state) seenAt[index] = performance.now();
    }));
    return seenAt.every((at) => at !== null);
  }, trialTimeoutMs, pollIntervalMs);
  return Math.max(...(seenAt as number[])) - since;
}

/** Rows that say why nothing was measured; no goal verdict, since nothing was held against it. */
function unavailableRows(rows: BenchRow[], reason: string): void {
  const note = `(not measured: ${reason})`;
  rows.push({ section, name: `new node seen alive by all, from spawn, goal <= ${joinGoalMs} ms ${note}`, value: NaN, unit: 'ms' });
  rows.push({ section, name: `SIGKILLed node dead on all, goal <= ${deadGoalMs} ms ${note}`, value: NaN, unit: 'ms' });
  rows.push({ section, name: `bytes/s sent per node at rest ${note}`, value: NaN, unit: 'B/s' });
}

/** Without namespaces the idle RSS is still measured: one daemon alone on loopback. */
async function loopbackIdleRss(rows: BenchRow[]): Promise<void> {
  const group = new ProcessGroup();
  try {
    const daemon = await group.daemon({ name: 'rss-0', mdns: false });
    daemon.start();
    await waitUntil('the daemon to answer /health/live', async () => (await daemon.api('/health/live', { token: null, timeoutMs: 1_000 })).status === 200, 60_000, 100);
    const bare = bareNodeRssBytes(5_000);
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    const pid = daemon.child?.pid;
    if (pid === undefined || !daemon.running) throw new Error(`the daemon exited while idle: ${daemon.output.slice(-2_000)}`);
    const megabytes = rssBytesOf(pid) / 2 ** 20;
    rows.push({
      section, name: 'idle RSS of a daemon alone on loopback (no namespaces), >= 20 s idle', value: megabytes, unit: 'MB',
      baseline: { name: 'bare node -e setInterval', value: (await bare) / 2 ** 20 },
      goal: { text: `< ${rssGoalMegabytes} MB`, met: megabytes < rssGoalMegabytes },
    });
  } finally {
    await group.stopAll();
  }
}

export async function run(rows: BenchRow[], quick: boolean): Promise<void> {
  // The identities made in this process would log at info level.
  setLogLevel('error');
  const reason = await netnsUnavailableReason();
  if (reason !== null) {
    unavailableRows(rows, reason);
    await loopbackIdleRss(rows);
    return;
  }
  const trials = quick ? 3 : 12;
  const baseCount = 3;
  const group = new ProcessGroup();
  let lan: Lan | null = null;
  const standins: Standin[] = [];
  try {
    // One fresh host (namespace) per joining node, so every trial is a node never seen before.
    lan = await createLan({ tag: 'bmem', hostCount: baseCount + trials, subnet });
    const createdLan = lan;
    group.onCleanup(() => createdLan.destroy());
    const managed: ManagedHost[] = await addManagementLinks(lan, subnet);
    // Every host gets its own stand-in, reached over its management link, so heartbeats
    // carry a typical Ollama state (three models installed).
    for (const { host } of managed) {
      const standin = await startStandin({ host: `10.78.${subnet}.${4 * host.index + 1}`, port: 0, models: ['llama3.2:3b', 'qwen2.5:7b', 'nomic-embed-text'] });
      standins.push(standin);
    }
    const secretFile = writeClusterKey(tempDir('bench-membership-key'));
    const daemons = await prepareDaemons(group, managed.map(({ host, apiAddress }, index) => ({
      name: index < baseCount ? `mem-${index}` : `joiner-${index - baseCount}`,
      netns: host.namespace, host: host.address, apiHost: apiAddress, apiReach: apiAddress,
      mdns: true, secretFile, ollamaUrl: standins[index]!.url,
      // Joiners log at info: their "p2p host listening" line marks when the mesh side is up.
      ...(index < baseCount ? {} : { env: { HIVEMESH_LOG: 'info' } }),
    })), { bootstrapAll: false });
    const base = daemons.slice(0, baseCount);
    const joiners = daemons.slice(baseCount);
    await startAll(base, 60_000);
    const liveAt = performance.now();
    await waitForAgreement(base, 60_000, { voters: baseCount });

    // At rest: let the first seconds' catch-up traffic pass, then read the kernel counters
    // of every base host's eth0 over a window with no API polling (it runs on another link).
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const windowMs = 10_000;
    const before = await Promise.all(base.map((_, index) => lan!.hosts[index]!.counters()));
    const windowStarted = performance.now();
    const bareRssPromise = bareNodeRssBytes(windowMs);
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const after = await Promise.all(base.map((_, index) => lan!.hosts[index]!.counters()));
    const seconds = (performance.now() - windowStarted) / 1000;
    const txTotal = after.reduce((sum, counters, index) => sum + counters.txBytes - before[index]!.txBytes, 0);
    const txPerNodePerSecond = txTotal / base.length / seconds;
    const payloadBytes = await heartbeatPayloadBytes(base[0]!);
    rows.push({
      section, name: `bytes/s sent per node at rest, ${baseCount} nodes (eth0 counters over ${seconds.toFixed(0)} s)`, value: txPerNodePerSecond, unit: 'B/s',
      baseline: { name: 'one heartbeat payload x 1/s', value: payloadBytes },
    });

    // Idle RSS: every base daemon at least 20 s after it was live, against a bare Node.
    const idleMs = 20_000 - (performance.now() - liveAt);
    if (idleMs > 0) await new Promise((resolve) => setTimeout(resolve, idleMs));
    const rssMegabytes = base.map((daemon) => rssBytesOf(daemonPid(daemon)) / 2 ** 20);
    const bareMegabytes = (await bareRssPromise) / 2 ** 20;
    const rssMax = Math.max(...rssMegabytes);
    rows.push({
      section, name: `idle RSS of a daemon, max of ${baseCount} (${rssMegabytes.map((value) => value.toFixed(0)).join('/')} MB), >= 20 s idle`, value: rssMax, unit: 'MB',
      baseline: { name: 'bare node -e setInterval', value: bareMegabytes },
      goal: { text: `< ${rssGoalMegabytes} MB`, met: rssMax < rssGoalMegabytes },
    });
    // A daemon idle for two minutes gives its unused heap back (daemon/memory-trim.ts).
    const longIdleMs = 150_000 - (performance.now() - liveAt);
    if (!quick && longIdleMs > 0) {
      await new Promise((resolve) => setTimeout(resolve, longIdleMs));
      const later = base.map((daemon) => rssBytesOf(daemonPid(daemon)) / 2 ** 20);
      const laterMax = Math.max(...later);
      rows.push({
        section, name: `idle RSS of a daemon, max of ${baseCount} (${later.map((value) => value.toFixed(0)).join('/')} MB), >= 150 s idle (after the idle trim)`, value: laterMax, unit: 'MB',
        baseline: { name: 'bare node -e setInterval', value: bareMegabytes },
        goal: { text: `< ${rssGoalMegabytes} MB`, met: laterMax < rssGoalMegabytes },
      });
    }

    // Trials: a fresh node on its own host joins; once every base node lists it alive it
    // runs two more seconds (time to become a learner), then is SIGKILLed.
    const fromSpawn: number[] = [];
    const bootMs: number[] = [];
    const p2pBootMs: number[] = [];
    const fromHttpListening: number[] = [];
    const fromListening: number[] = [];
    const toDead: number[] = [];
    for (const joiner of joiners) {
      const spawnedAt = performance.now();
      joiner.start();
      let p2pListeningAt: number | null = null;
      const onOutput = (chunk: Buffer) => {
        if (p2pListeningAt === null && chunk.toString().includes(p2pListeningLine)) p2pListeningAt = performance.now();
      };
      joiner.child!.stdout?.on('data', onOutput);
      joiner.child!.stderr?.on('data', onOutput);
      let listeningAt: number | null = null;
      const listening = waitUntil(`${joiner.spec.name} to answer /health/live`, async () => {
        if (!joiner.running) throw new Error(`${joiner.spec.name} exited: ${joiner.output.slice(-2_000)}`);
        const { status } = await joiner.api('/health/live', { token: null, timeoutMs: 1_000 });
        if (status === 200) listeningAt = performance.now();
        return status === 200;
      }, trialTimeoutMs, pollIntervalMs);
      const seenMs = await timeUntilAll(base, joiner, 'alive', spawnedAt);
      await listening;
      fromSpawn.push(seenMs);
      bootMs.push(listeningAt! - spawnedAt);
      // Negative when the others saw it before its HTTP answered (membership starts first).
      fromHttpListening.push(spawnedAt + seenMs - listeningAt!);
      if (p2pListeningAt === null) throw new Error(`${joiner.spec.name} never logged "${p2pListeningLine}" (was the log line changed?)\n${joiner.output.slice(-2_000)}`);
      p2pBootMs.push(p2pListeningAt - spawnedAt);
      fromListening.push(spawnedAt + seenMs - p2pListeningAt);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const killedAt = performance.now();
      joiner.kill('SIGKILL');
      toDead.push(await timeUntilAll(base, joiner, 'dead', killedAt));
      await joiner.waitExit(10_000);
    }
    const label = `${trials} trials, mDNS only`;
    rows.push({ section, name: `new node seen alive by all, from spawn, median (${label})`, value: median(fromSpawn), unit: 'ms', goal: { text: `<= ${joinGoalMs} ms`, met: median(fromSpawn) <= joinGoalMs } });
    rows.push({ section, name: 'new node seen alive by all, from spawn, p95', value: percentile(fromSpawn, 95), unit: 'ms', goal: { text: `<= ${joinGoalMs} ms`, met: percentile(fromSpawn, 95) <= joinGoalMs } });
    rows.push({ section, name: 'new node seen alive by all, from spawn, max', value: Math.max(...fromSpawn), unit: 'ms' });
    rows.push({ section, name: 'new node: spawn until its p2p host listens (process boot), median', value: median(p2pBootMs), unit: 'ms' });
    rows.push({ section, name: 'new node seen alive by all, from its p2p host listening, median', value: median(fromListening), unit: 'ms', goal: { text: `<= ${joinGoalMs} ms`, met: median(fromListening) <= joinGoalMs } });
    rows.push({ section, name: 'new node seen alive by all, from its p2p host listening, p95', value: percentile(fromListening, 95), unit: 'ms', goal: { text: `<= ${joinGoalMs} ms`, met: percentile(fromListening, 95) <= joinGoalMs } });
    rows.push({ section, name: 'new node seen alive by all, from its p2p host listening, max', value: Math.max(...fromListening), unit: 'ms' });
    rows.push({ section, name: 'new node: spawn until its /health/live answers, median', value: median(bootMs), unit: 'ms' });
    rows.push({ section, name: 'new node seen alive by all, from its /health/live (< 0: seen before HTTP is up), median', value: median(fromHttpListening), unit: 'ms' });
    rows.push({ section, name: `SIGKILLed node dead on all, median (${label}, default timings)`, value: median(toDead), unit: 'ms', goal: { text: `<= ${deadGoalMs} ms`, met: median(toDead) <= deadGoalMs } });
    rows.push({ section, name: 'SIGKILLed node dead on all, p95', value: percentile(toDead, 95), unit: 'ms', goal: { text: `<= ${deadGoalMs} ms`, met: percentile(toDead, 95) <= deadGoalMs } });
    rows.push({ section, name: 'SIGKILLed node dead on all, max', value: Math.max(...toDead), unit: 'ms', goal: { text: `<= ${deadGoalMs} ms`, met: Math.max(...toDead) <= deadGoalMs } });
  } finally {
    await group.stopAll();
    for (const standin of standins) await standin.close();
  }
}
