// Task execution in the daemon: composes the leader's scheduling loop (leader.ts), bids
// over gossip (bids.ts), the executor on the local Ollama (executor.ts) and the output
// streams between nodes (output.ts), and feeds them what the log applies. The daemon
// calls onApplied, in log order, on every node; load() goes into this node's heartbeat
// and `outputs` into the TaskService.
//
// Fencing: a node that has known no leader (or whose leader it no longer hears) for
// fenceAfterMs aborts its generations: their results would likely be refused, and the
// leader will retry them elsewhere. It reports those attempts as failed (retryable) once a
// leader is back, so they do not sit as "running" until they time out.
import { committedEntriesPerReadyMax } from '../../scheduler/consensus/raft.ts';
import type { Entry } from '../../scheduler/consensus/types.ts';
import type { ApplyResult, ReplicatedState, TaskRecord } from '../../scheduler/state/state.ts';
import { modelKey, nodeLabel, type NodeView } from '../../scheduler/tasks/node-view.ts';
import { NodeHealth } from '../../scheduler/tasks/node-health.ts';
import { waitingReason } from '../../scheduler/tasks/placement.ts';
import type { TaskOutputEvent, TaskStatusEvent } from '../../protocol/tasks.ts';
import type { AgentConfig } from '../config.ts';
import { logger } from '../log.ts';
import type { MemberView } from '../membership/membership.ts';
import type { P2PHost } from '../p2p/host.ts';
import type { HealthProbe } from '../probe/index.ts';
import type { OutputSource } from './service.ts';
import { BidService } from './bids.ts';
import { Executor } from './executor.ts';
import { LeaderScheduler, type RaftStatusView, type SchedulerTiming } from './leader.ts';
import { OutputHub, type OutputLimits } from './output.ts';
import { PreloadService } from './preload.ts';
import { ReportRelay } from './report-relay.ts';
import { Reporter } from './reports.ts';

const log = logger('tasks');
/**
 * An assignment applied while the node is at most this many entries behind what it knows
 * committed waits for those entries (a few milliseconds under load) instead of for the
 * next reconciliation. One Ready applies at most this many, so a larger lag means replay.
 */
const deferredLagMax = committedEntriesPerReadyMax;
/** Deferred assignments kept at most; beyond, the reconciliation picks them up. */
const deferredMax = 10_000;

/**
 * Whether the leader our raft status names may still be leading, as far as membership can
 * tell: false when it is no longer heard (not alive), or when its own latest heartbeat says
 * it does not lead the term we know it for (it stepped down, or moved on to a later term).
 * A learner needs this: it never campaigns, so its raft status keeps naming a leader that
 * stepped down on its side of a partition, heard and alive, for as long as the cut lasts.
 * An older heartbeat (lower term) proves nothing: the node may have been elected since.
 */
export function namedLeaderStands(member: Pick<MemberView, 'state' | 'heartbeat'> | undefined, term: number): boolean {
  if (member === undefined) return true;
  if (member.state !== 'alive') return false;
  const raft = member.heartbeat?.raft;
  if (raft === undefined) return true;
  return raft.term < term || (raft.term === term && raft.role === 'leader');
}

export interface TaskRuntimeDeps {
  nodeId: string;
  state: () => ReplicatedState;
  /** Proposes through the leader; resolves with the apply result once committed. */
  propose: (data: string) => Promise<ApplyResult | null>;
  /** Null before this node joined a cluster. `commit`, when given, lets the loops wait for catch-up. */
  raftStatus: () => RaftStatusView | null;
  host: Pick<P2PHost, 'publish' | 'subscribe' | 'handle' | 'handleMessages' | 'request' | 'send' | 'on' | 'isConnected'>;
  members: () => MemberView[];
  probe: Pick<HealthProbe, 'snapshot' | 'recordGeneration' | 'recordLoad' | 'agentDefinitions' | 'installedName' | 'refreshOllama'>;
  ollamaUrl: string;
  /** Whether this node loads models when the leader asks (false: `--no-preload`); default true. */
  preload?: boolean;
  concurrency: number;
  agents: AgentConfig[];
  keepFinishedTasks: number;
  keepFinishedTasksMs: number;
  /** Generations on the local Ollama that are not tasks (gateway requests), counted as taken slots. */
  otherWork?: () => number;
  /** Tuning for tests; the defaults suit a LAN. */
  tuning?: TaskRuntimeTuning;
}

export interface TaskRuntimeTuning {
  /** Abort local attempts after this long without a reachable leader (about 2 election timeouts). */
  fenceAfterMs?: number;
  /** Period of the executor's reconciliation with the log (after snapshots, restarts). */
  reconcileEveryMs?: number;
  scheduler?: Partial<SchedulerTiming>;
  output?: Partial<OutputLimits>;
  reportRetryDelayMs?: (retry: number) => number;
  /** task.start is reported once a generation has run this long; shorter ones complete without it. */
  startReportDelayMs?: number;
}

export class TaskRuntime {
  private readonly deps: TaskRuntimeDeps;
  private readonly hub: OutputHub;
  private readonly reporter: Reporter;
  readonly relay: ReportRelay;
  private readonly executor: Executor;
  private readonly bids: BidService;
  private readonly preloads: PreloadService;
  readonly scheduler: LeaderScheduler;
  /** Which nodes keep failing generations; kept on every node, so a new leader knows at once. */
  private readonly health = new NodeHealth();
  readonly outputs: OutputSource;
  private timer: NodeJS.Timeout | null = null;
  private started = false;
  private stopped = false;
  private leaderlessSince: number | null = null;
  private fenced = false;
  private lastReconcileAt = 0;
  /** Whether this process has seen a reachable leader yet (a fence before that is just startup). */
  private hadLeader = false;
  /** Assignments to this node waiting until entries up to afterIndex are applied here. */
  private readonly deferred: Array<{ taskId: string; attempt: number; afterIndex: number }> = [];

  constructor(deps: TaskRuntimeDeps) {
    this.deps = deps;
    this.hub = new OutputHub({
      nodeId: deps.nodeId,
      host: deps.host,
      prospect: (taskId, attempt) => this.prospect(taskId, attempt),
      followTimeoutMs: (taskId) => (deps.state().getTaskRecord(taskId)?.input.timeoutMs ?? 24 * 60 * 60_000) + 60_000,
      ...(deps.tuning?.output === undefined ? {} : { limits: deps.tuning.output }),
    });
    this.relay = new ReportRelay({
      nodeId: deps.nodeId,
      host: deps.host,
      propose: deps.propose,
      leader: () => deps.raftStatus()?.leader ?? null,
      isLeader: () => deps.raftStatus()?.role === 'leader',
    });
    this.reporter = new Reporter({
      propose: (data) => this.relay.propose(data),
      ...(deps.tuning?.reportRetryDelayMs === undefined ? {} : { retryDelayMs: deps.tuning.reportRetryDelayMs }),
    });
    this.executor = new Executor({
      nodeId: deps.nodeId,
      state: deps.state,
      ollamaUrl: deps.ollamaUrl,
      concurrency: deps.concurrency,
      probe: deps.probe,
      agents: deps.agents,
      outputs: this.hub,
      reporter: this.reporter,
      ...(deps.tuning?.startReportDelayMs === undefined ? {} : { startReportDelayMs: deps.tuning.startReportDelayMs }),
    });
    this.bids = new BidService({
      nodeId: deps.nodeId,
      host: deps.host,
      state: deps.state,
      leader: () => deps.raftStatus()?.leader ?? null,
      selfView: () => this.selfView(true),
    });
    this.preloads = new PreloadService({
      nodeId: deps.nodeId,
      host: deps.host,
      leader: () => deps.raftStatus()?.leader ?? null,
      ollamaUrl: deps.ollamaUrl,
      accept: deps.preload ?? true,
      probe: deps.probe,
    });
    this.scheduler = new LeaderScheduler({
      nodeId: deps.nodeId,
      state: deps.state,
      propose: deps.propose,
      raftStatus: deps.raftStatus,
      members: deps.members,
      selfView: () => this.selfView(false),
      ...(deps.otherWork === undefined ? {} : { otherWork: deps.otherWork }),
      bids: this.bids,
      preload: (node, model, term) => this.preloads.ask(node, model, term),
      keepFinishedTasks: deps.keepFinishedTasks,
      keepFinishedTasksMs: deps.keepFinishedTasksMs,
      ...(deps.tuning?.scheduler === undefined ? {} : { timing: deps.tuning.scheduler }),
      health: this.health,
    });
    const hub = this.hub;
    this.outputs = {
      follow(taskId: string, attempt: number, nodeId: string, signal: AbortSignal): AsyncIterable<TaskOutputEvent> {
        return hub.follow(taskId, attempt, nodeId, signal);
      },
    };
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.hub.start();
    await this.relay.start();
    await this.bids.start();
    await this.preloads.start();
    this.scheduler.start();
    this.timer = setInterval(() => this.watch(), 100);
    this.timer.unref();
    this.watch();
  }

  /**
   * Stops scheduling and aborts local generations, reporting them as failed (retryable) so
   * that the leader retries them elsewhere at once. Call before the consensus plane stops.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.scheduler.stop();
    this.executor.stop();
    const aborted = this.executor.abortAll({ reason: `node ${this.deps.nodeId} is shutting down`, report: true });
    // The failure reports are quick when a leader is reachable; bounded either way.
    if (aborted > 0) await this.executor.drained(2_000);
    await this.waitReports(2_000);
    this.reporter.stop();
    this.relay.stop();
    this.bids.stop();
    await this.preloads.stop();
    this.hub.stop();
  }

  private async waitReports(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.reporter.pending > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  load(): { running: number; queued: number } {
    return this.executor.load();
  }

  /**
   * Why a queued task is not placed yet, for the Task view's waitingFor (dependencies,
   * backoff, no node with the model, all such nodes busy); null when it is not queued or
   * could be placed now. Computed from this node's own view; costs no log entries.
   */
  waitingFor(taskId: string): string | null {
    const state = this.deps.state();
    const record = state.getTaskRecord(taskId);
    if (record === undefined || record.status !== 'queued') return null;
    return waitingReason(state, record, this.scheduler.nodeViews(state), Date.now());
  }

  /** Counters for /metrics and /api/metrics/performance. */
  stats(): { scheduler: LeaderScheduler['stats']; relay: ReportRelay['stats']; preloads: PreloadService['stats']; bidRequestsAnswered: number; outputAttemptsHeld: number; reportsPending: number } {
    return {
      scheduler: { ...this.scheduler.stats },
      preloads: { ...this.preloads.stats },
      relay: { ...this.relay.stats },
      bidRequestsAnswered: this.bids.answeredCount,
      outputAttemptsHeld: this.hub.attemptCount,
      reportsPending: this.reporter.pending,
    };
  }

  /** Called by the daemon after each applied batch, in log order, on every node. */
  onApplied(applied: Array<{ entry: Entry; result: ApplyResult | null }>): void {
    if (this.stopped) return;
    let changed = false;
    const status = this.deps.raftStatus();
    const canStart = this.canStartAttempts(status);
    // Behind by a little (writes committed while this batch was being applied, as under
    // load): the assignment starts once this node has applied what was committed when it
    // arrived, if it is still live then. Behind by a lot (replaying the log after a
    // restart) or fenced: the reconciliation picks live assignments up later, from the
    // state rather than from history.
    const lag = status === null ? Number.POSITIVE_INFINITY : (status.commit ?? 0) - this.deps.state().lastApplied;
    const mayDefer = !canStart && !this.fenced && status?.leader != null && lag <= deferredLagMax;
    for (const { result } of applied) {
      if (result === null || !result.ok) continue;
      if (result.events.length > 0 || result.prunedTaskIds.length > 0) changed = true;
      for (const event of result.events) {
        this.noteOutcome(event);
        if (event.status === 'assigned' && event.node === this.deps.nodeId) {
          if (canStart) this.executor.accept(event.taskId, event.attempt);
          else if (mayDefer && this.deferred.length < deferredMax) this.deferred.push({ taskId: event.taskId, attempt: event.attempt, afterIndex: status?.commit ?? 0 });
        } else {
          this.executor.onStatus(event);
        }
      }
    }
    this.acceptDeferred();
    if (changed) this.scheduler.kick();
  }

  /**
   * The transitions a snapshot from the leader carried (installed to catch up, so no entry
   * announced them): local attempts they ended stop now, and the node-health counts learn the
   * outcomes. Assignments to this node among them are left to the reconciliation, which
   * starts what the state shows live once this node has caught up.
   */
  onRestored(events: TaskStatusEvent[]): void {
    if (this.stopped) return;
    for (const event of events) {
      this.noteOutcome(event);
      if (!(event.status === 'assigned' && event.node === this.deps.nodeId)) this.executor.onStatus(event);
    }
    if (events.length > 0) this.scheduler.kick();
  }

  /** Feeds NodeHealth: a completed attempt clears its node; a failed generation counts against it. */
  private noteOutcome(event: TaskStatusEvent): void {
    if (event.status === 'completed' && event.node !== null) {
      this.health.record(event.node, true, event.at);
    } else if ((event.status === 'queued' || event.status === 'failed') && event.reason !== null && event.attempt > 0) {
      // Lost attempts (a dead or cut-off node) are the failure detector's business.
      const attempt = this.deps.state().getTaskRecord(event.taskId)?.attempts[event.attempt - 1];
      if (attempt?.status === 'failed') this.health.record(attempt.node, false, event.at);
    }
  }

  /** Starts deferred assignments whose wait is over and which the state still shows live. */
  private acceptDeferred(): void {
    if (this.deferred.length === 0) return;
    if (this.fenced) {
      this.deferred.length = 0;
      return;
    }
    const state = this.deps.state();
    let kept = 0;
    for (const item of this.deferred) {
      if (item.afterIndex > state.lastApplied) {
        this.deferred[kept++] = item;
        continue;
      }
      const record = state.getTaskRecord(item.taskId);
      if (record?.status === 'assigned' && record.attempt === item.attempt && this.missedHere(record)) this.executor.accept(item.taskId, item.attempt);
    }
    this.deferred.length = kept;
  }

  /** Leader known and reachable, and the local state caught up with what it knows committed. */
  private canStartAttempts(status = this.deps.raftStatus()): boolean {
    if (this.fenced || this.stopped) return false;
    if (status === null || status.leader === null) return false;
    return status.commit === undefined || this.deps.state().lastApplied >= status.commit;
  }

  /** Fencing and reconciliation, every 100 ms. */
  private watch(): void {
    if (this.stopped) return;
    const now = Date.now();
    const status = this.deps.raftStatus();
    const leader = status?.leader ?? null;
    let reachable = leader !== null;
    if (leader !== null && leader !== this.deps.nodeId) {
      // A learner never campaigns, so its raft status keeps naming a leader it no longer
      // hears; membership tells whether that leader is still heard from, and whether it
      // still says it leads (cut off with it, the old leader stays alive but steps down).
      const member = this.deps.members().find((candidate) => candidate.nodeId === leader);
      if (!namedLeaderStands(member, status?.term ?? 0)) reachable = false;
    }
    if (reachable) {
      this.leaderlessSince = null;
      if (this.fenced) {
        this.fenced = false;
        const name = leader === this.deps.nodeId ? 'this node' : this.deps.members().find((candidate) => candidate.nodeId === leader)?.heartbeat?.name;
        log.info(this.hadLeader ? 'a leader is reachable again; taking assignments' : 'a leader is known; taking assignments', { leader: leader === null ? null : nodeLabel({ id: leader, name }) });
        this.lastReconcileAt = 0;
      }
      this.hadLeader = true;
    } else {
      this.leaderlessSince ??= now;
      const fenceAfterMs = this.deps.tuning?.fenceAfterMs ?? 1_500;
      if (!this.fenced && now - this.leaderlessSince >= fenceAfterMs) {
        this.fenced = true;
        const aborted = this.executor.abortAll({ reason: `node ${this.deps.nodeId} lost contact with the leader for ${now - this.leaderlessSince} ms; its attempt was stopped so that another node can run the task`, report: true });
        // Starting up (no cluster formed or joined yet) with nothing running is not news.
        if (aborted > 0 || this.hadLeader) log.warn('no reachable leader: fenced off, local generations aborted', { aborted, leaderlessMs: now - this.leaderlessSince });
        else log.debug('no leader yet: not taking assignments until there is one');
      }
    }
    this.hub.sweep(now);
    if (now - this.lastReconcileAt >= (this.deps.tuning?.reconcileEveryMs ?? 1_000) && this.canStartAttempts()) {
      this.lastReconcileAt = now;
      this.reconcile();
    }
  }

  /** The log has the task's current attempt on this node, and this process neither runs nor ran it. */
  private missedHere(record: Readonly<TaskRecord>): boolean {
    return record.assignedNode === this.deps.nodeId && this.executor.localAttempt(record.id) !== record.attempt
      && !this.executor.hasEnded(record.id, record.attempt);
  }

  /**
   * Aligns the executor with the state: stops local attempts the log no longer shows live
   * here, runs live assignments to this node it missed (applied while catching up, or
   * inside a snapshot), and fails attempts the log shows running here that this process
   * does not run (it restarted), so they retry at once.
   */
  private reconcile(): void {
    const state = this.deps.state();
    // Attempts running here that the log moved on from while no event said so (this node
    // caught up by installing a snapshot, after a freeze or a partition): stop them.
    const stale = this.executor.abortStale();
    if (stale > 0) log.info('stopped local attempts the log no longer shows live here', { count: stale });
    for (const record of state.tasksWithStatus('assigned')) {
      if (this.missedHere(record)) this.executor.accept(record.id, record.attempt);
    }
    for (const record of state.tasksWithStatus('running')) {
      if (!this.missedHere(record)) continue;
      const { id, attempt } = record;
      log.info('the log shows an attempt running here that this process does not run; failing it for a retry', { taskId: id, attempt });
      this.executor.markEnded(id, attempt);
      void this.reporter.report({
        type: 'task.fail', id, attempt, retryable: true, at: Date.now(),
        error: `node ${this.deps.nodeId} restarted during attempt ${attempt}; the generation was lost`,
      }, () => {
        const current = this.deps.state().getTaskRecord(id);
        return current !== undefined && current.attempt === attempt && current.status === 'running';
      });
    }
  }

  /** For a watcher asking this node: whether the attempt may still start here. */
  private prospect(taskId: string, attempt: number): 'may-open' | 'never' {
    const record = this.deps.state().getTaskRecord(taskId);
    // Not applied here yet (the watcher's node is ahead of us): it may still come.
    if (record === undefined || record.attempt < attempt) return 'may-open';
    if (record.attempt > attempt) return 'never';
    if (record.assignedNode !== this.deps.nodeId) return 'never';
    return record.status === 'assigned' || record.status === 'running' ? 'may-open' : 'never';
  }

  /** This node as placement sees it. `forBid`: count what runs and waits here now. */
  private selfView(forBid: boolean): NodeView {
    const snapshot = this.deps.probe.snapshot();
    const ollama = snapshot.ollama;
    const modelSizeBytes: Record<string, number> = {};
    for (const model of ollama.installed) modelSizeBytes[modelKey(model.name)] = model.sizeBytes;
    const load = this.executor.load();
    return {
      id: this.deps.nodeId,
      alive: ollama.reachable && !this.stopped && !this.fenced,
      modelsInstalled: ollama.installed.map((model) => model.name),
      // Models of generations running now are in VRAM even if /api/ps was polled before they loaded.
      modelsLoaded: [...ollama.loaded.map((model) => model.name), ...this.executor.runningModels()],
      tokensPerSecond: { ...ollama.tokensPerSecond },
      modelSizeBytes,
      ...(ollama.loadBytesPerSecond === undefined ? {} : { loadBytesPerSecond: ollama.loadBytesPerSecond }),
      // A bid counts everything that holds or awaits a slot here, gateway requests included.
      running: (forBid ? load.running + load.queued : load.running) + (this.deps.otherWork?.() ?? 0),
      concurrencyLimit: this.deps.concurrency,
      agents: snapshot.agents.map((agent) => ({ id: agent.id, model: agent.model, capabilities: agent.capabilities })),
    };
  }
}
