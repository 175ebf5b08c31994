// The daemon: composes storage, secrets, the libp2p host, the health probe, membership,
// consensus and the HTTP edge, and owns their lifecycle. Start order follows the
// dependencies; stop runs in reverse, announcing departure and handing over leadership
// first so peers react at once.
import { randomBytes } from 'node:crypto';
import type { AgentsStatus, ClusterStatus, NodeStatus } from '../protocol/api.ts';
import type { RaftRole } from '../protocol/heartbeat.ts';
import * as limits from '../protocol/limits.ts';
import { PROTOCOL_VERSION, SOFTWARE_VERSION } from '../protocol/version.ts';
import { can as roleCan } from '../protocol/tokens.ts';
import type { TaskStatusEvent } from '../protocol/tasks.ts';
import { quorumOf } from '../scheduler/consensus/voter-policy.ts';
import { encodeCommand } from '../scheduler/state/commands.ts';
import { ReplicatedState, type ApplyResult } from '../scheduler/state/state.ts';
import type { DaemonConfig } from './config.ts';
import { Cluster, catchingUpReason, type PeerView } from './consensus/cluster.ts';
import { describeStorageFailure, type StateMachine } from './consensus/raft-node.ts';
import { buildApp, type App } from './http/app.ts';
import type { Action, HttpServices, Principal, Role } from './http/services.ts';
import { EventBus } from './events.ts';
import { Gateway } from './gateway/gateway.ts';
import { OriginPolicy } from './gateway/cors.ts';
import { gatewayRoutes } from './gateway/routes.ts';
import { metricsRoutes } from './metrics/routes.ts';
import { taskRoutes } from './http/routes/tasks.ts';
import { tokenRoutes } from './http/routes/tokens.ts';
import { logger } from './log.ts';
import { mcpRoutes } from './mcp/routes.ts';
import { nodeViewFromHeartbeat, type NodeView } from '../scheduler/tasks/node-view.ts';
import { namedLeaderStands, TaskRuntime } from './tasks/runtime.ts';
import { TaskService, settledWithin, type OutputSource } from './tasks/service.ts';
import { TokenService } from './tokens.ts';
import { Membership, type MemberView } from './membership/membership.ts';
import { unheardNodeStatus } from './membership/unheard-node.ts';
import { createP2PHost, type P2PHost } from './p2p/host.ts';
import { loadOrCreatePeerKey } from './p2p/identity.ts';
import { HealthProbe } from './probe/index.ts';
import { IdleMemoryTrim } from './memory-trim.ts';
import { SpeedCalibrator } from './probe/calibration.ts';
import { fitHeartbeatBody } from './probe/heartbeat-fit.ts';
import { MeasuredWriter, readMeasured } from './probe/measured-store.ts';
import { ensureDataDir, hashToken, loadOrCreateAdminToken, TokenHashCache, loadOrCreateClusterKey, type AdminToken, type ClusterSecret } from './secrets.ts';
import { Storage } from './storage.ts';

const log = logger('daemon');

/** Where the replicated state keeps a node's name (its key/value space), for nodes never heard. */
export function nodeNameKey(nodeId: string): string {
  return `node-name/${nodeId}`;
}

/** Alerts that last as long as their condition, cleared when it ends (refreshConditionAlerts). */
const conditionAlertKinds = new Set(['ollama-unreachable', 'second-cluster', 'storage-failure', 'no-leader']);
/** A member without a leader this long raises the no-leader alert (an election takes about a second). */
const noLeaderAlertAfterMs = 5_000;
/** Unknown tokens looked up again after catching up with the leader, at once at most, and how long each waits. */
const tokenCatchUpsMax = 16;
const tokenCatchUpWaitMs = 1_000;

/** What this node's consensus says of the cluster, for the node list. */
type RaftView = { leader: string | null; voters: string[]; learners: string[] };


/** Holds the replicated state; a snapshot install replaces it whole. */
export class StateHolder implements StateMachine<ApplyResult> {
  current = new ReplicatedState();
  /** Told of the task transitions a snapshot from the leader carried (ReplicatedState.transitionsTo). */
  onRestored: ((events: TaskStatusEvent[]) => void) | null = null;
  apply(index: number, data: string): ApplyResult {
    return this.current.apply(index, data);
  }
  skip(index: number): void {
    // Empty data only advances the applied index (ReplicatedState.apply).
    this.current.apply(index, '');
  }
  snapshot(): string {
    return this.current.snapshot();
  }
  restore(data: string): void {
    const before = this.current;
    this.current = ReplicatedState.restore(data);
    // A running node that installs the leader's snapshot (it fell behind the compacted log)
    // learns transitions no entry told it of: event streams and watchers must hear them. At
    // start-up (nothing applied before) there is nobody to tell.
    if (before.lastApplied > 0 && this.onRestored !== null) this.onRestored(before.transitionsTo(this.current, Date.now()));
  }
  reset(): void {
    this.current = new ReplicatedState();
  }
  /** Nothing of users' yet: no tasks (live or finished), no keys but nodes' names, only nodes' own admin tokens. */
  isTrivial(): boolean {
    const state = this.current;
    const counts = state.countsByStatus();
    return Object.values(counts).every((count) => count === 0) && state.kvKeys().every((key) => key.startsWith(nodeNameKey('')))
      && state.listTokens().every((token) => token.id.startsWith('admin-'));
  }
}

interface Alert {
  kind: string;
  message: string;
  since: string;
}

export interface StartedDaemon {
  daemon: Daemon;
  clusterSecret: ClusterSecret;
  adminToken: AdminToken;
}

export class Daemon {
  readonly config: DaemonConfig;
  readonly instanceId = randomBytes(8).toString('hex');
  readonly startedAtMs = Date.now();
  readonly state = new StateHolder();
  storage!: Storage;
  host!: P2PHost;
  probe!: HealthProbe;
  private measuredWriter: MeasuredWriter | null = null;
  private calibrator: SpeedCalibrator | null = null;
  private memoryTrim: IdleMemoryTrim | null = null;
  membership!: Membership;
  cluster!: Cluster<ApplyResult>;
  app!: App;
  tasks!: TaskService;
  tokens!: TokenService;
  gateway!: Gateway;
  runtime: TaskRuntime | null = null;
  outputs!: OutputSource;
  clusterSecret!: ClusterSecret;
  adminToken!: AdminToken;
  private adminTokenHash = '';
  private tokenHashes: TokenHashCache | null = null;
  /** The write of this node's name into the replicated state, while in flight. */
  private nameProposal: Promise<unknown> | null = null;
  /** After a refused write of the name, when to try again. */
  private nameRetryAtMs = 0;
  /** Since when this member has known no leader (for the no-leader alert), or null. */
  private leaderlessSinceMs: number | null = null;
  /** authenticateAfterCatchUp calls in flight. */
  private tokenCatchUps = 0;
  private readonly alerts = new Map<string, Alert>();
  private stopping: Promise<void> | null = null;
  readonly bus = new EventBus();
  private maintenanceTimer: NodeJS.Timeout | null = null;
  private adminTokenProposal: Promise<unknown> | null = null;
  private lastLeader: string | null = null;

  private constructor(config: DaemonConfig) {
    this.config = config;
  }

  static async start(config: DaemonConfig): Promise<Daemon> {
    const daemon = new Daemon(config);
    try {
      await daemon.startParts();
    } catch (error) {
      await daemon.stop().catch(() => undefined);
      throw error;
    }
    return daemon;
  }

  get nodeId(): string {
    return this.host.peerId;
  }

  private async startParts(): Promise<void> {
    const { config } = this;
    ensureDataDir(config.dataDir);
    this.clusterSecret = loadOrCreateClusterKey(config.dataDir, config.secretFile);
    this.adminToken = loadOrCreateAdminToken(config.dataDir);
    this.adminTokenHash = hashToken(this.adminToken.token);
    this.tokenHashes = new TokenHashCache(this.adminTokenHash);
    this.storage = await Storage.open(config.dataDir);
    const privateKey = await loadOrCreatePeerKey(config.dataDir);

    this.host = await createP2PHost({
      privateKey,
      clusterKey: this.clusterSecret.key,
      listenHost: config.p2pHost,
      port: config.p2pPort,
      bootstrap: config.bootstrap,
      mdns: config.mdns,
    });
    // Identity conflicts the host sees are forwarded into membership, which raises one alert for both.
    // Speeds measured in earlier runs are the starting point; new figures are saved as they come.
    this.measuredWriter = new MeasuredWriter(config.dataDir, config.ollamaUrl);
    const writer = this.measuredWriter;
    // What placement wants at once goes out in a heartbeat now, not up to a period later: a
    // model's first speed reading, and a change of what Ollama has installed or in VRAM
    // (a preload done, a model pulled). Membership spaces such heartbeats 100 ms apart; it
    // starts after the probe, so what the probe sees before then goes in its first heartbeat.
    let ollamaShape = '';
    const publishSoon = () => this.membership?.publishNow();
    this.probe = new HealthProbe({
      ollamaUrl: config.ollamaUrl,
      agents: config.agents,
      ollama: {
        measured: readMeasured(config.dataDir, config.ollamaUrl),
        onMeasured: (measured) => writer.schedule(measured),
        onFirstReading: publishSoon,
        onChange: (state) => {
          const shape = JSON.stringify([state.reachable, state.installed.map((model) => model.name), state.loaded.map((model) => model.name)]);
          if (shape === ollamaShape) return;
          ollamaShape = shape;
          publishSoon();
        },
      },
    });
    await this.probe.start();

    this.membership = new Membership({
      host: this.host,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      suspectAfterMs: config.suspectAfterMs,
      deadAfterMs: config.deadAfterMs,
      dataDir: config.dataDir,
      self: () => this.heartbeatBody(),
      consensusMembers: () => {
        const raftConfig = this.cluster?.raft?.status().config;
        return raftConfig === undefined ? [] : [...raftConfig.voters, ...raftConfig.learners];
      },
    });
    this.host.on('handshake-failing', (event) => {
      this.raiseAlert('handshake-failing', `${event.detail} This node's cluster key: ${this.clusterSecret.path} (fingerprint ${this.clusterSecret.fingerprint}; \`hivemesh status\` on a node of the cluster shows its own).`);
    });
    this.membership.onChange((event) => {
      if (event.type !== 'identity-conflict' && event.type !== 'forgotten') {
        const name = this.membership.member(event.nodeId)?.heartbeat?.name ?? null;
        this.bus.publish({ type: `node.${event.type}`, at: Date.now(), nodeId: event.nodeId, name });
      }
      if (event.type === 'identity-conflict') this.raiseAlert('identity-conflict', event.conflict.message);
    });

    this.cluster = new Cluster<ApplyResult>({
      nodeId: this.host.peerId,
      storage: this.storage,
      transport: this.host,
      state: this.state,
      peers: () => this.peerViews(),
      tickMs: config.tickMs,
      snapshotEveryEntries: config.snapshotEveryEntries,
      votersTarget: config.votersTarget,
      voterReplaceAfterMs: config.voterReplaceAfterMs,
      initCommand: (clusterId) => encodeCommand({ type: 'cluster.init', clusterId, at: Date.now() }),
      isTrivial: () => this.state.isTrivial(),
      waitForPeers: config.bootstrap.length > 0,
      onRoleChange: () => this.onRoleChange(),
      onApplied: (applied) => {
        this.runtime?.onApplied(applied);
        // Tasks finished by these entries are final now: serialise them for the next
        // compaction here, a few per batch, rather than all in the compaction's turn.
        this.state.current.keepFinishedJson(applied.length + 8);
        for (const { result } of applied) if (result !== null && result.ok) this.publishTaskStatus(result.events);
      },
    });
    this.state.onRestored = (events) => {
      this.runtime?.onRestored(events);
      this.publishTaskStatus(events);
    };
    await this.cluster.start();
    // After the cluster loaded its identity, so the first heartbeat already names it.
    await this.membership.start();
    this.maintenanceTimer = setInterval(() => this.maintain(), 1_000);
    this.maintenanceTimer.unref();

    const propose = (data: string) => this.cluster.propose(data);
    const waitApplied = async (index: number) => {
      const raft = this.cluster.raft;
      if (raft !== null) await raft.waitApplied(index);
    };
    // >>> task runtime wiring
    this.runtime = new TaskRuntime({
      nodeId: this.host.peerId,
      state: () => this.state.current,
      propose,
      raftStatus: () => {
        const raft = this.cluster.raft;
        if (raft === null) return null;
        return raft.brief();
      },
      host: this.host,
      members: () => this.membership.members(),
      probe: this.probe,
      ollamaUrl: config.ollamaUrl,
      preload: config.preload,
      concurrency: config.concurrency,
      agents: config.agents,
      keepFinishedTasks: config.keepFinishedTasks,
      keepFinishedTasksMs: config.keepFinishedTasksMs,
      // Gateway generations share the local Ollama: they take slots the scheduler must not hand out.
      otherWork: () => this.gateway?.inFlight() ?? 0,
    });
    await this.runtime.start();
    this.outputs = this.runtime.outputs;
    const runtime = this.runtime;
    // Generations running or waiting here, tasks' or the gateway's.
    const busy = () => {
      const load = runtime.load();
      return load.running + load.queued + (this.gateway?.inFlight() ?? 0) > 0;
    };
    if (config.calibrate) {
      this.calibrator = new SpeedCalibrator({ ollamaUrl: config.ollamaUrl, probe: this.probe.ollama, busy });
      this.calibrator.start();
    }
    this.memoryTrim = new IdleMemoryTrim({ busy });
    this.memoryTrim.start();
    // <<< task runtime wiring
    // Client writes from a follower travel to the leader in batches on one stream (the
    // runtime's report relay), not one stream per request.
    const clientPropose = (data: string) => this.runtime === null ? propose(data) : this.runtime.relay.propose(data, { fullResult: true });
    this.tasks = new TaskService({
      state: () => this.state.current,
      propose: clientPropose,
      waitApplied,
      bus: this.bus,
      outputs: this.outputs,
      listedNodes: () => this.agentsStatus().nodes,
      nodeViews: () => this.nodeViews(),
      readBarrier: () => this.cluster.readBarrier(),
    });
    this.tokens = new TokenService({ state: () => this.state.current, propose: clientPropose, waitApplied });

    this.gateway = new Gateway({
      host: this.host,
      nodeId: () => this.host.peerId,
      ollamaUrl: config.ollamaUrl,
      nodeViews: () => this.nodeViews(),
      recordGeneration: (model, tokens, evalDurationNs) => this.probe.recordGeneration(model, tokens, evalDurationNs),
      installedName: (model) => this.probe.installedName(model),
    });
    await this.gateway.start();

    this.app = await buildApp({
      services: this.httpServices(),
      plugins: [
        taskRoutes(this.tasks, this.bus),
        tokenRoutes(this.tokens),
        mcpRoutes({ clusterStatus: () => this.clusterStatus(), agentsStatus: () => this.agentsStatus(), tasks: this.tasks, can: roleCan }),
        gatewayRoutes({ gateway: this.gateway, agentsStatus: () => this.agentsStatus(), origins: new OriginPolicy(config.allowedOrigins) }),
        metricsRoutes({
          clusterStatus: () => this.clusterStatus(),
          agentsStatus: () => this.agentsStatus(),
          heartbeats: () => this.membership.members().flatMap((member) => (member.heartbeat === null || member.state === 'left' ? [] : [member.heartbeat])),
          sendStats: () => this.host.sendStats(),
          state: () => this.state.current,
          bus: this.bus,
        }),
      ],
    });
    await this.app.listen({ host: config.apiHost, port: config.apiPort });
    if (config.apiPort === 0) {
      const address = this.app.server.address();
      if (address !== null && typeof address === 'object') config.apiUrl = config.apiUrl.replace(/:0$/, `:${address.port}`);
    }
  }

  /** Graceful stop: leadership handed over, departure announced, then everything closed. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.maintenanceTimer !== null) clearInterval(this.maintenanceTimer);
      this.memoryTrim?.stop();
      // Local generations are aborted and reported first, so the leader retries them elsewhere at once.
      await this.calibrator?.stop();
      await this.runtime?.stop().catch((error: unknown) => log.warn('task runtime stop failed', { error: error as Error }));
      await this.cluster?.stop({ transferLeadership: true }).catch((error: unknown) => log.warn('consensus stop failed', { error: error as Error }));
      await this.membership?.stop().catch((error: unknown) => log.warn('membership stop failed', { error: error as Error }));
      await this.app?.close().catch(() => undefined);
      this.gateway?.stop();
      await this.probe?.stop().catch(() => undefined);
      this.measuredWriter?.flush();
      await this.host?.stop().catch(() => undefined);
      await this.storage?.close().catch(() => undefined);
    })();
    return this.stopping;
  }

  /** Task transitions (applied, or carried by an installed snapshot) to the event bus: /api/events and task streams. */
  private publishTaskStatus(events: TaskStatusEvent[]): void {
    if (events.length === 0) return;
    const at = Date.now();
    for (const event of events) this.bus.publish({ type: 'task.status', at, event });
  }

  private onRoleChange(): void {
    this.runtime?.relay.leaderChanged();
    this.membership.publishNow();
    const status = this.cluster.raft?.status();
    const leader = status?.leader ?? null;
    if (leader !== this.lastLeader) {
      // An operator reading the log sees every change of leader, and which term it began.
      const previous = this.lastLeader;
      this.lastLeader = leader;
      const nameOf = (id: string | null) => (id === null ? null : this.nodeName(id));
      log.info(leader === null ? 'no leader known' : 'leader changed', { leader: nameOf(leader), previous: nameOf(previous), term: status?.term ?? 0 });
      this.bus.publish({ type: 'leader.changed', at: Date.now(), leaderId: leader, term: status?.term ?? 0 });
    }
  }

  /** Once a second: make this node's admin token valid cluster-wide (replicated as a hash). */
  private maintain(): void {
    this.refreshConditionAlerts();
    const raft = this.cluster.raft;
    if (raft === null || raft.brief().leader === null) return;
    this.replicateOwnName();
    if (this.adminTokenProposal !== null || this.state.current.findTokenByHash(this.adminTokenHash) !== undefined) return;
    const command = encodeCommand({
      type: 'token.create',
      id: `admin-${this.adminTokenHash.slice(0, 16)}`,
      name: `admin@${this.config.name}`.slice(0, 64),
      role: 'admin',
      hash: this.adminTokenHash,
      at: Date.now(),
    });
    this.adminTokenProposal = this.cluster.propose(command)
      .catch((error: unknown) => log.debug('admin token not replicated yet', { error: error as Error }))
      .finally(() => { this.adminTokenProposal = null; });
  }

  /**
   * This node's name in the replicated state, so a node that never heard it (it died before
   * that node started) still lists it by name and resolves a pin by it. Written when missing
   * or changed (a restart with another --name); at most one write in flight.
   */
  private replicateOwnName(): void {
    if (this.nameProposal !== null || Date.now() < this.nameRetryAtMs) return;
    const key = nodeNameKey(this.host.peerId);
    if (this.state.current.kvGet(key) === this.config.name) return;
    this.nameProposal = this.cluster.propose(encodeCommand({ type: 'kv.put', key, value: this.config.name }))
      .then((result) => {
        // Refused (the key/value space is full): not worth a write every second; try again later.
        if (result !== null && !result.ok) {
          log.warn('could not record this node\'s name in the replicated state; nodes that never heard it will list it by id', { reason: result.refusal.message });
          this.nameRetryAtMs = Date.now() + 10 * 60_000;
        }
      })
      .catch((error: unknown) => log.debug('node name not replicated yet', { error: error as Error }))
      .finally(() => { this.nameProposal = null; });
  }

  /**
   * Raises (or updates) an alert: logged and published on /api/events when it first
   * appears, with the time it appeared. `key` tells apart alerts of one kind (one per node).
   */
  private raiseAlert(kind: string, message: string, options: { key?: string; log?: boolean } = {}): void {
    const key = options.key ?? kind;
    if (!this.alerts.has(key)) {
      if (options.log !== false) log.error(message);
      this.bus.publish({ type: 'alert', at: Date.now(), kind, message });
    }
    this.alerts.set(key, { kind, message, since: this.alerts.get(key)?.since ?? new Date().toISOString() });
  }

  /**
   * Alerts that last as long as a condition (checked every second): Ollama unreachable here
   * or on another live node (from its heartbeat), another cluster with our key on the LAN.
   */
  private refreshConditionAlerts(): void {
    const present = new Set<string>();
    const ollama = this.probe.ollama.current();
    if (!ollama.reachable) {
      present.add('ollama-unreachable');
      // The probe has logged it already.
      this.raiseAlert('ollama-unreachable', ollama.error ?? `Ollama is not reachable at ${this.config.ollamaUrl}`, { log: false });
    }
    for (const member of this.membership.members()) {
      const heartbeat = member.heartbeat;
      if (member.state !== 'alive' || heartbeat === null || member.nodeId === this.host.peerId || heartbeat.ollama.reachable) continue;
      const key = `ollama-unreachable:${member.nodeId}`;
      present.add(key);
      this.raiseAlert('ollama-unreachable', `on node ${heartbeat.name}: ${heartbeat.ollama.error ?? 'Ollama is not reachable'} (that node takes no work until it answers)`, { key, log: false });
    }
    const storageFailure = this.cluster.raft?.storageFailure ?? null;
    if (storageFailure !== null) {
      present.add('storage-failure');
      this.raiseAlert('storage-failure', this.storageFailureText(storageFailure), { log: false });
    }
    const noLeader = this.noLeaderText();
    if (noLeader !== null) {
      present.add('no-leader');
      this.raiseAlert('no-leader', noLeader);
    }
    for (const foreign of this.cluster.foreign()) {
      const key = `second-cluster:${foreign.clusterId}`;
      present.add(key);
      this.raiseAlert('second-cluster', `another cluster (${foreign.clusterId}) uses the same cluster key on this LAN (nodes ${foreign.nodes.join(', ')}). ` +
        'Pick one cluster: stop the nodes of the other, delete their <data-dir>/db, and start them again so they join this one.', { key });
    }
    for (const [key, alert] of this.alerts) {
      if (conditionAlertKinds.has(alert.kind) && !present.has(key)) this.alerts.delete(key);
    }
  }

  /**
   * When this member has known no leader for a while: how many voters it reaches against the
   * quorum a leader needs, and which voters to bring back. Null while a leader is known (or
   * the node is not a member yet, or its disk failed: that alert says more).
   */
  private noLeaderText(): string | null {
    const raft = this.cluster.raft;
    if (raft === null || raft.storageFailure !== null || raft.brief().leader !== null) {
      this.leaderlessSinceMs = null;
      return null;
    }
    const nowMs = Date.now();
    this.leaderlessSinceMs ??= nowMs;
    if (nowMs - this.leaderlessSinceMs < noLeaderAlertAfterMs) return null;
    const voters = raft.status().config.voters;
    if (voters.length === 0) return null;
    const listed = new Map(this.membership.listed().map((member) => [member.nodeId, member]));
    const reached = voters.filter((id) => id === this.host.peerId || listed.get(id)?.state === 'alive');
    const down = voters.filter((id) => !reached.includes(id));
    const quorum = quorumOf(voters.length);
    const seconds = Math.round((nowMs - this.leaderlessSinceMs) / 1000);
    return `no leader for ${seconds} s: this node reaches ${reached.length} of ${voters.length} voters and a leader needs ${quorum}, so writes are refused (503) until a leader is elected. ` +
      (reached.length < quorum
        ? `Start or reconnect the voters that are down: ${down.map((id) => this.nodeName(id)).join(', ')}.`
        : 'A majority is reachable, so an election should end soon; if this lasts, the network may be dropping traffic between the voters.');
  }

  /**
   * A node's name as this node knows it: its own, the one in its last heartbeat, or the one
   * it recorded in the replicated state (a node never heard); else its id.
   */
  private nodeName(id: string): string {
    if (id === this.host.peerId) return this.config.name;
    return this.membership.listed().find((member) => member.nodeId === id)?.heartbeat?.name ?? this.state.current.kvGet(nodeNameKey(id)) ?? id;
  }

  /** For the alert and readiness: what failed, where, and what to do. */
  private storageFailureText(failure: Error): string {
    const reason = describeStorageFailure(failure);
    const full = /no space|ENOSPC|disk full/i.test(reason);
    return `a disk write in ${this.storage.path} failed (${reason}): this node has stopped taking part in consensus, takes no tasks and accepts no writes. ` +
      `${full ? 'Free disk space there' : 'Check that disk'}, then restart the daemon; the other nodes go on without it.`;
  }

  private raftRole(): RaftRole {
    const raft = this.cluster?.raft;
    if (raft === null || raft === undefined) return 'unknown';
    const status = raft.status();
    if (status.config.learners.includes(this.host.peerId)) return 'learner';
    if (status.role === 'pre-candidate') return 'candidate';
    if (!status.config.voters.includes(this.host.peerId) && status.role === 'follower') return 'learner';
    return status.role;
  }

  private heartbeatBody() {
    const probe = this.probe.snapshot();
    const raft = this.cluster?.raft?.status();
    const local = this.runtime?.load() ?? { running: 0, queued: 0 };
    const body = {
      softwareVersion: SOFTWARE_VERSION,
      clusterId: this.cluster?.clusterId ?? null,
      name: this.config.name,
      apiUrl: this.config.apiUrl,
      startedAt: this.startedAtMs,
      raft: {
        role: this.raftRole(),
        term: raft?.term ?? 0,
        leaderId: raft?.leader ?? null,
        commitIndex: raft?.commit ?? 0,
        clusterEmpty: this.cluster?.clusterId === null || this.cluster?.clusterId === undefined ? true : this.cluster.isEmpty(),
      },
      hardware: probe.hardware,
      ollama: probe.ollama,
      // Gateway requests run beside tasks on the same Ollama: the scheduler must see both.
      // A node whose disk failed applies nothing more, so it could never start an assignment:
      // it offers no slots until it is restarted.
      load: { running: local.running + (this.gateway?.inFlight() ?? 0), queued: local.queued, concurrencyLimit: this.cluster.raft?.storageFailure == null ? this.config.concurrency : 0 },
      agents: probe.agents,
    };
    // A heartbeat over its bound could not be sent at all (peers would call this node dead):
    // with too many models it carries the ones that matter most, and says so.
    const fitted = fitHeartbeatBody(body);
    if (fitted.omittedModels > 0) {
      const installed = body.ollama.installed.length;
      this.raiseAlert('too-many-models', `Ollama here has ${installed} models installed; the heartbeat (at most ${limits.heartbeatBytesMax / 1024} KiB) carries ${installed - fitted.omittedModels} of them (models in VRAM, measured or used by a configured agent first). The other ${fitted.omittedModels} are not scheduled on this node nor listed by the gateway; remove models you do not use (\`ollama rm\`) to fix.`);
    } else {
      this.alerts.delete('too-many-models');
    }
    return fitted.body;
  }

  private peerViews(): PeerView[] {
    const now = Date.now();
    return this.membership.members().map((member: MemberView) => ({
      nodeId: member.nodeId,
      state: member.state,
      clusterId: member.heartbeat?.clusterId ?? null,
      clusterEmpty: member.heartbeat?.raft.clusterEmpty ?? true,
      silentForMs: Math.max(0, now - member.lastSeenMs),
      ...(member.heartbeat === null ? {} : {
        name: member.heartbeat.name,
        // Both times from its clock: up as of its last heartbeat, plus the time since.
        upForMs: Math.max(0, member.heartbeat.sentAt - member.heartbeat.startedAt) + Math.max(0, now - member.lastSeenMs),
      }),
    }));
  }

  /**
   * Another node's raft role. The leader this node follows is "leader" at once (its own
   * heartbeat says so only a second later); a node whose gossip says "leader" while another
   * leads, or that is not alive, gets the role this node's consensus gives it (a dead
   * leader's last heartbeat still says "leader"); otherwise what it gossiped.
   */
  private peerRaftRole(nodeId: string, gossiped: RaftRole, alive: boolean, raft: RaftView | null): RaftRole {
    if (raft === null) return gossiped;
    if (raft.leader === nodeId) return 'leader';
    if (alive && !(gossiped === 'leader' && raft.leader !== null)) return gossiped;
    if (raft.learners.includes(nodeId)) return 'learner';
    if (raft.voters.includes(nodeId)) return 'follower';
    return gossiped === 'leader' ? 'unknown' : gossiped;
  }

  private nodeStatus(member: MemberView, now: number, raft: RaftView | null): NodeStatus | null {
    const heartbeat = member.heartbeat;
    if (heartbeat === null && !member.self) {
      return unheardNodeStatus(member, this.peerRaftRole(member.nodeId, 'unknown', false, raft), this.cluster.clusterId, now, this.state.current.kvGet(nodeNameKey(member.nodeId)));
    }
    if (heartbeat === null || heartbeat === undefined || member.state === 'left') return null;
    const self = member.nodeId === this.host.peerId;
    const capabilities = new Set<string>();
    for (const agent of heartbeat.agents) for (const capability of agent.capabilities) capabilities.add(capability.name);
    return {
      id: member.nodeId,
      name: heartbeat.name,
      apiUrl: heartbeat.apiUrl,
      state: member.state,
      raftRole: self ? this.raftRole() : this.peerRaftRole(member.nodeId, heartbeat.raft.role, member.state === 'alive', raft),
      self,
      clusterId: heartbeat.clusterId,
      softwareVersion: heartbeat.softwareVersion,
      protocolVersion: heartbeat.protocolVersion,
      startedAt: new Date(heartbeat.startedAt).toISOString(),
      hardware: heartbeat.hardware,
      ollama: { url: heartbeat.ollama.url, reachable: heartbeat.ollama.reachable, version: heartbeat.ollama.version, error: heartbeat.ollama.error },
      models: { installed: heartbeat.ollama.installed, loaded: heartbeat.ollama.loaded, tokensPerSecond: heartbeat.ollama.tokensPerSecond },
      load: heartbeat.load,
      agents: heartbeat.agents,
      capabilities: [...capabilities].sort(),
      lastSeen: new Date(self ? now : member.lastSeenMs).toISOString(),
      lastSeenAgoMs: self ? 0 : Math.max(0, now - member.lastSeenMs),
    };
  }

  agentsStatus(): AgentsStatus {
    const now = Date.now();
    const status = this.cluster?.raft?.status() ?? null;
    const raft = status === null ? null : { leader: status.leader, voters: status.config.voters, learners: status.config.learners };
    const nodes = this.membership.listed()
      .map((member) => this.nodeStatus(member, now, raft))
      .filter((node): node is NodeStatus => node !== null)
      .sort((a, b) => (a.self === b.self ? a.name.localeCompare(b.name) : a.self ? -1 : 1));
    return { nodes };
  }

  clusterStatus(): ClusterStatus {
    const raft = this.cluster.raft?.status();
    const counts = { alive: 0, suspect: 0, dead: 0 };
    for (const member of this.membership.listed()) {
      if (member.state === 'left') continue;
      counts[member.state] += 1;
    }
    const taskCounts = this.state.current.countsByStatus();
    this.refreshConditionAlerts();
    const alerts: Alert[] = [...this.alerts.values()];
    return {
      clusterId: this.cluster.clusterId,
      nodeId: this.host.peerId,
      nodeName: this.config.name,
      leaderId: raft?.leader ?? null,
      term: raft?.term ?? 0,
      commitIndex: raft?.commit ?? 0,
      appliedIndex: this.cluster.raft?.applied ?? 0,
      role: this.raftRole(),
      voters: raft?.config.voters ?? [],
      learners: raft?.config.learners ?? [],
      nodes: { ...counts, total: counts.alive + counts.suspect + counts.dead },
      tasks: { ...taskCounts, total: Object.values(taskCounts).reduce((sum, count) => sum + count, 0) },
      softwareVersion: SOFTWARE_VERSION,
      protocolVersion: PROTOCOL_VERSION,
      clusterKeyFingerprint: this.clusterSecret.fingerprint,
      listenAddresses: this.host.multiaddrs(),
      alerts,
    };
  }

  /** The scheduler's view of every known node, from their last heartbeats. */
  nodeViews(): NodeView[] {
    const views: NodeView[] = [];
    for (const member of this.membership.members()) {
      if (member.heartbeat === null || member.state === 'left') continue;
      views.push(nodeViewFromHeartbeat(member.heartbeat, member.state === 'alive'));
    }
    return views;
  }

  authenticate(token: string): Principal | null {
    if (this.tokenHashes === null) return null;
    const { hash, admin } = this.tokenHashes.lookup(token);
    if (admin) return { tokenId: 'local-admin', name: `admin@${this.config.name}`, role: 'admin' };
    const record = this.state.current.findTokenByHash(hash);
    if (record === undefined || record.revokedAt !== null) return null;
    return { tokenId: record.id, name: record.name, role: record.role };
  }

  /**
   * A token unknown here, looked up again once this node has applied what the leader had
   * committed: `hivemesh token create` on one node and the token's first use on another a
   * moment later otherwise met a 401 (21 of 174 tries in the event-loop audit). At most
   * tokenCatchUpsMax at once, so a flood of bad tokens costs the leader little; each waits
   * up to tokenCatchUpWaitMs.
   */
  private async authenticateAfterCatchUp(token: string): Promise<Principal | null> {
    if (this.tokenCatchUps >= tokenCatchUpsMax || this.cluster.raft === null) return null;
    this.tokenCatchUps += 1;
    try {
      // The signal ends the question to the leader; the bound also covers the wait to apply.
      await settledWithin(this.cluster.readBarrier({ signal: AbortSignal.timeout(tokenCatchUpWaitMs) }), tokenCatchUpWaitMs);
    } finally {
      this.tokenCatchUps -= 1;
    }
    return this.authenticate(token);
  }

  private httpServices(): HttpServices {
    return {
      nodeId: this.host.peerId,
      authenticate: (token) => this.authenticate(token),
      authenticateAfterCatchUp: (token) => this.authenticateAfterCatchUp(token),
      can: (role: Role, action: Action) => roleCan(role, action),
      readiness: () => {
        const raft = this.cluster.raft;
        if (raft === null) return { ready: false, reason: `this node has not joined a cluster yet (${this.cluster.phase})` };
        if (raft.storageFailure !== null) return { ready: false, reason: this.storageFailureText(raft.storageFailure) };
        const { leader, term } = raft.brief();
        if (leader === null) return { ready: false, reason: 'no leader is known yet' };
        if (leader !== this.host.peerId && !namedLeaderStands(this.membership.members().find((member) => member.nodeId === leader), term)) {
          return { ready: false, reason: `the leader of term ${term} is no longer heard or no longer leads; waiting for a new one` };
        }
        const catchingUp = catchingUpReason(raft.status());
        if (catchingUp !== null) return { ready: false, reason: catchingUp };
        return { ready: true, leaderId: leader };
      },
      clusterStatus: () => this.clusterStatus(),
      agentsStatus: () => this.agentsStatus(),
      reportInternalError: (error, context) => log.error('internal error', { context, error: error as Error }),
    };
  }
}
