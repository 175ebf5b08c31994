// The deterministic cluster simulator (in the manner of TigerBeetle's VOPR and FoundationDB's
// simulation): N consensus cores driven exactly as the daemon drives them, over a simulated
// network, clocks and disks, with clients, crashes and partitions drawn from one seed. The
// checker verifies Raft's safety invariants and read linearizability after every step, and
// the run ends with a liveness check once faults stop. The same seed replays the same run.
import type { ClusterConfig, ConfigChange, Entry, Message, NodeId, RaftOptions, Ready, Role, Snapshot } from '../consensus/types.ts';
import { Checker, InvariantViolation } from './checker.ts';
import { describeDriftBreach, drawTickPeriods } from './clock.ts';
import type { CoreFactory, SimCore } from './core.ts';
import { SimDisk, StorageViolation } from './disk.ts';
import { EventQueue } from './event-queue.ts';
import { fnvNumber, fnvOffset, fnvString, hex32 } from './hash.ts';
import { encodeSet, KvStateMachine } from './kv.ts';
import { cloneMessage, quietNetwork, SimNetwork, type NetworkFaults } from './network.ts';
import { garble } from './garble.ts';
import { Prng } from './prng.ts';
import { nextConfigChange, type KnownNode } from '../consensus/voter-policy.ts';
import { committedBeforeBatch, sendableBeforePersist } from '../consensus/raft.ts';

export interface SimOptions {
  seed: number;
  /** Voters at the start: 3 or 5. Two more nodes start outside the cluster, to be added. */
  voters: number;
  /** Events processed in the faulty phase; the quiet phase (liveness) comes after. */
  steps: number;
  core: CoreFactory;
  /** Receives each trace line as it happens (the CLI's --verbose). */
  onTrace?: (line: string) => void;
  /** Overrides for the scenario drawn from the seed (tests use them to force situations). */
  scenario?: Partial<Scenario>;
}

/** Everything about a run that the seed decides before the first event. */
export interface Scenario {
  electionTicks: number;
  heartbeatTicks: number;
  driftTicks: number;
  baseTickUs: number;
  /** Tick period of each node, within the drift bound. */
  tickPeriodsUs: number[];
  spareNodes: number;
  network: NetworkFaults;
  delayMinUs: number;
  delayMaxUs: number;
  slowDelayMaxUs: number;
  /** Mean gap between client operations and between faults (uniform in [0, 2 * mean]). */
  clientGapMeanUs: number;
  faultGapMeanUs: number;
  maxEntriesPerAppend: number;
  maxInflightAppends: number;
  /** A node compacts once it has applied this many entries past its snapshot. */
  compactAfterEntries: number;
  /** Whether clients change membership and transfer leadership in this run. */
  reconfigure: boolean;
  /** Clients demote or remove voters (the leader included) only while more than this many remain. */
  votersMin: number;
  /**
   * Who changes membership: 'random' clients, or the leader running the daemon's voter policy
   * (scheduler/consensus/voter-policy.ts) on what it can see, as production does.
   */
  membership: 'random' | 'policy';
  /** Voter policy: a voter unreachable this long is replaced. */
  replaceDeadAfterMs: number;
  /** Probability that a delivered message arrives structurally malformed (see garble.ts). */
  garbleProbability: number;
  /**
   * Process pauses (a stalled event loop, a GC pause, a suspended VM): after one, the daemon
   * catches its clock up, delivering the missed ticks before anything else. Set false to see
   * what happens to leases when a driver skips the missed ticks instead.
   */
  pauseTickCatchUp: boolean;
  /**
   * A write of a Ready's batch takes up to this long, during which messages, proposals and
   * ticks reach the node's core (and Raft.committedWhileWriting hands out what they
   * committed), as in the daemon. A leader sends its appends and heartbeats before its own
   * write finishes (Raft thesis 10.2.1). 0: every write is instant, and a leader writes,
   * then sends.
   */
  writeMaxUs: number;
}

export interface SeedStats {
  events: number;
  simulatedUs: number;
  elections: number;
  electionsInOneRound: number;
  /**
   * Elections that began in a quiet network (no partition, no voter of the campaigner's config
   * crashed or paused) and saw no fault until decided (no message dropped, cut off, duplicated
   * or garbled, no crash, pause or new partition anywhere).
   */
  electionsQuiet: number;
  /** Of those, the ones whose first campaign's term elected the leader (no second campaign). */
  electionsQuietInOneRound: number;
  entriesCommitted: number;
  writesProposed: number;
  writesAcknowledged: number;
  readsServed: number;
  leaseReadsServed: number;
  readsAbandoned: number;
  crashes: number;
  pauses: number;
  messagesGarbled: number;
  partitions: number;
  messagesDropped: number;
  messagesDuplicated: number;
  configChanges: number;
  transfers: number;
  compactions: number;
  snapshotsInstalled: number;
  /** Committed entries applied before their Ready's batch was written (applyDurable). */
  entriesAppliedEarly: number;
  /** Committed entries applied while the node's batch was being written (Raft.committedWhileWriting). */
  entriesAppliedWhileWriting: number;
  leaseIntervals: number;
  closestLeaseHandoverUs: number;
  /** Simulated time from the end of faults until a new write was applied on every member. */
  recoveryUs: number;
  /** Length of the stability window that passed (0 if the run did not get there). */
  stableUs: number;
}

export interface SeedResult {
  seed: number;
  ok: boolean;
  /** Set when an invariant broke (or the simulator crashed): what broke, in one paragraph. */
  failure: { invariant: string; message: string } | null;
  /** The last trace lines before the end (all of them on failure, up to the ring's size). */
  trace: string[];
  /** Hash over every event of the run: equal hashes mean identical runs. */
  traceHash: string;
  stats: SeedStats;
}

const traceRingSize = 400;
const readyRoundsMax = 1_000;
const pendingWritesPerNodeMax = 256;
const pendingReadsPerNodeMax = 256;
const eventQueueCapacity = 200_000;
const networkInFlightMax = 20_000;
/** Liveness: once faults stop, a leader must commit within this many maximal election timeouts. */
const livenessElectionTimeouts = 40;
/**
 * Stability: once the cluster has recovered and every message from the faulty phase has
 * landed, a healthy cluster keeps its leader (PreVote and CheckQuorum exist for this) for
 * this many maximal election timeouts.
 */
const stabilityElectionTimeouts = 2;
/** A quiet phase that runs away (a livelock processing events without time passing) is cut here. */
const quietEventsMax = 400_000;
const keys = ['a', 'b', 'c', 'd'];

type CrashPoint = 'before-persist' | 'after-early-send' | 'after-early-apply' | 'after-mid-write-apply' | 'after-persist' | 'after-send' | 'after-apply';
const crashPoints: CrashPoint[] = ['before-persist', 'after-early-send', 'after-early-apply', 'after-mid-write-apply', 'after-persist', 'after-send', 'after-apply'];

type SimEvent =
  | { kind: 'tick'; node: number; incarnation: number }
  | { kind: 'deliver'; message: Message }
  | { kind: 'client' }
  | { kind: 'fault' }
  | { kind: 'restart'; node: number }
  | { kind: 'heal' }
  | { kind: 'resume'; node: number; incarnation: number }
  | { kind: 'written'; node: number; incarnation: number };

interface PendingRead {
  key: string;
  lease: boolean;
  startUs: number;
  /** Set once the core answered with a ReadState. */
  index: number | null;
}

interface PendingWrite {
  term: number;
  key: string;
  value: string;
  proposedUs: number;
}

interface SimNode {
  id: NodeId;
  index: number;
  periodUs: number;
  disk: SimDisk;
  kv: KvStateMachine;
  core: SimCore | null;
  /** Bumped at every crash, so ticks scheduled by an earlier life are ignored. */
  incarnation: number;
  random: Prng;
  role: Role;
  term: number;
  config: ClusterConfig;
  crashPlan: CrashPoint | null;
  /** A Ready whose write is still under way (see writeMaxUs); its early messages left. */
  writing: { ready: Ready; early: Message[]; appliedEarly: number } | null;
  /** While now < pausedUntilUs the process is stalled: no ticks, no messages, no clients. */
  pausedUntilUs: number;
  /** Ticks its clock passed while the process was stalled. */
  missedTicks: number;
  /** Since when the voter policy has seen this node unreachable (null: reachable). */
  unreachableSinceUs: number | null;
  pendingReads: Map<string, PendingRead>;
  pendingWrites: Map<number, PendingWrite>;
}

interface TraceRecord {
  timeUs: number;
  node: string;
  what: string | Message;
}

const messageTypeCodes: Record<string, number> = {
  'pre-vote': 1, 'pre-vote-response': 2, vote: 3, 'vote-response': 4, append: 5, 'append-response': 6,
  heartbeat: 7, 'heartbeat-response': 8, snapshot: 9, 'snapshot-response': 10, 'timeout-now': 11,
};

export function describeMessage(message: Message): string {
  let text = `${message.from}->${message.to} ${message.type} t${message.term}`;
  if (message.logIndex !== undefined) text += ` log ${message.logIndex}/${message.logTerm ?? '?'}`;
  if (message.entries !== undefined && message.entries.length > 0) {
    const first = message.entries[0];
    const last = message.entries[message.entries.length - 1];
    text += ` entries ${first?.index}..${last?.index}`;
  }
  if (message.commit !== undefined) text += ` commit ${message.commit}`;
  if (message.reject !== undefined) text += message.reject ? ' REJECT' : ' ok';
  if (message.hintIndex !== undefined) text += ` hint ${message.hintIndex}/${message.hintTerm ?? '?'}`;
  if (message.snapshot !== undefined) text += ` snapshot ${message.snapshot.index}/${message.snapshot.term}`;
  if (message.context !== undefined) text += ` ctx ${message.context}`;
  if (message.transfer === true) text += ' transfer';
  if (message.quiet === true) text += ' quiet';
  return text;
}

function formatTime(timeUs: number): string {
  return `${(timeUs / 1000).toFixed(3).padStart(10)}ms`;
}

/** The scenario a seed stands for; overrides win over the seed's draws. */
export function drawScenario(random: Prng, voters: number, overrides: Partial<Scenario> = {}): Scenario {
  const electionTicks = overrides.electionTicks ?? random.pick([6, 10, 16]);
  const driftTicks = overrides.driftTicks ?? random.range(0, Math.floor(electionTicks / 4));
  const baseTickUs = 10_000;
  const spareNodes = overrides.spareNodes ?? 2;
  const tickPeriodsUs = overrides.tickPeriodsUs
    ?? drawTickPeriods(random, voters + spareNodes, baseTickUs, { electionTicks, driftTicks });
  const stormy = random.chance(0.5);
  // One run in ten is a hurricane: a network that loses, repeats and reorders a lot.
  const hurricane = random.chance(0.1);
  const scenario: Scenario = {
    electionTicks,
    heartbeatTicks: random.range(1, Math.max(1, Math.floor(electionTicks / 3))),
    driftTicks,
    baseTickUs,
    tickPeriodsUs,
    spareNodes,
    network: {
      dropProbability: hurricane ? 0.3 : stormy ? random.pick([0.02, 0.05, 0.15]) : random.pick([0, 0.01]),
      duplicateProbability: hurricane ? 0.2 : random.pick([0, 0.01, 0.05]),
      slowProbability: hurricane ? 0.3 : random.pick([0, 0.02, 0.1]),
    },
    delayMinUs: 100,
    delayMaxUs: random.pick([1_000, 3_000, 8_000]),
    // The longest slow path delivers messages from terms long gone.
    slowDelayMaxUs: random.pick([20_000, 60_000, 60_000, 500_000]),
    clientGapMeanUs: random.pick([2_000, 5_000, 10_000]),
    faultGapMeanUs: stormy ? random.pick([40_000, 100_000]) : random.pick([200_000, 400_000]),
    maxEntriesPerAppend: random.pick([1, 3, 64]),
    maxInflightAppends: random.pick([1, 4, 16]),
    compactAfterEntries: random.pick([5, 20, 1_000_000]),
    reconfigure: random.chance(0.6),
    votersMin: random.pick([1, 2, 3, 3]),
    membership: random.chance(0.5) ? 'policy' : 'random',
    replaceDeadAfterMs: random.pick([100, 300, 1_000]),
    garbleProbability: random.pick([0, 0, 0.002, 0.01]),
    pauseTickCatchUp: true,
    // Not drawn, so the draws above stay what they were for every seed.
    writeMaxUs: 2_000,
  };
  return { ...scenario, ...overrides };
}

export function emptyStats(): SeedStats {
  return {
    events: 0, simulatedUs: 0, elections: 0, electionsInOneRound: 0, electionsQuiet: 0, electionsQuietInOneRound: 0, entriesCommitted: 0,
    writesProposed: 0, writesAcknowledged: 0, readsServed: 0, leaseReadsServed: 0, readsAbandoned: 0,
    crashes: 0, pauses: 0, messagesGarbled: 0, partitions: 0, messagesDropped: 0, messagesDuplicated: 0, configChanges: 0,
    transfers: 0, compactions: 0, snapshotsInstalled: 0, entriesAppliedEarly: 0, entriesAppliedWhileWriting: 0, leaseIntervals: 0,
    closestLeaseHandoverUs: Number.POSITIVE_INFINITY, recoveryUs: 0, stableUs: 0,
  };
}

/** Derives the config as of `index` from a node's disk: snapshot config plus config entries. */
function configAt(disk: SimDisk, index: number): ClusterConfig {
  const base = disk.snapshot?.config ?? disk.initialConfig;
  const config: ClusterConfig = { voters: [...base.voters], learners: [...base.learners] };
  for (let position = disk.snapshotIndex + 1; position <= index; position++) {
    const entry = disk.entry(position);
    if (entry !== undefined && entry.type === 'config') applyConfigChange(config, JSON.parse(entry.data) as ConfigChange);
  }
  return config;
}

function sameConfig(a: ClusterConfig, b: ClusterConfig): boolean {
  const same = (x: NodeId[], y: NodeId[]) => x.length === y.length && [...x].sort().join(',') === [...y].sort().join(',');
  return same(a.voters, b.voters) && same(a.learners, b.learners);
}

function describeConfig(config: ClusterConfig): string {
  return `voters {${config.voters.join(',')}} learners {${config.learners.join(',')}}`;
}

function applyConfigChange(config: ClusterConfig, change: ConfigChange): void {
  const without = (list: NodeId[]) => list.filter((node) => node !== change.node);
  switch (change.type) {
    case 'add-learner':
      if (!config.voters.includes(change.node) && !config.learners.includes(change.node)) config.learners.push(change.node);
      break;
    case 'promote':
      config.learners = without(config.learners);
      if (!config.voters.includes(change.node)) config.voters.push(change.node);
      break;
    case 'demote':
      config.voters = without(config.voters);
      if (!config.learners.includes(change.node)) config.learners.push(change.node);
      break;
    case 'remove':
      config.voters = without(config.voters);
      config.learners = without(config.learners);
      break;
  }
}

export class Simulation {
  readonly options: SimOptions;
  readonly scenario: Scenario;
  readonly stats: SeedStats = emptyStats();
  readonly checker = new Checker({ pendingReadsMax: 10_000 });
  private readonly nodes: SimNode[] = [];
  private readonly nodeIndex = new Map<NodeId, number>();
  private readonly queue = new EventQueue<SimEvent>(eventQueueCapacity);
  private readonly network: SimNetwork;
  private readonly clientRandom: Prng;
  private readonly faultRandom: Prng;
  /** Its own stream, so that turning garbling on or off leaves every other draw alone. */
  private readonly garbleRandom: Prng;
  /** How long a leader's early-sent batch takes to write; forked last, so other streams stay as they were. */
  private readonly diskRandom: Prng;
  private nowUs = 0;
  private traceHash = fnvOffset;
  private readonly traceRing: TraceRecord[] = [];
  private traceNext = 0;
  private valueCounter = 0;
  private readCounter = 0;
  private highestLeaderTerm = 0;
  /** The election under way (first campaign past the highest leader term), for the quiet-election figure. */
  private openElection: { term: number; quietAtStart: boolean; faultMark: number } | null = null;
  private quiet = false;
  private quietStartUs = 0;
  /** Index of the first write proposed and acknowledged after faults stopped. */
  private livenessIndex: number | null = null;
  private finished = false;

  constructor(options: SimOptions) {
    this.options = options;
    if (options.voters < 1 || options.voters > 7) throw new RangeError(`voters must be between 1 and 7, got ${options.voters}`);
    const root = new Prng(options.seed);
    this.scenario = drawScenario(root.fork(), options.voters, options.scenario);
    const scenario = this.scenario;
    const ids: NodeId[] = [];
    for (let index = 0; index < options.voters + scenario.spareNodes; index++) ids.push(`n${index + 1}`);
    if (scenario.tickPeriodsUs.length !== ids.length) throw new RangeError(`scenario has ${scenario.tickPeriodsUs.length} tick periods for ${ids.length} nodes`);
    this.network = new SimNetwork({
      nodes: ids,
      delayMinUs: scenario.delayMinUs,
      delayMaxUs: scenario.delayMaxUs,
      slowDelayMaxUs: scenario.slowDelayMaxUs,
      faults: scenario.network,
      inFlightMax: networkInFlightMax,
    }, root.fork());
    this.clientRandom = root.fork();
    this.faultRandom = root.fork();
    this.garbleRandom = root.fork();
    const initialConfig: ClusterConfig = { voters: ids.slice(0, options.voters), learners: [] };
    for (const [index, id] of ids.entries()) {
      this.nodeIndex.set(id, index);
      this.nodes.push({
        id, index,
        periodUs: scenario.tickPeriodsUs[index] as number,
        disk: new SimDisk(initialConfig),
        kv: new KvStateMachine(),
        core: null,
        incarnation: 0,
        random: root.fork(),
        role: 'follower',
        term: 0,
        config: initialConfig,
        crashPlan: null,
        writing: null,
        pausedUntilUs: 0,
        missedTicks: 0,
        unreachableSinceUs: null,
        pendingReads: new Map(),
        pendingWrites: new Map(),
      });
    }
    this.diskRandom = root.fork();
  }

  /** Runs the faulty phase, then the quiet phase until liveness is shown or its bound passes. */
  run(): SeedResult {
    let failure: SeedResult['failure'] = null;
    try {
      const breach = describeDriftBreach(this.scenario.tickPeriodsUs, { electionTicks: this.scenario.electionTicks, driftTicks: this.scenario.driftTicks });
      this.record('sim', `scenario ${JSON.stringify({ ...this.scenario, tickPeriodsUs: undefined })} periods ${this.scenario.tickPeriodsUs.join(',')}us${breach === null ? '' : ` (BEYOND THE DRIFT BOUND: ${breach})`}`);
      for (const node of this.nodes) this.start(node);
      this.queue.push(this.gap(this.clientRandom, this.scenario.clientGapMeanUs), { kind: 'client' });
      this.queue.push(this.gap(this.faultRandom, this.scenario.faultGapMeanUs), { kind: 'fault' });
      for (let step = 0; step < this.options.steps; step++) this.step();
      this.beginQuiet();
      const boundUs = livenessElectionTimeouts * 2 * this.scenario.electionTicks * Math.max(...this.scenario.tickPeriodsUs);
      const deadlineUs = this.nowUs + boundUs;
      for (let step = 0; !this.finished; step++) {
        if (this.nowUs > deadlineUs || step >= quietEventsMax) {
          throw new InvariantViolation('liveness', `${(boundUs / 1000).toFixed(0)}ms (${livenessElectionTimeouts} maximal election timeouts) after the network healed and faults stopped, ${this.livenessIndex === null ? 'no write was committed' : `not every member had applied entry ${this.livenessIndex}`}: ${this.describeCluster()}`);
        }
        this.step();
        this.checkLiveness();
      }
      this.checkStability();
    } catch (error) {
      if (error instanceof InvariantViolation) failure = { invariant: error.invariant, message: error.message };
      else if (error instanceof StorageViolation) failure = { invariant: 'storage contract', message: error.message };
      else failure = { invariant: 'crash', message: error instanceof Error ? (error.stack ?? error.message) : String(error) };
      this.record('sim', `FAILED ${failure.message}`);
    }
    this.stats.simulatedUs = this.nowUs;
    this.stats.entriesCommitted = this.checker.commitIndex;
    this.stats.writesAcknowledged = this.checker.counters.writesAcknowledged;
    this.stats.leaseIntervals = this.checker.counters.leaseIntervals;
    this.stats.closestLeaseHandoverUs = this.checker.counters.closestLeaseHandoverUs;
    this.stats.messagesDropped = this.network.counters.dropped + this.network.counters.cutOff + this.network.counters.overflowed;
    this.stats.messagesDuplicated = this.network.counters.duplicated;
    return {
      seed: this.options.seed,
      ok: failure === null,
      failure,
      trace: failure === null ? [] : this.traceLines(),
      traceHash: hex32(this.traceHash),
      stats: this.stats,
    };
  }

  /** The trace ring, oldest first, formatted. */
  traceLines(): string[] {
    const lines: string[] = [];
    const count = Math.min(this.traceRing.length, traceRingSize);
    for (let offset = 0; offset < count; offset++) {
      const record = this.traceRing[(this.traceNext - count + offset + traceRingSize) % traceRingSize] as TraceRecord;
      lines.push(formatRecord(record));
    }
    return lines;
  }

  private step(): void {
    const next = this.queue.pop();
    if (next === undefined) throw new Error('the event queue ran dry: ticks should always be scheduled');
    if (next.timeUs < this.nowUs) throw new Error(`time went backwards: ${next.timeUs} < ${this.nowUs}`);
    this.nowUs = next.timeUs;
    this.stats.events++;
    const event = next.event;
    switch (event.kind) {
      case 'tick': {
        const node = this.nodes[event.node] as SimNode;
        if (node.core === null || node.incarnation !== event.incarnation) return;
        if (this.nowUs < node.pausedUntilUs) {
          // The clock runs on while the process is stalled; the tick is owed, not delivered.
          node.missedTicks++;
          this.queue.push(this.nowUs + node.periodUs, event);
          return;
        }
        this.hashEvent(1, node.index, 0);
        node.core.tick();
        this.queue.push(this.nowUs + node.periodUs, event);
        this.afterInput(node);
        return;
      }
      case 'deliver': {
        const message = event.message;
        const node = this.nodes[this.nodeIndex.get(message.to) as number] as SimNode;
        if (node.core === null) {
          this.network.discard();
          return;
        }
        if (this.nowUs < node.pausedUntilUs) {
          // Stalled: the message waits in the socket buffer until the process resumes.
          this.queue.push(node.pausedUntilUs, event);
          return;
        }
        if (!this.network.arrive(message)) return;
        this.hashMessage(message);
        if (!this.quiet && this.scenario.garbleProbability > 0 && this.garbleRandom.chance(this.scenario.garbleProbability)) {
          this.stepGarbled(node, message);
          return;
        }
        this.record(node.id, message);
        node.core.step(message);
        this.afterInput(node);
        return;
      }
      case 'client':
        this.clientAction();
        this.queue.push(this.nowUs + this.gap(this.clientRandom, this.scenario.clientGapMeanUs), event);
        return;
      case 'fault':
        if (this.quiet) return;
        this.faultAction();
        this.queue.push(this.nowUs + this.gap(this.faultRandom, this.scenario.faultGapMeanUs), event);
        return;
      case 'restart': {
        const node = this.nodes[event.node] as SimNode;
        if (node.core === null) this.start(node);
        return;
      }
      case 'resume': {
        const node = this.nodes[event.node] as SimNode;
        if (node.core !== null && node.incarnation === event.incarnation && node.pausedUntilUs === this.nowUs) this.resume(node);
        return;
      }
      case 'written': {
        const node = this.nodes[event.node] as SimNode;
        if (node.core === null || node.incarnation !== event.incarnation || node.writing === null) return;
        if (this.nowUs < node.pausedUntilUs) {
          // The disk finished, but the stalled process only notices when it resumes.
          this.queue.push(node.pausedUntilUs, event);
          return;
        }
        const { ready, early, appliedEarly } = node.writing;
        node.writing = null;
        if (!this.finishReady(node, ready, early, appliedEarly)) return;
        this.afterInput(node);
        return;
      }
      case 'heal':
        if (this.network.partitioned) {
          this.network.heal();
          this.note('net', 'partitions healed');
        }
        return;
    }
  }

  /**
   * Delivers a malformed variant of `message` instead of it. The core must drop it and count
   * it, neither crashing nor acting on it.
   */
  private stepGarbled(node: SimNode, message: Message): void {
    const core = node.core as SimCore;
    const garbled = garble(message, this.garbleRandom);
    if (garbled === null) return;
    this.stats.messagesGarbled++;
    this.note(node.id, `GARBLED ${describeMessage(message)}: ${garbled.how}`);
    const droppedBefore = core.status().malformedMessagesDropped;
    core.step(garbled.message);
    if (core.status().malformedMessagesDropped !== droppedBefore + 1) {
      throw new InvariantViolation('malformed messages are dropped', `${node.id} accepted a malformed message (${garbled.how}) instead of dropping and counting it`);
    }
    this.afterInput(node);
  }

  /** After any input to a node: what its write in progress allows, its Ready batches, then its status. */
  private afterInput(node: SimNode): void {
    if (node.writing !== null && !this.whileWriting(node)) return;
    this.drain(node);
    this.observe(node);
  }

  /**
   * As the daemon's RaftNode.scheduleMidWrite: input taken while a batch is being written
   * may have committed entries already durable here, applied at once
   * (Raft.committedWhileWriting); the checker hears of the commit from the core, as for the
   * entries applied before a batch. False: the node crashed.
   */
  private whileWriting(node: SimNode): boolean {
    const core = node.core as SimCore;
    const committed = core.committedWhileWriting();
    if (committed.length === 0) return true;
    this.applyCommittedInMemory(node, core, committed);
    this.stats.entriesAppliedWhileWriting += committed.length;
    return !this.crashAt(node, 'after-mid-write-apply');
  }

  /**
   * Applies entries the core counts committed before a durable commit index covers them
   * (applyDurable, whileWriting): the checker hears of the commit from the core.
   */
  private applyCommittedInMemory(node: SimNode, core: SimCore, entries: readonly Entry[]): void {
    const { commit, term } = core.status();
    this.checker.onCommittedInMemory(node.id, entries, commit, term);
    this.applyEntries(node, entries, null, commit);
    this.serveReads(node);
  }

  private start(node: SimNode): void {
    const scenario = this.scenario;
    const options: RaftOptions = {
      id: node.id,
      electionTicks: scenario.electionTicks,
      heartbeatTicks: scenario.heartbeatTicks,
      driftTicks: scenario.driftTicks,
      preVote: true,
      checkQuorum: true,
      maxEntriesPerAppend: scenario.maxEntriesPerAppend,
      maxBytesPerAppend: 64 * 1024,
      maxInflightAppends: scenario.maxInflightAppends,
      randomInt: (n) => node.random.int(n),
    };
    const restore = node.disk.restore();
    node.kv.reset();
    if (restore.snapshot !== null) {
      const error = node.kv.restore(restore.snapshot.data, restore.snapshot.index);
      if (error !== null) throw new InvariantViolation('snapshot consistency', `${node.id} restarted from a snapshot it cannot read: ${error}`);
      this.checker.onSnapshotInstalled(node.id, restore.snapshot, node.kv.chain);
    }
    this.checker.onRestart(node.id, restore.hardState.commit);
    node.core = this.options.core(options, restore);
    node.role = 'follower';
    node.term = restore.hardState.term;
    node.crashPlan = null;
    this.note(node.id, `started from disk: term ${restore.hardState.term} vote ${restore.hardState.vote ?? '-'} commit ${restore.hardState.commit} snapshot ${restore.snapshot?.index ?? 0} log ${node.disk.firstIndex}..${node.disk.lastIndex}`);
    // Start each clock at a random phase so that nodes do not tick in lockstep.
    this.queue.push(this.nowUs + 1 + node.random.int(node.periodUs), { kind: 'tick', node: node.index, incarnation: node.incarnation });
    this.afterInput(node);
  }

  private crash(node: SimNode, where: string): void {
    this.stats.crashes++;
    node.core = null;
    node.incarnation++;
    node.crashPlan = null;
    node.writing = null;
    node.pausedUntilUs = 0;
    node.missedTicks = 0;
    node.role = 'follower';
    node.kv.reset();
    node.disk.crashed();
    for (const readId of node.pendingReads.keys()) this.checker.onReadAbandoned(readId);
    this.stats.readsAbandoned += node.pendingReads.size;
    node.pendingReads.clear();
    node.pendingWrites.clear();
    this.checker.onCrash(node.id);
    this.note(node.id, `CRASH ${where}; the disk keeps term ${node.disk.hardState.term} commit ${node.disk.hardState.commit} log ..${node.disk.lastIndex}`);
  }

  /**
   * The daemon's Ready loop: persist, send, apply, advance; crashes may strike between. A
   * leader's replication messages leave before its write (sendableBeforePersist); the write
   * then completes later (a 'written' event), and until it does the node takes no new Ready
   * while its core keeps receiving messages, ticks and proposals, as the daemon's does.
   */
  private drain(node: SimNode): void {
    for (let round = 0; ; round++) {
      const core = node.core;
      if (core === null || node.writing !== null || !core.hasReady()) return;
      if (round >= readyRoundsMax) throw new InvariantViolation('progress', `${node.id} produced ${readyRoundsMax} Ready batches in a row without new input`);
      const ready = core.ready();
      if (this.crashAt(node, 'before-persist')) return;
      const early = this.scenario.writeMaxUs > 0 ? sendableBeforePersist(ready, node.disk.hardState) : [];
      for (const message of early) this.send(node, message);
      if (early.length > 0 && this.crashAt(node, 'after-early-send')) return;
      const appliedEarly = this.applyDurable(node, core, ready);
      if (appliedEarly > 0 && this.crashAt(node, 'after-early-apply')) return;
      // Every write that puts something on disk takes time (as the daemon's do), so that
      // input arrives meanwhile: followers too, whose logs a new leader may cut meanwhile.
      if (this.scenario.writeMaxUs > 0 && (early.length > 0 || ready.entries.length > 0 || ready.hardState !== null || ready.snapshot !== null)) {
        node.writing = { ready, early, appliedEarly };
        this.queue.push(this.nowUs + 1 + this.diskRandom.int(this.scenario.writeMaxUs), { kind: 'written', node: node.index, incarnation: node.incarnation });
        return;
      }
      if (!this.finishReady(node, ready, early, appliedEarly)) return;
    }
  }

  /**
   * As the daemon's RaftNode.handle: the committed entries before the batch's first entry
   * (durable since earlier Readies) are applied before the batch is written. The node's
   * durable commit index may not cover them yet, so the checker hears of the commit from the
   * core (it still refuses any other entry committed at those indexes). Returns how many.
   */
  private applyDurable(node: SimNode, core: SimCore, ready: Ready): number {
    const count = committedBeforeBatch(ready);
    if (count === 0) return 0;
    this.applyCommittedInMemory(node, core, ready.committed.slice(0, count));
    this.stats.entriesAppliedEarly += count;
    return count;
  }

  /** The rest of a Ready after its early sends: persist, send, apply, advance. False: it crashed. */
  private finishReady(node: SimNode, ready: Ready, early: Message[], appliedEarly: number): boolean {
    const core = node.core as SimCore;
    this.persist(node, ready);
    if (this.crashAt(node, 'after-persist')) return false;
    for (const message of ready.messages) if (!early.includes(message)) this.send(node, message);
    if (this.crashAt(node, 'after-send')) return false;
    this.apply(node, ready, appliedEarly);
    if (this.crashAt(node, 'after-apply')) return false;
    core.advance(ready);
    this.maybeCompact(node);
    return true;
  }

  private crashAt(node: SimNode, point: CrashPoint): boolean {
    if (node.crashPlan !== point) return false;
    this.crash(node, point);
    this.scheduleRestart(node);
    return true;
  }

  private persist(node: SimNode, ready: Ready): void {
    const disk = node.disk;
    const overwritten = disk.persist(ready.snapshot, ready.entries, ready.hardState);
    this.checker.onPersisted(node.id, ready.entries, overwritten, disk);
  }

  private send(node: SimNode, message: Message): void {
    if (message.from !== node.id) throw new InvariantViolation('message addressing', `${node.id} sent a message claiming to be from ${message.from}`);
    if (!this.nodeIndex.has(message.to)) throw new InvariantViolation('message addressing', `${node.id} sent ${message.type} to unknown node ${message.to}`);
    if (message.to === node.id) throw new InvariantViolation('message addressing', `${node.id} sent ${message.type} to itself`);
    // Persist-before-send: a message must not carry a term newer than what is durable. Pre-votes
    // (and the answers granting them) carry the candidate's next term without anyone adopting it.
    const preVote = message.type === 'pre-vote' || (message.type === 'pre-vote-response' && message.reject !== true);
    if (!preVote && message.term > node.disk.hardState.term) {
      throw new InvariantViolation('persist before send', `${node.id} sent ${message.type} of term ${message.term} while its durable term is ${node.disk.hardState.term}`);
    }
    // A granted vote and an acknowledged append promise durable state; it must be on disk.
    // A vote granted in a term the disk has already left behind is kept too: the node can
    // never vote in that term again (one Ready may carry grants for terms 3 and 4 when both
    // requests arrived while the previous batch was being written).
    const hard = node.disk.hardState;
    if (message.type === 'vote-response' && message.reject !== true
      && (hard.term < message.term || (hard.term === message.term && hard.vote !== message.to))) {
      throw new InvariantViolation('persist before send', `${node.id} granted its vote in term ${message.term} to ${message.to}, but its disk says term ${hard.term} vote ${hard.vote ?? 'none'}`);
    }
    if (message.type === 'append-response' && message.reject === false && (message.hintIndex ?? 0) > node.disk.lastIndex) {
      throw new InvariantViolation('persist before send', `${node.id} acknowledged entries up to ${message.hintIndex} but its disk holds only up to ${node.disk.lastIndex}`);
    }
    for (const delay of this.network.send(message)) {
      this.queue.push(this.nowUs + delay, { kind: 'deliver', message: cloneMessage(message) });
    }
  }

  /** Installs the Ready's snapshot, applies its committed entries (after the first `skip`, applied early) and serves reads. */
  private apply(node: SimNode, ready: Ready, skip: number): void {
    const kv = node.kv;
    if (ready.snapshot !== null) {
      const snapshot = ready.snapshot;
      const error = kv.restore(snapshot.data, snapshot.index);
      if (error !== null) throw new InvariantViolation('snapshot consistency', `${node.id} received a snapshot it cannot install: ${error}`);
      this.checker.onSnapshotInstalled(node.id, snapshot, kv.chain);
      this.stats.snapshotsInstalled++;
      this.note(node.id, `installed snapshot ${snapshot.index}/${snapshot.term}`);
      // Writes this node proposed that the snapshot covers have an unknown outcome here.
      for (const index of node.pendingWrites.keys()) if (index <= snapshot.index) node.pendingWrites.delete(index);
    }
    this.applyEntries(node, skip === 0 ? ready.committed : ready.committed.slice(skip), ready.snapshot, node.disk.commit);
    for (const readState of ready.readStates) {
      const read = node.pendingReads.get(readState.context);
      if (read !== undefined && read.index === null) read.index = readState.index;
    }
    this.serveReads(node);
  }

  /** Applies committed entries in order; `snapshot`: one installed by the same Ready, whose entries may come again. */
  private applyEntries(node: SimNode, entries: readonly Entry[], snapshot: Snapshot | null, commit: number): void {
    const kv = node.kv;
    for (const entry of entries) {
      // Re-delivery of an entry an installed snapshot already covers is tolerated (the daemon
      // skips it too), provided it is the committed entry; anything else is applied strictly.
      if (entry.index <= kv.appliedIndex && snapshot !== null) {
        const committed = this.checker.committedEntry(entry.index);
        if (committed === undefined || committed.term !== entry.term || committed.data !== entry.data) {
          throw new InvariantViolation('state machine safety', `${node.id} re-delivered entry ${entry.index} (term ${entry.term} '${entry.data}') that differs from the committed one`);
        }
        continue;
      }
      const error = kv.apply(entry);
      if (error !== null) throw new InvariantViolation('apply in order', `${node.id}: ${error}`);
      this.checker.onApplied(node.id, entry, kv.chain, commit);
      const write = node.pendingWrites.get(entry.index);
      if (write !== undefined) {
        node.pendingWrites.delete(entry.index);
        if (write.term === entry.term) {
          this.checker.onWriteAcknowledged(write.key, write.value);
          if (this.quiet && write.proposedUs >= this.quietStartUs && this.livenessIndex === null) this.livenessIndex = entry.index;
        }
      }
    }
  }

  private serveReads(node: SimNode): void {
    for (const [readId, read] of node.pendingReads) {
      if (read.index === null || read.index > node.kv.appliedIndex) continue;
      node.pendingReads.delete(readId);
      const value = node.kv.get(read.key);
      this.checker.onReadServed(readId, value, this.nowUs);
      this.stats.readsServed++;
      if (read.lease) this.stats.leaseReadsServed++;
    }
  }

  /** Looks at a node's status after an input: leadership, lease, role changes. */
  private observe(node: SimNode): void {
    const core = node.core;
    if (core === null) return;
    const status = core.status();
    if (status.role !== node.role || status.term !== node.term) {
      this.note(node.id, `${status.role} term ${status.term}${status.leader !== null ? ` leader ${status.leader}` : ''}`);
    }
    const newlyLeader = status.role === 'leader' && (node.role !== 'leader' || node.term !== status.term);
    node.role = status.role;
    node.term = status.term;
    node.config = status.config;
    if (status.role === 'leader') {
      // A leader's term is durable when it wins, except a single voter's: its own quorum, it
      // wins the moment it campaigns, which may be while a write is under way (and it may add
      // voters before that write ends). It must not act in that term until the term is
      // durable, which send() checks for every message.
      const soleVoter = status.config.voters.length === 1 && status.config.voters[0] === node.id;
      if (newlyLeader && node.disk.hardState.term !== status.term && !(soleVoter && node.writing !== null)) {
        throw new InvariantViolation('persist before send', `${node.id} leads term ${status.term} but its durable term is ${node.disk.hardState.term}`);
      }
      if (this.checker.onLeader(node.id, status.term, node.disk)) {
        if (status.term > this.highestLeaderTerm) {
          this.stats.elections++;
          if (status.term === this.highestLeaderTerm + 1) this.stats.electionsInOneRound++;
          // A leader that won without being seen campaigning (a single voter) opened and closed
          // its election within one input.
          const election = this.openElection ?? this.openElectionFor(node, status.term);
          if (election.quietAtStart && election.faultMark === this.faultMark()) {
            this.stats.electionsQuiet++;
            if (status.term === election.term) this.stats.electionsQuietInOneRound++;
          }
          this.openElection = null;
          this.highestLeaderTerm = status.term;
        }
      }
    } else if (status.role === 'candidate' && status.term > this.highestLeaderTerm && this.openElection === null) {
      this.openElection = this.openElectionFor(node, status.term);
    }
    this.checker.onLease(node.id, status.role === 'leader' && status.leaseRemainingTicks > 0, status.term, this.nowUs);
  }

  /** Notes whether an election starting now, with `node` campaigning in `term`, starts in a quiet network. */
  private openElectionFor(node: SimNode, term: number): { term: number; quietAtStart: boolean; faultMark: number } {
    const votersDown = node.config.voters.some((id) => {
      const voter = this.nodes[this.nodeIndex.get(id) as number] as SimNode;
      return voter.core === null || this.nowUs < voter.pausedUntilUs;
    });
    return { term, quietAtStart: !this.network.partitioned && !votersDown, faultMark: this.faultMark() };
  }

  /** Goes up with every fault of any kind; equal marks at both ends of a window mean no fault in it. */
  private faultMark(): number {
    const counters = this.network.counters;
    return counters.dropped + counters.cutOff + counters.overflowed + counters.duplicated
      + this.stats.crashes + this.stats.pauses + this.stats.partitions + this.stats.messagesGarbled;
  }

  private maybeCompact(node: SimNode): void {
    const core = node.core;
    if (core === null) return;
    const applied = node.kv.appliedIndex;
    if (applied - node.disk.snapshotIndex < this.scenario.compactAfterEntries) return;
    if (applied > node.disk.lastIndex) return;
    const term = node.disk.termAt(applied);
    if (term === undefined) return;
    const data = node.kv.image();
    // The core keeps the snapshot (with the configuration as of its index) and drops the
    // entries it covers; the daemon stores that same snapshot.
    const snapshot = core.compact(applied, data);
    if (snapshot === null) return;
    if (snapshot.index !== applied || snapshot.term !== term || snapshot.data !== data) {
      throw new InvariantViolation('snapshot consistency', `${node.id} compacted at ${applied}/${term} but the core made snapshot ${snapshot.index}/${snapshot.term}`);
    }
    const expected = configAt(node.disk, applied);
    if (!sameConfig(expected, snapshot.config)) {
      throw new InvariantViolation('snapshot consistency', `${node.id}'s snapshot at ${applied} records config ${describeConfig(snapshot.config)}, but the log up to ${applied} gives ${describeConfig(expected)}`);
    }
    node.disk.compact(snapshot);
    this.stats.compactions++;
    this.note(node.id, `compacted through ${applied}/${term}`);
  }

  private clientAction(): void {
    const random = this.clientRandom;
    this.expireReads();
    const live = this.nodes.filter((node) => node.core !== null && this.nowUs >= node.pausedUntilUs);
    if (live.length === 0) return;
    const leaders = live.filter((node) => node.role === 'leader');
    const target = leaders.length > 0 && random.chance(0.8) ? random.pick(leaders) : random.pick(live);
    const core = target.core as SimCore;
    // The voter policy runs in production at all times; random changes stop with the faults.
    const reconfigure = this.scenario.reconfigure && (!this.quiet || this.scenario.membership === 'policy');
    // Leadership transfers are client requests like random membership changes: they stop
    // with the faults, so that the stability window means something.
    const transfer = this.scenario.reconfigure && !this.quiet;
    const action = random.weighted([10, 8, reconfigure ? 0.6 : 0, transfer ? 0.3 : 0]);
    if (action === 0) {
      if (target.pendingWrites.size >= pendingWritesPerNodeMax) return;
      const key = random.pick(keys);
      const value = `v${++this.valueCounter}`;
      const result = core.propose(encodeSet(key, value));
      this.stats.writesProposed++;
      this.note(target.id, `client: set ${key} ${value} -> ${result.ok ? `index ${result.index} term ${result.term}` : `refused (${result.reason})`}`);
      if (result.ok) target.pendingWrites.set(result.index, { term: result.term, key, value, proposedUs: this.nowUs });
    } else if (action === 1) {
      if (target.pendingReads.size >= pendingReadsPerNodeMax) return;
      const key = random.pick(keys);
      const lease = random.chance(0.5);
      const readId = `${target.id}/r${++this.readCounter}`;
      if (!this.checker.onReadStarted(readId, key, target.id, this.nowUs)) return;
      const result = core.readIndex(readId, { lease });
      this.note(target.id, `client: ${lease ? 'lease ' : ''}read ${key} as ${readId}${result.ok ? '' : ` refused (${result.reason})`}`);
      if (!result.ok) {
        this.checker.onReadAbandoned(readId);
        return;
      }
      target.pendingReads.set(readId, { key, lease, startUs: this.nowUs, index: null });
    } else if (action === 2) {
      const change = this.scenario.membership === 'policy' ? this.policyConfigChange(target) : this.pickConfigChange(target);
      if (change === null) return;
      const result = core.proposeConfigChange(change);
      this.stats.configChanges++;
      this.note(target.id, `client: config ${change.type} ${change.node} -> ${result.ok ? `index ${result.index}` : `refused (${result.reason})`}`);
    } else {
      const voters = target.config.voters.filter((node) => node !== target.id);
      if (target.role !== 'leader' || voters.length === 0) return;
      const to = random.pick(voters);
      this.stats.transfers++;
      const result = core.transferLeadership(to);
      this.note(target.id, `client: transfer leadership to ${to}${result.ok ? '' : ` refused (${result.reason})`}`);
    }
    this.afterInput(target);
  }

  /** A plausible membership change for the leader's config; keeps at least votersMin voters. */
  private pickConfigChange(target: SimNode): ConfigChange | null {
    if (target.role !== 'leader') return null;
    const random = this.clientRandom;
    const { voters, learners } = target.config;
    const outsiders = this.nodes.map((node) => node.id).filter((id) => !voters.includes(id) && !learners.includes(id));
    const options: ConfigChange[] = [];
    for (const node of outsiders) options.push({ type: 'add-learner', node });
    for (const node of learners) options.push({ type: 'promote', node }, { type: 'remove', node });
    if (voters.length > this.scenario.votersMin) {
      // The leader may demote or remove itself: it hands over once the change commits.
      for (const node of voters) options.push({ type: 'demote', node }, { type: 'remove', node });
    }
    return options.length === 0 ? null : random.pick(options);
  }

  /**
   * What the daemon's voter policy would propose on this leader, from what the leader can
   * see: a node is alive when it runs and the links both ways are up (the membership plane's
   * failure detector, approximated). Checks the policy's promise that a change never leaves
   * the live voters short of a quorum they had.
   */
  private policyConfigChange(target: SimNode): ConfigChange | null {
    if (target.role !== 'leader' || target.core === null) return null;
    const status = target.core.status();
    const nodes: KnownNode[] = this.nodes.map((node) => {
      const reachable = node === target || (node.core !== null && this.nowUs >= node.pausedUntilUs
        && !this.network.isCut(target.id, node.id) && !this.network.isCut(node.id, target.id));
      if (reachable) node.unreachableSinceUs = null;
      else if (node.unreachableSinceUs === null) node.unreachableSinceUs = this.nowUs;
      return {
        id: node.id,
        alive: reachable,
        deadForMs: reachable ? 0 : Math.floor((this.nowUs - (node.unreachableSinceUs as number)) / 1000),
        match: node === target ? status.lastIndex : (status.progress[node.id]?.match ?? 0),
      };
    });
    const change = nextConfigChange({
      config: status.config, nodes, leader: target.id, replaceDeadAfterMs: this.scenario.replaceDeadAfterMs, lastIndex: status.lastIndex,
    });
    if (change === null) return null;
    const alive = new Set(nodes.filter((node) => node.alive).map((node) => node.id));
    const quorum = (voters: NodeId[]) => Math.floor(voters.length / 2) + 1;
    const liveCount = (voters: NodeId[]) => voters.filter((id) => alive.has(id)).length;
    const before = status.config.voters;
    const after: ClusterConfig = { voters: [...before], learners: [...status.config.learners] };
    applyConfigChange(after, change);
    if (liveCount(before) >= quorum(before) && liveCount(after.voters) < quorum(after.voters)) {
      throw new InvariantViolation('voter policy keeps a live quorum',
        `${target.id}'s voter policy proposed ${change.type} ${change.node}: live voters ${liveCount(before)} of ${before.length} (quorum ${quorum(before)}) become ${liveCount(after.voters)} of ${after.voters.length} (quorum ${quorum(after.voters)}); alive: ${[...alive].join(',')}`);
    }
    return change;
  }

  private expireReads(): void {
    const timeoutUs = 20 * 2 * this.scenario.electionTicks * this.scenario.baseTickUs;
    for (const node of this.nodes) {
      for (const [readId, read] of node.pendingReads) {
        if (this.nowUs - read.startUs < timeoutUs) continue;
        node.pendingReads.delete(readId);
        this.checker.onReadAbandoned(readId);
        this.stats.readsAbandoned++;
      }
    }
  }

  private faultAction(): void {
    const random = this.faultRandom;
    const action = random.weighted([3, 3, 1, 2, 1]);
    const ids = this.nodes.map((node) => node.id);
    if (action === 0) {
      const live = this.nodes.filter((node) => node.core !== null && node.crashPlan === null);
      if (live.length === 0) return;
      const node = random.pick(live);
      if (random.chance(0.5)) {
        this.crash(node, 'between events');
        this.scheduleRestart(node);
      } else {
        node.crashPlan = random.pick(crashPoints);
        this.note(node.id, `will crash ${node.crashPlan} of its next Ready`);
      }
    } else if (action === 1) {
      this.stats.partitions++;
      const shape = random.int(4);
      if (shape === 0) {
        const node = random.pick(ids);
        this.network.isolate(node);
        this.note('net', `isolate ${node}`);
      } else if (shape === 1) {
        const shuffled = [...ids];
        for (let position = shuffled.length - 1; position > 0; position--) {
          const other = random.int(position + 1);
          [shuffled[position], shuffled[other]] = [shuffled[other] as NodeId, shuffled[position] as NodeId];
        }
        const cut = random.range(1, shuffled.length - 1);
        const groupA = shuffled.slice(0, cut);
        const groupB = shuffled.slice(cut);
        this.network.split(groupA, groupB);
        this.note('net', `split {${groupA.join(',')}} | {${groupB.join(',')}}`);
      } else if (shape === 2) {
        const from = random.pick(ids);
        const to = random.pick(ids.filter((id) => id !== from));
        this.network.cut(from, to);
        this.note('net', `cut ${from} -> ${to} (one way)`);
      } else {
        // A bridge: two groups that reach each other only through one node, the topology in
        // which CheckQuorum and leader stickiness are known to struggle.
        const bridge = random.pick(ids);
        const others = ids.filter((id) => id !== bridge);
        const groupA = others.filter(() => random.chance(0.5));
        const groupB = others.filter((id) => !groupA.includes(id));
        this.network.split(groupA, groupB);
        this.note('net', `bridge through ${bridge}: {${groupA.join(',')}} | {${groupB.join(',')}}`);
      }
      this.queue.push(this.nowUs + random.range(20_000, 600_000), { kind: 'heal' });
    } else if (action === 2) {
      this.network.heal();
      this.note('net', 'heal all');
    } else if (action === 4) {
      const running = this.nodes.filter((node) => node.core !== null && this.nowUs >= node.pausedUntilUs);
      if (running.length === 0) return;
      const node = random.pick(running);
      const durationUs = random.range(10_000, 2 * this.scenario.electionTicks * node.periodUs);
      node.pausedUntilUs = this.nowUs + durationUs;
      node.missedTicks = 0;
      this.checker.onStalled(node.id);
      this.queue.push(node.pausedUntilUs, { kind: 'resume', node: node.index, incarnation: node.incarnation });
      this.stats.pauses++;
      this.note(node.id, `PAUSE for ${(durationUs / 1000).toFixed(1)}ms`);
    } else {
      // Nothing this time: quiet stretches let the cluster make progress between storms.
    }
  }

  private resume(node: SimNode): void {
    const core = node.core as SimCore;
    const owed = node.missedTicks;
    node.pausedUntilUs = 0;
    node.missedTicks = 0;
    this.note(node.id, `RESUME after missing ${owed} ticks${this.scenario.pauseTickCatchUp ? ', delivered now' : ', skipped'}`);
    if (this.scenario.pauseTickCatchUp) {
      for (let tick = 0; tick < owed; tick++) {
        core.tick();
        this.drain(node);
        if (node.core === null) return;
      }
    }
    this.afterInput(node);
  }

  private scheduleRestart(node: SimNode): void {
    if (this.quiet) {
      this.start(node);
      return;
    }
    this.queue.push(this.nowUs + this.faultRandom.range(1_000, 500_000), { kind: 'restart', node: node.index });
  }

  private beginQuiet(): void {
    this.quiet = true;
    this.quietStartUs = this.nowUs;
    this.network.heal();
    this.network.faults = quietNetwork;
    this.note('sim', 'faults stop: network healed, crashed nodes restart; liveness clock starts');
    for (const node of this.nodes) {
      node.crashPlan = null;
      if (node.core !== null && node.pausedUntilUs > this.nowUs) {
        node.pausedUntilUs = this.nowUs;
        this.resume(node);
      }
      if (node.core === null) this.start(node);
    }
  }

  private checkLiveness(): void {
    if (this.livenessIndex === null) return;
    const leader = this.nodes.find((node) => node.role === 'leader' && node.core !== null);
    if (leader === undefined) return;
    const members = [...leader.config.voters, ...leader.config.learners];
    for (const member of members) {
      const node = this.nodes[this.nodeIndex.get(member) as number] as SimNode;
      if (node.kv.appliedIndex < this.livenessIndex) return;
    }
    this.finished = true;
    this.stats.recoveryUs = this.nowUs - this.quietStartUs;
    this.note('sim', `liveness shown: entry ${this.livenessIndex} committed and applied on every member ${(this.nowUs - this.quietStartUs) / 1000}ms after faults stopped`);
  }

  /**
   * After recovery, waits until nothing from the faulty phase can still arrive (the slowest
   * message, a pending leadership transfer), then requires that the leader stays and no member
   * of its config goes past its term, with clients still at work and every node up. A node
   * joining late catches up to the term, which is fine; a node removed from the config while
   * cut off may sit at a higher term it reached earlier, and no member listens to it.
   */
  private checkStability(): void {
    const electionTimeoutMaxUs = 2 * this.scenario.electionTicks * Math.max(...this.scenario.tickPeriodsUs);
    const fromUs = Math.max(this.nowUs, this.quietStartUs + this.scenario.slowDelayMaxUs + electionTimeoutMaxUs);
    while (this.queue.peek() !== undefined && (this.queue.peek()?.timeUs as number) < fromUs) this.step();
    const leader = this.nodes.find((node) => node.role === 'leader' && node.core !== null);
    const untilUs = fromUs + stabilityElectionTimeouts * electionTimeoutMaxUs;
    this.note('sim', `stability window: ${leader === undefined ? 'no leader' : `${leader.id} leads term ${leader.term}`}; it must keep leading until ${(untilUs / 1000).toFixed(3)}ms`);
    if (leader === undefined) throw new InvariantViolation('leader stability', `no leader ${(fromUs - this.quietStartUs) / 1000}ms after faults stopped, although a write had committed: ${this.describeCluster()}`);
    const term = leader.term;
    while (this.queue.peek() !== undefined && (this.queue.peek()?.timeUs as number) < untilUs) {
      this.step();
      if (leader.role !== 'leader' || leader.term !== term) {
        throw new InvariantViolation('leader stability', `with no faults, leader ${leader.id} of term ${term} became ${leader.role} of term ${leader.term}: ${this.describeCluster()}`);
      }
      for (const member of [...leader.config.voters, ...leader.config.learners]) {
        const node = this.nodes[this.nodeIndex.get(member) as number] as SimNode;
        if (node.term > term) {
          throw new InvariantViolation('leader stability', `with no faults, member ${node.id} moved to ${node.role} of term ${node.term} while ${leader.id} led term ${term}: ${this.describeCluster()}`);
        }
      }
    }
    this.stats.stableUs = untilUs - fromUs;
  }

  private describeCluster(): string {
    return this.nodes.map((node) => node.core === null
      ? `${node.id} down`
      : `${node.id} ${node.role} t${node.term} applied ${node.kv.appliedIndex} commit ${node.disk.hardState.commit} last ${node.disk.lastIndex}`).join('; ');
  }

  private gap(random: Prng, meanUs: number): number {
    return 1 + random.int(2 * meanUs);
  }

  private note(node: string, text: string): void {
    this.traceHash = fnvString(fnvNumber(this.traceHash, this.nowUs), text);
    this.record(node, text);
  }

  private record(node: string, what: string | Message): void {
    const record: TraceRecord = { timeUs: this.nowUs, node, what };
    if (this.traceRing.length < traceRingSize) this.traceRing.push(record);
    else this.traceRing[this.traceNext] = record;
    this.traceNext = (this.traceNext + 1) % traceRingSize;
    this.options.onTrace?.(formatRecord(record));
  }

  private hashEvent(kind: number, node: number, detail: number): void {
    let hash = fnvNumber(this.traceHash, this.nowUs);
    hash = fnvNumber(hash, kind * 64 + node);
    this.traceHash = fnvNumber(hash, detail);
  }

  private hashMessage(message: Message): void {
    let hash = fnvNumber(this.traceHash, this.nowUs);
    hash = fnvNumber(hash, (messageTypeCodes[message.type] ?? 0) * 64 + (this.nodeIndex.get(message.from) ?? 63));
    hash = fnvNumber(hash, this.nodeIndex.get(message.to) ?? 63);
    hash = fnvNumber(hash, message.term);
    hash = fnvNumber(hash, message.logIndex ?? 0);
    hash = fnvNumber(hash, message.logTerm ?? 0);
    hash = fnvNumber(hash, message.entries?.length ?? 0);
    hash = fnvNumber(hash, message.commit ?? 0);
    this.traceHash = fnvNumber(hash, message.reject === true ? 1 : 0);
  }
}

function formatRecord(record: TraceRecord): string {
  const what = typeof record.what === 'string' ? record.what : describeMessage(record.what);
  return `${formatTime(record.timeUs)} ${record.node.padEnd(4)} ${what}`;
}

/** Runs one seed to its end. */
export function runSeed(options: SimOptions): SeedResult {
  return new Simulation(options).run();
}

