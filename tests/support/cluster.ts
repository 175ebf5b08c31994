// Helpers for the multi-daemon mesh and consensus suites: nodes whose identities (peer
// keys) and cluster key exist before they start, so every node can be given the full
// static peer list at once (no race over who founds the cluster), plus status probes,
// task writes and waits on cluster agreement. Everything is bounded in time.
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { AgentsStatus, ClusterStatus } from '../../protocol/api.ts';
import type { Task } from '../../protocol/tasks.ts';
import { loadOrCreatePeerKey } from '../../daemon/p2p/identity.ts';
import { DaemonProcess, tempDir, waitUntil, type DaemonSpec, type ProcessGroup } from './processes.ts';

/** A model no node has: tasks for it stay queued, which is all the consensus suites need. */
export const absentModel = 'hm-absent-model:1b';

/** Writes a fresh cluster key file (the pnet format of daemon/secrets.ts) and returns its path. */
export function writeClusterKey(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'cluster.key');
  writeFileSync(path, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return path;
}

/** Creates `<dataDir>/peer.key` the way the daemon would, and returns the node id it gives. */
export async function prepareIdentity(dataDir: string): Promise<string> {
  const key = await loadOrCreatePeerKey(dataDir);
  return peerIdFromPrivateKey(key).toString();
}

/**
 * A daemon whose HTTP API may listen elsewhere than its libp2p address: in a network
 * namespace the API listens on every interface and the test reaches it over a
 * management link, while libp2p stays on the LAN interface.
 */
export class MeshDaemon extends DaemonProcess {
  nodeId = '';
  apiHostOverride: string | null = null;
  apiReachOverride: string | null = null;

  override get apiUrl(): string {
    return `http://${this.apiReachOverride ?? this.spec.host}:${this.spec.apiPort}`;
  }

  override args(): string[] {
    const args = super.args();
    if (this.apiHostOverride !== null) {
      const at = args.indexOf('--api-host');
      args[at + 1] = this.apiHostOverride;
      args.push('--api-url', this.apiUrl);
    }
    return args;
  }

  get multiaddr(): string {
    return `/ip4/${this.spec.host}/tcp/${this.spec.p2pPort}/p2p/${this.nodeId}`;
  }
}

export interface MeshNodeSpec extends DaemonSpec {
  apiHost?: string;
  apiReach?: string;
}

/** Builds (does not start) daemons with identities made in advance; registered with the group. */
export async function prepareDaemons(group: ProcessGroup, specs: MeshNodeSpec[], options: { bootstrapAll: boolean }): Promise<MeshDaemon[]> {
  const daemons: MeshDaemon[] = [];
  for (const spec of specs) {
    const dataDir = spec.dataDir ?? tempDir(spec.name);
    if (spec.dataDir === undefined) group.onCleanup(() => removeDir(dataDir));
    const template = await group.daemon({ ...spec, dataDir });
    // Replace the plain DaemonProcess by a MeshDaemon with the same settings.
    group.daemons.splice(group.daemons.indexOf(template), 1);
    const daemon = new MeshDaemon({ ...template.spec });
    daemon.nodeId = await prepareIdentity(dataDir);
    if (spec.apiHost !== undefined) daemon.apiHostOverride = spec.apiHost;
    if (spec.apiReach !== undefined) daemon.apiReachOverride = spec.apiReach;
    group.daemons.push(daemon);
    daemons.push(daemon);
  }
  if (options.bootstrapAll) {
    for (const daemon of daemons) daemon.spec.bootstrap = daemons.filter((other) => other !== daemon).map((other) => other.multiaddr);
  }
  return daemons;
}

async function removeDir(dir: string): Promise<void> {
  const { rmSync } = await import('node:fs');
  rmSync(dir, { recursive: true, force: true });
}

/** Short per-request timeout: a stopped (SIGSTOP) daemon must not stall a sampling loop. */
const probeTimeoutMs = 1_500;

export async function clusterStatus(daemon: DaemonProcess, timeoutMs = probeTimeoutMs): Promise<ClusterStatus | null> {
  try {
    const { status, body } = await daemon.api<ClusterStatus>('/api/status/cluster', { timeoutMs });
    return status === 200 ? body : null;
  } catch {
    return null;
  }
}

export async function agentsStatus(daemon: DaemonProcess, timeoutMs = probeTimeoutMs): Promise<AgentsStatus | null> {
  try {
    const { status, body } = await daemon.api<AgentsStatus>('/api/status/agents', { timeoutMs });
    return status === 200 ? body : null;
  } catch {
    return null;
  }
}

export interface Agreement {
  clusterId: string;
  leaderId: string;
  term: number;
  statuses: ClusterStatus[];
}

/**
 * Waits until every given daemon reports the same cluster id and the same known leader,
 * the leader is one of them, and the voter set has `voters` members (when given).
 */
export async function waitForAgreement(daemons: DaemonProcess[], timeoutMs: number, options: { voters?: number } = {}): Promise<Agreement> {
  let last: Array<ClusterStatus | null> = [];
  try {
    return await waitUntil('the daemons to agree on one cluster and leader', async () => {
      last = await Promise.all(daemons.map((daemon) => clusterStatus(daemon)));
      if (last.some((status) => status === null)) return null;
      const statuses = last as ClusterStatus[];
      const first = statuses[0]!;
      if (first.clusterId === null || first.leaderId === null) return null;
      if (!statuses.every((status) => status.clusterId === first.clusterId && status.leaderId === first.leaderId)) return null;
      const leader = statuses.find((status) => status.nodeId === first.leaderId);
      if (leader === undefined || leader.role !== 'leader') return null;
      if (options.voters !== undefined && leader.voters.length !== options.voters) return null;
      return { clusterId: first.clusterId, leaderId: first.leaderId, term: leader.term, statuses };
    }, timeoutMs, 150);
  } catch (error) {
    const summary = last.map((status, index) => status === null
      ? `${daemons[index]!.spec.name}: no answer`
      : `${status.nodeName}: cluster=${status.clusterId} leader=${status.leaderId} role=${status.role} term=${status.term} commit=${status.commitIndex} voters=${status.voters.length} learners=${status.learners.length}`).join('\n  ');
    throw new Error(`${(error as Error).message}\n  ${summary}\n${outputTails(daemons)}`, { cause: error });
  }
}

/** The last lines each daemon printed, for failure messages. */
export function outputTails(daemons: DaemonProcess[], chars = 1_500): string {
  return daemons.map((daemon) => `--- ${daemon.spec.name} (${daemon.running ? 'running' : 'exited'}) ---\n${daemon.output.slice(-chars)}`).join('\n');
}

export interface WriteOutcome {
  status: number;
  task: Task | null;
  errorCode: string | null;
  /** The daemon answered a replay of an earlier write with the same idempotency key. */
  replayed?: boolean;
}

/**
 * POST /api/tasks; the idempotency key is unique unless given (a retry passes the first
 * one's). A network failure or client timeout is status 0.
 */
export async function submitTask(daemon: DaemonProcess, title: string, timeoutMs = 8_000, idempotencyKey = `${title}-${randomBytes(4).toString('hex')}`): Promise<WriteOutcome> {
  try {
    const { status, body, headers } = await daemon.api<Task & { error?: { code: string } }>('/api/tasks', {
      method: 'POST',
      body: { model: absentModel, prompt: `write ${title}`, title, idempotencyKey },
      timeoutMs,
    });
    if (status === 201) return { status, task: body, errorCode: null, replayed: headers.get('idempotent-replayed') === 'true' };
    return { status, task: null, errorCode: (body as { error?: { code: string } }).error?.code ?? null };
  } catch {
    return { status: 0, task: null, errorCode: null };
  }
}

/** Submits until one write is acknowledged (201); returns the task and the time it took. */
export async function writeUntilAcknowledged(daemons: DaemonProcess[], title: string, timeoutMs: number): Promise<{ task: Task; elapsedMs: number; via: DaemonProcess }> {
  const started = performance.now();
  let turn = 0;
  const outcomes: string[] = [];
  const result = await waitUntil(`a write "${title}" to be acknowledged`, async () => {
    const daemon = daemons[turn++ % daemons.length]!;
    const outcome = await submitTask(daemon, title, 4_000);
    if (outcomes.length < 50) outcomes.push(`${daemon.spec.name}:${outcome.status}${outcome.errorCode === null ? '' : `/${outcome.errorCode}`}`);
    return outcome.task === null ? null : { task: outcome.task, via: daemon };
  }, timeoutMs, 50).catch((error: Error) => {
    throw new Error(`${error.message}; outcomes: ${outcomes.join(' ')}`, { cause: error });
  });
  return { ...result, elapsedMs: performance.now() - started };
}

/** Waits until every daemon answers GET /api/tasks/:id with 200 for each id. */
export async function waitTasksEverywhere(daemons: DaemonProcess[], taskIds: string[], timeoutMs: number): Promise<void> {
  const missing = new Set<string>();
  await waitUntil('every acknowledged task to be readable on every node', async () => {
    missing.clear();
    for (const daemon of daemons) {
      for (const id of taskIds) {
        const found = await daemon.api<Task>(`/api/tasks/${id}`, { timeoutMs: probeTimeoutMs }).then((answer) => answer.status === 200 && answer.body.id === id, () => false);
        if (!found) missing.add(`${daemon.spec.name}:${id}`);
      }
    }
    return missing.size === 0;
  }, timeoutMs, 200).catch((error: Error) => {
    throw new Error(`${error.message}; missing: ${[...missing].slice(0, 20).join(', ')}`, { cause: error });
  });
}

/** Starts daemons and waits until each answers /health/live. */
export async function startAll(daemons: DaemonProcess[], timeoutMs = 30_000): Promise<void> {
  for (const daemon of daemons) daemon.start();
  await Promise.all(daemons.map((daemon) => waitUntil(`${daemon.spec.name} to be live`, async () => {
    if (!daemon.running) throw new Error(`${daemon.spec.name} exited: ${daemon.output.slice(-2_000)}`);
    return (await daemon.api('/health/live', { token: null, timeoutMs: probeTimeoutMs })).status === 200;
  }, timeoutMs, 100)));
}

/** Waits until the daemon's child process has exited. */
export async function killAndWait(daemon: DaemonProcess, signal: NodeJS.Signals): Promise<void> {
  daemon.kill(signal);
  await daemon.waitExit(15_000);
}

/**
 * Starts the first daemon alone until it leads, then the rest, which join its cluster: the
 * way an operator brings up a LAN (first machine with no peers, the others pointed at
 * it). The first one gets no --bootstrap list, so it founds after the discovery window
 * instead of waiting for static peers that are not started yet; the others dial it.
 */
export async function formCluster(daemons: DaemonProcess[], timeoutMs = 40_000, options: { voters?: number } = {}): Promise<Agreement> {
  const [first, ...rest] = daemons;
  first!.spec.bootstrap = [];
  await startAll([first!], timeoutMs);
  await waitForAgreement([first!], timeoutMs);
  await startAll(rest, timeoutMs);
  return waitForAgreement(daemons, timeoutMs, options);
}

export function daemonById(daemons: MeshDaemon[], nodeId: string): MeshDaemon {
  const daemon = daemons.find((candidate) => candidate.nodeId === nodeId);
  if (daemon === undefined) throw new Error(`no daemon of this test has node id ${nodeId}`);
  return daemon;
}

export interface RoleSample {
  node: string;
  atMs: number;
  role: string;
  term: number;
  leaderId: string | null;
  commitIndex: number;
}

/** Samples most kept: at ~10 per second per node this covers minutes. */
const roleSamplesMax = 20_000;

/**
 * Polls every daemon's /api/status/cluster in its own loop (a stopped daemon stalls only
 * its own loop) and keeps what each said, to check "at most one leader per term".
 */
export class RoleSampler {
  readonly samples: RoleSample[] = [];
  private running = false;
  private loops: Array<Promise<void>> = [];

  start(daemons: MeshDaemon[], intervalMs = 100): void {
    this.running = true;
    this.loops = daemons.map(async (daemon) => {
      while (this.running) {
        const status = await clusterStatus(daemon, 1_000);
        if (status !== null && this.samples.length < roleSamplesMax) {
          this.samples.push({ node: daemon.nodeId, atMs: performance.now(), role: status.role, term: status.term, leaderId: status.leaderId, commitIndex: status.commitIndex });
        }
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Terms in which more than one node said it was the leader, with those nodes. */
  leaderConflicts(): Array<{ term: number; leaders: string[] }> {
    const leadersByTerm = new Map<number, Set<string>>();
    for (const sample of this.samples) {
      if (sample.role !== 'leader') continue;
      let leaders = leadersByTerm.get(sample.term);
      if (leaders === undefined) leadersByTerm.set(sample.term, leaders = new Set());
      leaders.add(sample.node);
    }
    return [...leadersByTerm].filter(([, leaders]) => leaders.size > 1).map(([term, leaders]) => ({ term, leaders: [...leaders] }));
  }
}

/** Writes most kept per ContinuousWriter run: a bound on memory and on the read-back check. */
const continuousWritesMax = 2_000;

/**
 * Keeps submitting tasks to every given daemon, one loop per daemon (a frozen or dead
 * daemon stalls only its own loop), and records what each answered: the ids of every
 * acknowledged (201) write, to check later that none was lost, and the other statuses.
 */
export class ContinuousWriter {
  readonly acknowledged: string[] = [];
  readonly statusCounts = new Map<string, number>();
  private running = false;
  private loops: Array<Promise<void>> = [];
  private written = 0;

  start(daemons: DaemonProcess[], label: string, options: { pauseMs?: number; requestTimeoutMs?: number } = {}): void {
    this.running = true;
    this.loops = daemons.map(async (daemon) => {
      while (this.running && this.written < continuousWritesMax) {
        this.written += 1;
        const outcome = await submitTask(daemon, `${label}-${daemon.spec.name}-${this.written}`, options.requestTimeoutMs ?? 12_000);
        const key = `${outcome.status}${outcome.errorCode === null ? '' : `/${outcome.errorCode}`}`;
        this.statusCounts.set(key, (this.statusCounts.get(key) ?? 0) + 1);
        if (outcome.task !== null) this.acknowledged.push(outcome.task.id);
        // A refused connection returns at once: do not spin on a dead daemon.
        await new Promise((resolve) => setTimeout(resolve, outcome.status === 201 ? (options.pauseMs ?? 20) : 100));
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  summary(): string {
    return [...this.statusCounts].map(([status, count]) => `${status}x${count}`).join(' ');
  }
}
