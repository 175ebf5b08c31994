// The deterministic simulator's tasks mode: the real Raft core with the real replicated task
// state (scheduler/state) on every node, the leader's real placement and recovery
// (scheduler/tasks) run each few ticks on the leader, a simulated executor on every node,
// and clients that submit (some with idempotency keys or dependencies) and cancel, under
// message loss, duplication, partitions and crashes, all drawn from one seed. TasksChecker
// checks the task invariants after every committed entry; after faults stop every
// acknowledged task must finish within a bound. Mirrors daemon/tasks/leader.ts and
// executor.ts without timers, I/O or Math.random.
import type { ClusterConfig, Message, NodeId, RaftOptions, Ready } from '../consensus/types.ts';
import { canonicalJson, validateTaskSubmit, type TaskInput } from '../../protocol/tasks.ts';
import { decodeCommand, encodeCommand, type Command } from '../state/commands.ts';
import { ReplicatedState, attemptEndedTask, type ApplyResult } from '../state/state.ts';
import type { NodeView } from '../tasks/node-view.ts';
import { assignmentCommand, planAssignments } from '../tasks/placement.ts';
import { tasksToRequeue, timedOutTasks } from '../tasks/recovery.ts';
import { InvariantViolation } from './checker.ts';
import { raftCore, type CoreFactory, type SimCore } from './core.ts';
import { SimDisk, StorageViolation } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { fnvNumber, fnvOffset, fnvString, hex32 } from './hash.ts';
import { cloneMessage, quietNetwork, SimNetwork } from './network.ts';
import { Prng } from './prng.ts';
import { TasksChecker } from './tasks-checker.ts';

export interface TasksSimOptions {
  seed: number;
  /** Voters, each also an executor: 3 or 5. */
  voters?: number;
  core?: CoreFactory;
  /**
   * A deliberately broken variant, to show the checker catches it: 'ignore-concurrency' is a
   * leader that plans as if every node had room for 100 tasks; 'accept-stale' a state that
   * takes a result from any attempt of an assigned or running task (no fencing).
   */
  broken?: TasksBrokenVariant | null;
  onTrace?: (line: string) => void;
}

export const tasksBrokenVariants = ['ignore-concurrency', 'accept-stale'] as const;
export type TasksBrokenVariant = typeof tasksBrokenVariants[number];

/**
 * The 'accept-stale' broken state: before applying a task.complete or task.fail, it rewrites a
 * stale attempt number to the current one, as a state that ignored the fencing token would.
 */
class StaleAcceptingState extends ReplicatedState {
  override apply(index: number, data: string): ApplyResult {
    if (data !== '') {
      const command = decodeCommand(data);
      if (command.type === 'task.complete' || command.type === 'task.fail') {
        const record = this.getTaskRecord(command.id);
        if (record !== undefined && (record.status === 'assigned' || record.status === 'running') && record.attempt !== command.attempt) {
          return super.apply(index, encodeCommand({ ...command, attempt: record.attempt }));
        }
      }
    }
    return super.apply(index, data);
  }
}

export interface TasksSeedStats {
  events: number;
  simulatedUs: number;
  submitsProposed: number;
  submitsAcknowledged: number;
  cancelsProposed: number;
  tasksCompleted: number;
  tasksFailed: number;
  tasksCancelled: number;
  /** Cancelled tasks that took the partial output their aborted attempt reported. */
  partialOutputsAccepted: number;
  assignmentsProposed: number;
  requeuesProposed: number;
  staleResultsRefused: number;
  lateResultsRefused: number;
  reportsLost: number;
  attemptsLostInCrashes: number;
  crashes: number;
  partitions: number;
  compactions: number;
  hashComparisons: number;
  /** Simulated time from the end of faults until every acknowledged task had finished. */
  drainUs: number;
}

export interface TasksSeedResult {
  seed: number;
  ok: boolean;
  failure: { invariant: string; message: string } | null;
  trace: string[];
  traceHash: string;
  stats: TasksSeedStats;
}

const tickPeriodUs = 10_000;
const electionTicks = 10;
const heartbeatTicks = 2;
/** The leader's scheduling round runs every this many of its ticks (the daemon: every few hundred ms). */
const leaderRoundTicks = 3;
/** The leader calls a peer dead after hearing nothing from it this long. */
const deadAfterUs = 1_000_000;
/** An assigned attempt not started within this long is requeued. */
const startTimeoutMs = 1_500;
/** The reporter looks for reports due this often; each report backs off 50 ms * 2^n up to 1 s, as the daemon's does. */
const reportRetryUs = 50_000;
const reportBackoffMaxUs = 1_000_000;
const reportGiveUpUs = 120_000_000;
const faultPhaseUs = 4_000_000;
/** After faults stop, every acknowledged task must finish within this much simulated time. */
const drainBoundUs = 60_000_000;
const eventsMax = 2_000_000;
const eventQueueCapacity = 100_000;
const localQueueMax = 64;
const acknowledgedMax = 400;
const traceRingSize = 300;
const compactAfterEntries = 200;
const readyRoundsMax = 1_000;

type TasksEvent =
  | { kind: 'tick'; node: number; incarnation: number }
  | { kind: 'deliver'; message: Message }
  | { kind: 'forward'; from: number; to: number; data: string; submitId: string | null }
  | { kind: 'finish'; node: number; incarnation: number; taskId: string; attempt: number }
  | { kind: 'report-retry'; node: number; incarnation: number }
  | { kind: 'client' }
  | { kind: 'fault' }
  | { kind: 'restart'; node: number }
  | { kind: 'heal' };

interface PendingReport {
  command: Extract<Command, { type: 'task.start' | 'task.complete' | 'task.fail' | 'task.output' }>;
  retry: number;
  nextUs: number;
  sinceUs: number;
}

interface LocalAttempt {
  taskId: string;
  attempt: number;
  phase: 'queued' | 'running';
}

interface TasksNode {
  id: NodeId;
  index: number;
  concurrencyLimit: number;
  disk: SimDisk;
  state: ReplicatedState;
  core: SimCore | null;
  incarnation: number;
  random: Prng;
  /** Attempts this node's executor holds, by task id. */
  attempts: Map<string, LocalAttempt>;
  /**
   * The reporter (daemon/tasks/reports.ts): task.start / complete / fail commands, keyed
   * `taskId:start` or `taskId:result`, resent with backoff until this node applies the entry
   * (accepted or refused), the task is finished, or the reporter gives up.
   */
  reports: Map<string, PendingReport>;
  /** Submissions this node proposed as leader: log index -> (term, client's id). */
  pendingSubmits: Map<number, { term: number; submitId: string }>;
  /** Leader: index of its last own proposal; it plans again only once that is applied. */
  proposedUpTo: number;
  leaderTicks: number;
  /** Leader: when it last heard from each peer. */
  heardUs: Map<NodeId, number>;
  /** Commit index on disk at the last restart: entries up to it are replays, not news. */
  replayUpTo: number;
  /** Leader: when it took office; a peer counts as heard then (a follower hears only its leader). */
  leaderSinceUs: number;
  /** Inside the Ready loop: a proposal made from within it is picked up by that loop, not a nested one. */
  draining: boolean;
}

export function emptyTasksStats(): TasksSeedStats {
  return {
    events: 0, simulatedUs: 0, submitsProposed: 0, submitsAcknowledged: 0, cancelsProposed: 0, tasksCompleted: 0, tasksFailed: 0,
    tasksCancelled: 0, partialOutputsAccepted: 0, assignmentsProposed: 0, requeuesProposed: 0, staleResultsRefused: 0, lateResultsRefused: 0, reportsLost: 0, attemptsLostInCrashes: 0,
    crashes: 0, partitions: 0, compactions: 0, hashComparisons: 0, drainUs: 0,
  };
}

export class TasksSimulation {
  readonly stats = emptyTasksStats();
  readonly checker: TasksChecker;
  private readonly options: TasksSimOptions;
  private readonly nodes: TasksNode[] = [];
  private readonly nodeIndex = new Map<NodeId, number>();
  private readonly queue = new EventQueue<TasksEvent>(eventQueueCapacity);
  private readonly network: SimNetwork;
  private readonly clientRandom: Prng;
  private readonly faultRandom: Prng;
  private readonly dropProbability: number;
  private nowUs = 0;
  private quiet = false;
  private traceHash = fnvOffset;
  private readonly traceRing: string[] = [];
  private submitCounter = 0;
  /** Keyed submissions made so far (key -> input), so a client can retry one. */
  private readonly keyed: { key: string; input: TaskInput }[] = [];
  /** Client-side ids of submissions in flight; the acknowledged task id arrives with the apply. */
  private readonly acknowledgedIds: string[] = [];

  constructor(options: TasksSimOptions) {
    this.options = options;
    const voters = options.voters ?? 3;
    const root = new Prng(options.seed);
    const ids: NodeId[] = [];
    for (let index = 0; index < voters; index++) ids.push(`n${index + 1}`);
    this.dropProbability = root.pick([0, 0.01, 0.05, 0.1]);
    this.network = new SimNetwork({
      nodes: ids, delayMinUs: 100, delayMaxUs: root.range(1_000, 8_000), slowDelayMaxUs: root.range(20_000, 200_000),
      faults: { dropProbability: this.dropProbability, duplicateProbability: root.pick([0, 0.01, 0.05]), slowProbability: root.pick([0, 0.02]) },
      inFlightMax: 20_000,
    }, root.fork());
    this.clientRandom = root.fork();
    this.faultRandom = root.fork();
    const limits = new Map<string, number>();
    const initialConfig: ClusterConfig = { voters: [...ids], learners: [] };
    for (const [index, id] of ids.entries()) {
      const random = root.fork();
      const concurrencyLimit = random.range(1, 3);
      limits.set(id, concurrencyLimit);
      this.nodeIndex.set(id, index);
      this.nodes.push({
        id, index, concurrencyLimit, disk: new SimDisk(initialConfig), state: this.newState(), core: null, incarnation: 0, random,
        attempts: new Map(), reports: new Map(), pendingSubmits: new Map(), proposedUpTo: 0, leaderTicks: 0, heardUs: new Map(), replayUpTo: 0,
        leaderSinceUs: 0, draining: false,
      });
    }
    this.checker = new TasksChecker(limits);
  }

  run(): TasksSeedResult {
    let failure: TasksSeedResult['failure'] = null;
    try {
      for (const node of this.nodes) this.start(node);
      this.queue.push(this.clientRandom.range(1_000, 50_000), { kind: 'client' });
      this.queue.push(this.faultRandom.range(50_000, 400_000), { kind: 'fault' });
      while (this.nowUs < faultPhaseUs) this.step();
      this.beginQuiet();
      const quietStartUs = this.nowUs;
      for (;;) {
        this.step();
        if (this.nowUs - quietStartUs > drainBoundUs || this.stats.events > eventsMax) {
          const leader = this.leader();
          const open = leader === null ? ['(no leader)'] : this.checker.unfinished(leader.state);
          throw new InvariantViolation('liveness', `${drainBoundUs / 1e6} s after faults stopped, ${open.length} acknowledged tasks are unfinished: ${open.slice(0, 5).join(', ')}`);
        }
        if (this.allFinished()) break;
      }
      this.stats.drainUs = this.nowUs - quietStartUs;
    } catch (error) {
      if (error instanceof InvariantViolation) failure = { invariant: error.invariant, message: error.message };
      else if (error instanceof StorageViolation) failure = { invariant: 'storage contract', message: error.message };
      else failure = { invariant: 'crash', message: error instanceof Error ? (error.stack ?? error.message) : String(error) };
      this.record(`FAILED ${failure.message}`);
    }
    this.stats.simulatedUs = this.nowUs;
    this.stats.staleResultsRefused = this.checker.counters.staleResultsRefused;
    this.stats.lateResultsRefused = this.checker.counters.lateResultsRefused;
    this.stats.hashComparisons = this.checker.counters.hashComparisons;
    this.stats.partialOutputsAccepted = this.checker.counters.partialOutputsAccepted;
    const reference = this.leader() ?? this.nodes[0] as TasksNode;
    const counts = reference.state.countsByStatus();
    this.stats.tasksCompleted = counts.completed;
    this.stats.tasksFailed = counts.failed;
    this.stats.tasksCancelled = counts.cancelled;
    return { seed: this.options.seed, ok: failure === null, failure, trace: failure === null ? [] : [...this.traceRing], traceHash: hex32(this.traceHash), stats: this.stats };
  }

  /** Every acknowledged task is terminal on the leader, and every node has applied all the leader has. */
  private allFinished(): boolean {
    const leader = this.leader();
    if (leader === null || leader.core === null) return false;
    if (this.checker.unfinished(leader.state).length > 0) return false;
    const applied = leader.state.lastApplied;
    return this.nodes.every((node) => node.core !== null && node.state.lastApplied >= applied);
  }

  private leader(): TasksNode | null {
    return this.nodes.find((node) => node.core !== null && node.core.status().role === 'leader') ?? null;
  }

  private record(line: string): void {
    const text = `${(this.nowUs / 1000).toFixed(3)}ms ${line}`;
    this.options.onTrace?.(text);
    if (this.traceRing.length >= traceRingSize) this.traceRing.shift();
    this.traceRing.push(text);
  }

  private hash(...values: number[]): void {
    for (const value of values) this.traceHash = fnvNumber(this.traceHash, value);
  }

  private step(): void {
    const next = this.queue.pop();
    if (next === undefined) throw new Error('the event queue ran dry: ticks should always be scheduled');
    this.nowUs = next.timeUs;
    this.stats.events++;
    const event = next.event;
    switch (event.kind) {
      case 'tick': {
        const node = this.nodes[event.node] as TasksNode;
        if (node.core === null || node.incarnation !== event.incarnation) return;
        this.hash(1, node.index, this.nowUs);
        node.core.tick();
        this.queue.push(this.nowUs + tickPeriodUs, event);
        this.drain(node);
        this.leaderRound(node);
        return;
      }
      case 'deliver': {
        const message = event.message;
        const node = this.nodes[this.nodeIndex.get(message.to) as number] as TasksNode;
        if (node.core === null) {
          this.network.discard();
          return;
        }
        if (!this.network.arrive(message)) return;
        this.hash(2, node.index, message.term, message.logIndex ?? 0);
        node.heardUs.set(message.from, this.nowUs);
        node.core.step(message);
        this.drain(node);
        return;
      }
      case 'forward': {
        const node = this.nodes[event.to] as TasksNode;
        this.hash(3, event.from, event.to);
        if (node.core === null || node.core.status().role !== 'leader') {
          this.stats.reportsLost++;
          return;
        }
        this.proposeOn(node, event.data, event.submitId);
        return;
      }
      case 'finish': {
        const node = this.nodes[event.node] as TasksNode;
        if (node.core === null || node.incarnation !== event.incarnation) return;
        this.hash(4, node.index, event.attempt);
        this.finishAttempt(node, event.taskId, event.attempt);
        return;
      }
      case 'report-retry': {
        const node = this.nodes[event.node] as TasksNode;
        if (node.core === null || node.incarnation !== event.incarnation) return;
        this.sendReports(node);
        this.queue.push(this.nowUs + reportRetryUs, event);
        return;
      }
      case 'client':
        this.clientAction();
        this.queue.push(this.nowUs + this.clientRandom.range(5_000, this.quiet ? 400_000 : 80_000), event);
        return;
      case 'fault':
        if (this.quiet) return;
        this.faultAction();
        this.queue.push(this.nowUs + this.faultRandom.range(50_000, 600_000), event);
        return;
      case 'restart': {
        const node = this.nodes[event.node] as TasksNode;
        if (node.core === null) this.start(node);
        return;
      }
      case 'heal':
        if (this.network.partitioned) {
          this.network.heal();
          this.record('net: healed');
        }
        return;
    }
  }

  private start(node: TasksNode): void {
    const options: RaftOptions = {
      id: node.id, electionTicks, heartbeatTicks, driftTicks: 0, preVote: true, checkQuorum: true,
      maxEntriesPerAppend: 32, maxBytesPerAppend: 256 * 1024, maxInflightAppends: 4,
      randomInt: (n) => node.random.int(n),
    };
    const restore = node.disk.restore();
    node.state = restore.snapshot === null ? this.newState() : this.restoreState(restore.snapshot.data);
    node.attempts.clear();
    node.disk.crashed();
    node.reports.clear();
    node.pendingSubmits.clear();
    node.proposedUpTo = 0;
    node.leaderTicks = 0;
    node.heardUs.clear();
    node.draining = false;
    node.replayUpTo = restore.hardState.commit;
    node.core = (this.options.core ?? raftCore)(options, restore);
    this.record(`${node.id} started: term ${restore.hardState.term} commit ${restore.hardState.commit} snapshot ${restore.snapshot?.index ?? 0}`);
    this.queue.push(this.nowUs + 1 + node.random.int(tickPeriodUs), { kind: 'tick', node: node.index, incarnation: node.incarnation });
    this.queue.push(this.nowUs + reportRetryUs, { kind: 'report-retry', node: node.index, incarnation: node.incarnation });
    this.drain(node);
  }

  private crash(node: TasksNode): void {
    this.stats.crashes++;
    this.stats.attemptsLostInCrashes += node.attempts.size;
    node.core = null;
    node.incarnation++;
    node.attempts.clear();
    node.reports.clear();
    node.pendingSubmits.clear();
    this.record(`${node.id} CRASH (disk: commit ${node.disk.hardState.commit}, log ..${node.disk.lastIndex})`);
  }

  /** The daemon's Ready loop: persist, send, apply, advance. */
  private drain(node: TasksNode): void {
    if (node.draining) return;
    node.draining = true;
    try {
      for (let round = 0; ; round++) {
        const core = node.core;
        if (core === null || !core.hasReady()) return;
        if (round >= readyRoundsMax) throw new InvariantViolation('progress', `${node.id} produced ${readyRoundsMax} Ready batches in a row`);
        const ready = core.ready();
        node.disk.persist(ready.snapshot, ready.entries, ready.hardState);
        for (const message of ready.messages) {
          for (const delay of this.network.send(message)) this.queue.push(this.nowUs + delay, { kind: 'deliver', message: cloneMessage(message) });
        }
        this.apply(node, ready);
        core.advance(ready);
        this.maybeCompact(node);
      }
    } finally {
      node.draining = false;
    }
  }

  private apply(node: TasksNode, ready: Ready): void {
    if (ready.snapshot !== null) {
      node.state = this.restoreState(ready.snapshot.data);
      for (const index of node.pendingSubmits.keys()) if (index <= ready.snapshot.index) node.pendingSubmits.delete(index);
    }
    if (ready.committed.length === 0 && ready.snapshot === null) return;
    for (const entry of ready.committed) {
      if (entry.index <= node.state.lastApplied) continue;
      if (entry.type !== 'normal' || entry.data === '') {
        node.state.apply(entry.index, '');
        continue;
      }
      const command = decodeCommand(entry.data);
      const result = node.state.apply(entry.index, entry.data);
      this.checker.onCommitted(entry.index, command, result, node.state);
      this.hash(5, node.index, entry.index);
      const submit = node.pendingSubmits.get(entry.index);
      if (submit !== undefined) {
        node.pendingSubmits.delete(entry.index);
        if (submit.term === entry.term && result.ok && result.task !== null && this.checker.acknowledged.size < acknowledgedMax) {
          this.checker.onAcknowledged(result.task.id, entry.index);
          this.acknowledgedIds.push(result.task.id);
          this.stats.submitsAcknowledged++;
        }
      }
      if (entry.index > node.replayUpTo) this.reportApplied(node, command);
      // The executor hears of new assignments (not replays of ones it lost in a crash).
      if (command.type === 'task.assign' && result.ok && command.node === node.id && entry.index > node.replayUpTo) this.takeAttempt(node, command.id, command.attempt);
    }
    this.checker.onStateAt(node.id, node.state.lastApplied, hex32(fnvString(fnvOffset, node.state.snapshot())));
    this.reconcileAttempts(node);
  }

  private maybeCompact(node: TasksNode): void {
    const core = node.core;
    if (core === null) return;
    const applied = node.state.lastApplied;
    if (applied - node.disk.snapshotIndex < compactAfterEntries || applied > node.disk.lastIndex) return;
    const snapshot = core.compact(applied, node.state.snapshot());
    if (snapshot === null) return;
    node.disk.compact(snapshot);
    this.stats.compactions++;
  }

  // ---------------------------------------------------------------------------------------
  // The executor

  private takeAttempt(node: TasksNode, taskId: string, attempt: number): void {
    if (node.attempts.size >= localQueueMax) return;
    node.attempts.set(taskId, { taskId, attempt, phase: 'queued' });
    this.startQueued(node);
  }

  /** Starts queued attempts while a slot is free: task.start now, the result after a seeded delay. */
  private startQueued(node: TasksNode): void {
    let running = 0;
    for (const local of node.attempts.values()) if (local.phase === 'running') running++;
    for (const local of node.attempts.values()) {
      if (running >= node.concurrencyLimit) return;
      if (local.phase !== 'queued') continue;
      local.phase = 'running';
      running++;
      this.report(node, `${local.taskId}:start`, { type: 'task.start', id: local.taskId, attempt: local.attempt, node: node.id, at: this.nowMs() });
      // Mostly short generations; some overrun their task's timeout and are requeued under them.
      const durationUs = node.random.chance(0.1) ? node.random.range(1_000_000, 4_000_000) : node.random.range(20_000, 900_000);
      this.queue.push(this.nowUs + durationUs, { kind: 'finish', node: node.index, incarnation: node.incarnation, taskId: local.taskId, attempt: local.attempt });
    }
    this.sendReports(node);
  }

  private finishAttempt(node: TasksNode, taskId: string, attempt: number): void {
    const local = node.attempts.get(taskId);
    if (local === undefined || local.attempt !== attempt) return;
    const usage = { promptTokens: 10, completionTokens: 20, tokensPerSecond: 40, loadMs: 0, totalMs: 500 };
    const command: PendingReport['command'] = node.random.chance(0.15)
      ? { type: 'task.fail', id: taskId, attempt, error: 'simulated generation error', retryable: node.random.chance(0.8), at: this.nowMs() }
      : { type: 'task.complete', id: taskId, attempt, output: `output of ${taskId}/${attempt}`, usage, at: this.nowMs() };
    this.report(node, `${taskId}:result`, command);
    this.sendReports(node);
  }

  private report(node: TasksNode, key: string, command: PendingReport['command']): void {
    node.reports.set(key, { command, retry: 0, nextUs: this.nowUs, sinceUs: this.nowUs });
  }

  /**
   * Aborts attempts the log no longer has live here (cancelled, requeued, finished,
   * reassigned). Their reports stay with the reporter, as in the daemon: a result already
   * produced is still sent, and the log's fencing must refuse it.
   */
  private reconcileAttempts(node: TasksNode): void {
    let freed = false;
    for (const [taskId, local] of node.attempts) {
      const record = node.state.getTaskRecord(taskId);
      const live = record !== undefined && record.attempt === local.attempt && record.assignedNode === node.id
        && (record.status === 'assigned' || record.status === 'running');
      if (live) continue;
      node.attempts.delete(taskId);
      freed = true;
      // A running generation cut short by a cancel reports what it had generated, as the
      // daemon's executor does (most; one that had produced no text yet reports nothing).
      if (record?.status === 'cancelled' && record.attempt === local.attempt && local.phase === 'running' && node.random.chance(0.8)) {
        this.report(node, `${taskId}:output`, { type: 'task.output', id: taskId, attempt: local.attempt, output: `part of ${taskId}/${local.attempt}`, at: this.nowMs() });
      }
    }
    for (const [key, pending] of node.reports) {
      const record = node.state.getTaskRecord(pending.command.id);
      const wanted = pending.command.type === 'task.output'
        ? record !== undefined && attemptEndedTask(record, pending.command.attempt) && record.output === null
        : record !== undefined && record.status !== 'completed' && record.status !== 'failed' && record.status !== 'cancelled';
      if (!wanted) node.reports.delete(key);
    }
    if (freed) this.startQueued(node);
  }

  /** The reporter heard back: this node applied the entry of one of its reports (accepted or refused). */
  private reportApplied(node: TasksNode, command: Command): void {
    if (command.type !== 'task.start' && command.type !== 'task.complete' && command.type !== 'task.fail' && command.type !== 'task.output') return;
    const key = `${command.id}:${command.type === 'task.start' ? 'start' : command.type === 'task.output' ? 'output' : 'result'}`;
    const pending = node.reports.get(key);
    if (pending !== undefined && pending.command.attempt === command.attempt && pending.command.type === command.type) {
      node.reports.delete(key);
      // Its own failure ended the task for good: the attempt's text is reported, as the
      // daemon's executor does (when it had generated some).
      const record = node.state.getTaskRecord(command.id);
      if (command.type === 'task.fail' && record !== undefined && attemptEndedTask(record, command.attempt) && node.random.chance(0.8)) {
        this.report(node, `${command.id}:output`, { type: 'task.output', id: command.id, attempt: command.attempt, output: `part of ${command.id}/${command.attempt}`, at: this.nowMs() });
      }
    }
  }

  /** Sends every report that is due to the node this one believes leads (it may be wrong, or the message lost). */
  private sendReports(node: TasksNode): void {
    for (const [key, pending] of node.reports) {
      if (this.nowUs - pending.sinceUs > reportGiveUpUs) {
        node.reports.delete(key);
        continue;
      }
      if (pending.nextUs > this.nowUs) continue;
      // A result waits until the log has the start, so the log keeps the order.
      if (key.endsWith(':result') && node.reports.has(`${pending.command.id}:start`)) continue;
      pending.retry++;
      pending.nextUs = this.nowUs + Math.min(reportBackoffMaxUs, 50_000 * 2 ** Math.min(pending.retry - 1, 10));
      this.forward(node, encodeCommand(pending.command), null);
    }
  }

  private forward(from: TasksNode, data: string, submitId: string | null): void {
    const leaderId = from.core?.status().leader ?? null;
    if (leaderId === null) {
      this.stats.reportsLost++;
      return;
    }
    const to = this.nodes[this.nodeIndex.get(leaderId) as number] as TasksNode;
    if (to === from) {
      this.proposeOn(to, data, submitId);
      return;
    }
    if (this.network.isCut(from.id, to.id) || this.faultRandom.chance(this.quiet ? 0 : this.dropProbability)) {
      this.stats.reportsLost++;
      return;
    }
    // Some forwards take a slow path while faults last (a stream stuck behind TCP retransmits),
    // so a report can land after its attempt was requeued, even after the task was reassigned.
    const delayUs = !this.quiet && from.random.chance(0.1) ? from.random.range(50_000, 3_000_000) : from.random.range(100, 5_000);
    this.queue.push(this.nowUs + delayUs, { kind: 'forward', from: from.index, to: to.index, data, submitId });
  }

  private proposeOn(node: TasksNode, data: string, submitId: string | null): number | null {
    const core = node.core as SimCore;
    const result = core.propose(data);
    if (!result.ok) return null;
    if (submitId !== null) node.pendingSubmits.set(result.index, { term: result.term, submitId });
    this.drain(node);
    return result.index;
  }

  // ---------------------------------------------------------------------------------------
  // The leader's scheduling round (daemon/tasks/leader.ts)

  private leaderRound(node: TasksNode): void {
    const core = node.core;
    if (core === null) return;
    const status = core.status();
    if (status.role !== 'leader') {
      node.leaderTicks = 0;
      node.proposedUpTo = 0;
      return;
    }
    // A new leader first catches its state up with everything in its log.
    if (node.proposedUpTo === 0) {
      node.proposedUpTo = status.lastIndex;
      node.leaderSinceUs = this.nowUs;
    }
    if (++node.leaderTicks % leaderRoundTicks !== 0) return;
    if (node.state.lastApplied < node.proposedUpTo) return;
    const nowMs = this.nowMs();
    const views: NodeView[] = this.nodes.map((peer) => {
      const heard = peer === node ? this.nowUs : Math.max(node.heardUs.get(peer.id) ?? 0, node.leaderSinceUs);
      return {
        id: peer.id, alive: this.nowUs - heard < deadAfterUs, modelsInstalled: ['llama3'], modelsLoaded: ['llama3'], tokensPerSecond: { llama3: 40 },
        running: 0, concurrencyLimit: this.options.broken === 'ignore-concurrency' ? 100 : peer.concurrencyLimit, agents: [],
      };
    });
    const dead = views.filter((view) => !view.alive).map((view) => view.id);
    const requeues = new Map<string, Command>();
    for (const command of tasksToRequeue(node.state, dead, nowMs)) requeues.set(command.id, command);
    for (const command of timedOutTasks(node.state, nowMs, { startTimeoutMs })) if (!requeues.has(command.id)) requeues.set(command.id, command);
    const commands: Command[] = [...requeues.values()];
    this.stats.requeuesProposed += commands.length;
    if (commands.length === 0) {
      const plan = planAssignments(node.state, views, [], nowMs);
      for (const assignment of plan.assignments) commands.push(assignmentCommand(assignment, status.term, nowMs));
      this.stats.assignmentsProposed += plan.assignments.length;
    }
    for (const command of commands) {
      const index = this.proposeOn(node, encodeCommand(command), null);
      if (index === null || node.core === null) return;
      node.proposedUpTo = index;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Clients and faults

  private clientAction(): void {
    const random = this.clientRandom;
    const live = this.nodes.filter((node) => node.core !== null);
    if (live.length === 0) return;
    const via = random.pick(live);
    // Few submissions after faults stop: the run must drain.
    const action = random.weighted([this.quiet ? 1 : 10, this.acknowledgedIds.length > 0 ? 2 : 0]);
    if (action === 0) {
      if (this.checker.acknowledged.size >= acknowledgedMax) return;
      const submitId = `t${++this.submitCounter}`;
      let input: TaskInput;
      if (this.keyed.length > 0 && random.chance(0.15)) {
        input = (random.pick(this.keyed)).input; // a client retrying a keyed submission
      } else {
        const dependsOn = this.acknowledgedIds.length > 0 && random.chance(0.25) ? [random.pick(this.acknowledgedIds)] : [];
        const idempotencyKey = random.chance(0.4) ? `key-${submitId}` : undefined;
        const validation = validateTaskSubmit({
          model: 'llama3', prompt: `task ${submitId}`, dependsOn, idempotencyKey,
          timeoutMs: random.range(1_000, 3_000), maxAttempts: random.range(1, 4), priority: random.range(0, 10),
        });
        if (!validation.ok) throw new Error(`the simulator built an invalid submission: ${JSON.stringify(validation.errors)}`);
        input = validation.input;
        if (idempotencyKey !== undefined) this.keyed.push({ key: idempotencyKey, input });
      }
      const command: Command = {
        type: 'task.submit', id: submitId, input, at: this.nowMs(), idempotencyKey: input.idempotencyKey,
        bodyHash: hex32(fnvString(fnvOffset, canonicalJson(input))),
      };
      this.stats.submitsProposed++;
      this.forward(via, encodeCommand(command), submitId);
    } else {
      const id = random.pick(this.acknowledgedIds);
      this.stats.cancelsProposed++;
      this.forward(via, encodeCommand({ type: 'task.cancel', id, at: this.nowMs() }), null);
    }
  }

  private faultAction(): void {
    const random = this.faultRandom;
    const action = random.weighted([2, 2, 3]);
    if (action === 0) {
      const live = this.nodes.filter((node) => node.core !== null);
      if (live.length === 0) return;
      const node = random.pick(live);
      this.crash(node);
      this.queue.push(this.nowUs + random.range(10_000, 800_000), { kind: 'restart', node: node.index });
    } else if (action === 1) {
      const node = random.pick(this.nodes);
      this.stats.partitions++;
      this.network.isolate(node.id);
      this.record(`net: isolate ${node.id}`);
      this.queue.push(this.nowUs + random.range(50_000, 4_000_000), { kind: 'heal' });
    }
    // Otherwise nothing: quiet stretches let work get done between storms.
  }

  private beginQuiet(): void {
    this.quiet = true;
    this.network.heal();
    this.network.faults = quietNetwork;
    this.record('faults stop: network healed, crashed nodes restart');
    for (const node of this.nodes) if (node.core === null) this.start(node);
  }

  private newState(): ReplicatedState {
    return this.options.broken === 'accept-stale' ? new StaleAcceptingState() : new ReplicatedState();
  }

  private restoreState(text: string): ReplicatedState {
    const state = ReplicatedState.restore(text);
    // restore() is static and builds the real class; the broken variant must survive snapshots.
    if (this.options.broken === 'accept-stale') Object.setPrototypeOf(state, StaleAcceptingState.prototype);
    return state;
  }

  private nowMs(): number {
    return Math.floor(this.nowUs / 1000);
  }
}

/** Runs one seed of the tasks mode. */
export function runTasksSeed(options: TasksSimOptions): TasksSeedResult {
  return new TasksSimulation(options).run();
}
