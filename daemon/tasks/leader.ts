// The leader's scheduling loop. Only while this node leads (and has applied everything it
// knows committed), rounds run one at a time: recovery (requeue attempts of dead or departed
// nodes and attempts that overran), pruning of old finished tasks, then placement: ready
// tasks go to the best nodes with free slots (planAssignments), and the assignments are
// proposed together, which Raft commits as one batch. A round starts after each applied
// change and on a short timer; the next round waits for the previous one's proposals to be
// applied, so the plan always sees the log's true in-flight counts and no task ever has
// two assignments in flight. A round costs O(queued) only when a slot is free. Bid rounds
// are spaced (bidRoundEveryMs): tasks ready soon after one wait for the next, together.
import type { BidTask } from '../../protocol/bids.ts';
import { bidTasksPerRequestMax } from '../../protocol/bids.ts';
import { assignmentsPerPlanMax } from '../../protocol/limits.ts';
import { encodeCommand, type CommandOf } from '../../scheduler/state/commands.ts';
import type { ApplyResult, ReplicatedState } from '../../scheduler/state/state.ts';
import { nodeLabel, nodeViewFromHeartbeat, type NodeView } from '../../scheduler/tasks/node-view.ts';
import type { NodeHealth } from '../../scheduler/tasks/node-health.ts';
import { assignmentCommand, clusterSpeedPrior, eligibleNodes, estimateDefaults, nodeModelKey, planAssignments, type Bid } from '../../scheduler/tasks/placement.ts';
import { readyTasks } from '../../scheduler/tasks/ready.ts';
import { tasksToRequeue, timedOutTasks } from '../../scheduler/tasks/recovery.ts';
import { logger } from '../log.ts';
import type { MemberView } from '../membership/membership.ts';
import { estimateBids, type BidService } from './bids.ts';

const log = logger('tasks:leader');

/**
 * A preload not seen in VRAM this long after it should have been done is given up on. It
 * covers a poll of Ollama (2 s) and a heartbeat; a node that refused it (no room in VRAM,
 * another load under way) is counted on as loading for no longer than that.
 */
export const preloadOverdueMs = 5_000;

export interface RaftStatusView {
  role: string;
  term: number;
  leader: string | null;
  /** Commit index, when known: the loop waits until the local state has applied it. */
  commit?: number;
}

export interface SchedulerTiming {
  /** Timer period: picks up backoffs that expired and members that changed. */
  tickMs: number;
  /** Recovery checks (dead nodes, timeouts) at most this often. */
  recoveryEveryMs: number;
  pruneEveryMs: number;
  /** A round that could place nothing although slots were free waits this long for the next. */
  idleRetryMs: number;
  /** Longest wait for bids. */
  bidWaitMs: number;
  /** Bids are asked only while at most this many tasks are queued; deeper queues do not wait. */
  bidQueueDepthMax: number;
  /**
   * Bid rounds start at most this often. Tasks that become ready sooner after a round are
   * held until then and asked about together, so a steady stream of tasks costs a bounded
   * number of rounds (each is a signed gossip message, verified on every node, and an
   * answer from each) rather than one per task.
   */
  bidRoundEveryMs: number;
  /** A node absent from membership this long while the log has attempts on it is treated as dead. */
  unknownNodeGraceMs: number;
}

export const schedulerTimingDefault: SchedulerTiming = {
  tickMs: 50,
  recoveryEveryMs: 250,
  pruneEveryMs: 60_000,
  idleRetryMs: 100,
  bidWaitMs: 30,
  bidQueueDepthMax: 16,
  bidRoundEveryMs: 50,
  unknownNodeGraceMs: 10_000,
};

export interface LeaderSchedulerDeps {
  nodeId: string;
  state: () => ReplicatedState;
  propose: (data: string) => Promise<ApplyResult | null>;
  raftStatus: () => RaftStatusView | null;
  members: () => MemberView[];
  /** This node's own view (fresh from the probe), used in place of its last heartbeat. */
  selfView: () => NodeView;
  /** Generations on this node's Ollama that are not tasks (gateway requests): they take slots too. */
  otherWork?: () => number;
  bids: Pick<BidService, 'collect'>;
  /**
   * Asks a node to load a model into VRAM (PreloadService.ask). Absent: placement buys a
   * load by sending a task to the cold node, which then waits for the load.
   */
  preload?: (node: string, model: string, term: number) => void;
  keepFinishedTasks: number;
  keepFinishedTasksMs: number;
  timing?: Partial<SchedulerTiming>;
  /** Nodes that keep failing generations, from the outcomes this node applied. */
  health?: NodeHealth;
}

export interface SchedulerStats {
  rounds: number;
  plannedRounds: number;
  assignmentsProposed: number;
  assignmentsRefused: number;
  requeuesProposed: number;
  bidRounds: number;
  bidsReceived: number;
  prunes: number;
  preloadsAsked: number;
}

export class LeaderScheduler {
  private readonly deps: LeaderSchedulerDeps;
  private readonly timing: SchedulerTiming;
  private timer: NodeJS.Timeout | null = null;
  private kickRequested = false;
  private looping = false;
  private stopped = false;
  private nextRecoveryAt = 0;
  private nextPruneAt = 0;
  private idleUntil = 0;
  /** When the last bid round was asked (performance.now()), and the kick waiting for the next. */
  private lastBidRoundAt = Number.NEGATIVE_INFINITY;
  private bidHoldTimer: NodeJS.Timeout | null = null;
  private ledTerm = -1;
  private readonly unknownSince = new Map<string, number>();
  /** Ski rental of model loads across rounds (planAssignments' loadRegret), per term. */
  private readonly loadRegret = new Map<string, number>();
  /** Loads under way this term, asked for or begun by a task sent cold, not yet seen in VRAM (planAssignments' loading): when each should be done. */
  private readonly loading = new Map<string, number>();
  readonly stats: SchedulerStats = { rounds: 0, plannedRounds: 0, assignmentsProposed: 0, assignmentsRefused: 0, requeuesProposed: 0, bidRounds: 0, bidsReceived: 0, prunes: 0, preloadsAsked: 0 };

  constructor(deps: LeaderSchedulerDeps) {
    this.deps = deps;
    this.timing = { ...schedulerTimingDefault, ...deps.timing };
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.timing.tickMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.bidHoldTimer !== null) clearTimeout(this.bidHoldTimer);
    this.bidHoldTimer = null;
  }

  private isLeader(): RaftStatusView | null {
    const status = this.deps.raftStatus();
    return status !== null && status.role === 'leader' ? status : null;
  }

  /** Something changed (an applied entry, a member): run a round soon. */
  kick(): void {
    if (this.stopped) return;
    this.kickRequested = true;
    if (!this.looping) {
      this.looping = true;
      setImmediate(() => void this.loop());
    }
  }

  private tick(): void {
    const status = this.isLeader();
    if (status === null) {
      this.ledTerm = -1;
      return;
    }
    if (status.term !== this.ledTerm) {
      // A new term of ours: recovery and pruning are due at once.
      this.ledTerm = status.term;
      this.nextRecoveryAt = 0;
      this.nextPruneAt = Date.now() + this.timing.pruneEveryMs / 6;
      this.unknownSince.clear();
      this.loadRegret.clear();
      this.loading.clear();
    }
    this.kick();
  }

  private async loop(): Promise<void> {
    try {
      while (this.kickRequested && !this.stopped) {
        this.kickRequested = false;
        const status = this.isLeader();
        if (status === null) break;
        try {
          await this.round(status);
        } catch (error) {
          log.warn('scheduling round failed', { error: error as Error });
        }
      }
    } finally {
      this.looping = false;
    }
  }

  private async round(status: RaftStatusView): Promise<void> {
    const state = this.deps.state();
    // A new leader may not have applied all it knows committed: plans from a stale state
    // would only be refused, so wait for the apply (which kicks again).
    if (status.commit !== undefined && state.lastApplied < status.commit) return;
    this.stats.rounds += 1;
    const now = Date.now();
    if (now >= this.nextRecoveryAt) {
      this.nextRecoveryAt = now + this.timing.recoveryEveryMs;
      await this.recover(state, now);
    }
    if (now >= this.nextPruneAt) {
      this.nextPruneAt = now + this.timing.pruneEveryMs;
      await this.prune(state, now);
    }
    if (now < this.idleUntil) return;
    const counts = state.countsByStatus();
    if (counts.queued === 0) return;
    const nodes = this.nodeViews(state);
    const inFlight = state.inFlightByNode();
    let freeSlots = 0;
    for (const node of nodes) if (node.alive) freeSlots += Math.max(0, node.concurrencyLimit - (inFlight.get(node.id) ?? 0));
    if (freeSlots <= 0) return;

    const request = counts.queued <= this.timing.bidQueueDepthMax ? this.bidRequest(state, nodes, inFlight, now) : null;
    if (request !== null) {
      const holdMs = this.lastBidRoundAt + this.timing.bidRoundEveryMs - performance.now();
      if (holdMs > 0) {
        this.kickAfter(holdMs);
        return;
      }
    }
    this.stats.plannedRounds += 1;
    const bids = request === null ? [] : await this.gatherBids(state, request, status.term);
    const planAt = Date.now();
    const avoidNodes = this.deps.health?.avoided(planAt);
    const loading = this.deps.preload === undefined ? undefined : this.loadsUnderWay(nodes, planAt);
    const plan = planAssignments(state, nodes, bids, planAt, {
      assignmentsMax: assignmentsPerPlanMax, loadRegret: this.loadRegret, stopWhenFull: true,
      ...(avoidNodes === undefined ? {} : { avoidNodes }), ...(loading === undefined ? {} : { loading }),
    });
    for (const preload of plan.preloads) {
      this.stats.preloadsAsked += 1;
      log.info(`asking node ${nodeLabel(nodes.find((node) => node.id === preload.node) ?? { id: preload.node })} to load ${preload.model} (~${preload.loadMs} ms): its next tasks of that model would finish sooner there`);
      this.deps.preload?.(preload.node, preload.model, status.term);
    }
    if (plan.assignments.length === 0) {
      this.idleUntil = Date.now() + this.timing.idleRetryMs;
      return;
    }
    const at = Date.now();
    const outcomes = await Promise.allSettled(plan.assignments.map((assignment) =>
      this.deps.propose(encodeCommand(assignmentCommand(assignment, status.term, at)))));
    this.stats.assignmentsProposed += plan.assignments.length;
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        log.debug('assignment not committed', { error: outcome.reason as Error });
        this.stats.assignmentsRefused += 1;
      } else if (outcome.value !== null && !outcome.value.ok) {
        log.debug('assignment refused', { refusal: outcome.value.refusal.message });
        this.stats.assignmentsRefused += 1;
      }
    }
    // More may fit (the plan is capped per round); a round with no free slot costs little.
    this.kickRequested = true;
  }

  /**
   * The loads still under way: an entry goes once its node shows the model in VRAM, or
   * once it is preloadOverdueMs past when it should have been done (refused, failed, or the
   * node gone), after which placement counts the full load there again.
   */
  private loadsUnderWay(nodes: readonly NodeView[], nowMs: number): Map<string, number> {
    if (this.loading.size === 0) return this.loading;
    const loaded = new Set<string>();
    for (const node of nodes) for (const model of node.modelsLoaded) loaded.add(nodeModelKey(node.id, model));
    for (const [key, readyAt] of this.loading) {
      if (loaded.has(key) || nowMs > readyAt + preloadOverdueMs) this.loading.delete(key);
    }
    return this.loading;
  }

  /** Views of the nodes from their heartbeats; this node's from its probe. */
  nodeViews(state: ReplicatedState): NodeView[] {
    // Running counts come from the log, not from heartbeats up to a second old: with fast
    // tasks a heartbeat's count is stale at once, and placement would see phantom work.
    // The cost: another node's gateway work (which the heartbeat sums with its tasks) is
    // not seen here; it is seen in that node's bids, and this node's own via otherWork.
    const running = new Map<string, number>();
    for (const record of state.tasksWithStatus('running')) {
      const node = record.assignedNode as string;
      running.set(node, (running.get(node) ?? 0) + 1);
    }
    const views: NodeView[] = [];
    for (const member of this.deps.members()) {
      if (member.nodeId === this.deps.nodeId) {
        views.push({ ...this.deps.selfView(), running: (running.get(member.nodeId) ?? 0) + (this.deps.otherWork?.() ?? 0) });
        continue;
      }
      if (member.heartbeat === null || member.state === 'left') continue;
      const view = nodeViewFromHeartbeat(member.heartbeat, member.state === 'alive');
      views.push({ ...view, running: running.get(member.nodeId) ?? 0 });
    }
    if (!views.some((view) => view.id === this.deps.nodeId)) {
      views.push({ ...this.deps.selfView(), running: (running.get(this.deps.nodeId) ?? 0) + (this.deps.otherWork?.() ?? 0) });
    }
    return views;
  }

  /** A round after `ms`, unless one is already waiting. */
  private kickAfter(ms: number): void {
    if (this.bidHoldTimer !== null || this.stopped) return;
    this.bidHoldTimer = setTimeout(() => {
      this.bidHoldTimer = null;
      this.kick();
    }, Math.ceil(ms));
    this.bidHoldTimer.unref();
  }

  /**
   * What to ask bids for: the ready tasks more than one node with a free slot could take
   * now, and those nodes; null when no task has a choice to make.
   */
  private bidRequest(state: ReplicatedState, nodes: NodeView[], inFlight: Map<string, number>, now: number): { tasks: BidTask[]; expect: Set<string> } | null {
    const withSlot = nodes.filter((node) => node.alive && node.concurrencyLimit - (inFlight.get(node.id) ?? 0) > 0);
    if (withSlot.length < 2) return null;
    const tasks: BidTask[] = [];
    const expect = new Set<string>();
    const typicalByModel = new Map<string, number | undefined>();
    for (const { record } of readyTasks(state, now)) {
      if (tasks.length >= bidTasksPerRequestMax) break;
      if (record.pinnedNode !== null) continue;
      const candidates = eligibleNodes(record, withSlot);
      if (candidates.length < 2) continue;
      const requested = record.input.options?.['num_predict'];
      const expectedTokens = typeof requested === 'number' && requested > 0 ? Math.min(Math.round(requested), 1_000_000) : estimateDefaults.outputTokens;
      const model = record.input.model;
      if (model !== null && !typicalByModel.has(model)) typicalByModel.set(model, clusterSpeedPrior(nodes, model));
      const typical = model === null ? undefined : typicalByModel.get(model);
      tasks.push({
        id: record.id, model: record.input.model, capability: record.input.capability, expectedTokens,
        ...(typical === undefined ? {} : { typicalTokensPerSecond: Math.round(typical * 100) / 100 }),
      });
      for (const candidate of candidates) expect.add(candidate.node.id);
    }
    return tasks.length === 0 ? null : { tasks, expect };
  }

  /** This node's own bids, computed here, and the others', asked over gossip and awaited briefly. */
  private async gatherBids(state: ReplicatedState, request: { tasks: BidTask[]; expect: Set<string> }, term: number): Promise<Bid[]> {
    const { tasks, expect } = request;
    this.stats.bidRounds += 1;
    this.lastBidRoundAt = performance.now();
    const own = expect.has(this.deps.nodeId)
      ? estimateBids(state, this.deps.selfView(), tasks).map((bid) => ({ taskId: bid.taskId, node: this.deps.nodeId, estimateMs: bid.estimateMs }))
      : [];
    const asked = performance.now();
    const remote = await this.deps.bids.collect(tasks, [...expect], term, this.timing.bidWaitMs);
    this.stats.bidsReceived += remote.length;
    log.debug('bid round', { tasks: tasks.length, nodes: expect.size, bids: remote.length, waitedMs: Math.round(performance.now() - asked) });
    return [...own, ...remote];
  }

  /** Requeues attempts of dead, departed or long-unknown nodes, and attempts that overran. */
  private async recover(state: ReplicatedState, now: number): Promise<void> {
    const inFlight = state.inFlightByNode();
    if (inFlight.size === 0) return;
    const known = new Map<string, MemberView>();
    for (const member of this.deps.members()) known.set(member.nodeId, member);
    const gone = new Map<string, string>();
    for (const node of inFlight.keys()) {
      if (node === this.deps.nodeId) continue;
      const member = known.get(node);
      if (member === undefined) {
        const since = this.unknownSince.get(node) ?? now;
        this.unknownSince.set(node, since);
        if (now - since >= this.timing.unknownNodeGraceMs) gone.set(node, `node ${node} is not a known member (unheard of for ${now - since} ms)`);
        continue;
      }
      this.unknownSince.delete(node);
      // Named as people know it (this text becomes the attempt's error), with its id.
      const label = nodeLabel({ id: node, name: member.heartbeat?.name });
      if (member.state === 'dead') gone.set(node, `node ${label} stopped answering (declared dead)`);
      else if (member.state === 'left') gone.set(node, `node ${label} left the cluster`);
    }
    const requeues = new Map<string, CommandOf<'task.requeue'>>();
    for (const command of tasksToRequeue(state, gone.keys(), now, (node) => gone.get(node)!)) requeues.set(command.id, command);
    for (const command of timedOutTasks(state, now)) if (!requeues.has(command.id)) requeues.set(command.id, command);
    if (requeues.size === 0) return;
    const commands = [...requeues.values()].slice(0, assignmentsPerPlanMax);
    log.info('requeueing attempts', { count: commands.length, first: commands[0]!.reason });
    this.stats.requeuesProposed += commands.length;
    const outcomes = await Promise.allSettled(commands.map((command) => this.deps.propose(encodeCommand(command))));
    for (const outcome of outcomes) if (outcome.status === 'rejected') log.debug('requeue not committed', { error: outcome.reason as Error });
    // Anything cut by the per-round bound goes next round.
    if (requeues.size > commands.length) this.nextRecoveryAt = 0;
  }

  private async prune(state: ReplicatedState, now: number): Promise<void> {
    const counts = state.countsByStatus();
    const finished = counts.completed + counts.failed + counts.cancelled;
    if (finished === 0) return;
    try {
      this.stats.prunes += 1;
      const result = await this.deps.propose(encodeCommand({
        type: 'tasks.prune', at: now, keepFinishedMax: this.deps.keepFinishedTasks, keepFinishedMs: this.deps.keepFinishedTasksMs,
      }));
      if (result !== null && result.ok && result.prunedTaskIds.length > 0) log.info('pruned finished tasks', { count: result.prunedTaskIds.length });
    } catch (error) {
      log.debug('prune not committed', { error: error as Error });
    }
  }
}
