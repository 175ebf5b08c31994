// Membership: who is in the mesh and how they are doing. Publishes this node's signed
// heartbeat about once a second (and at once when a peer subscribes, so new nodes are
// seen fast), validates the heartbeats of others, drives the failure detector with a
// timer, announces departure on stop, and detects two live processes with one identity
// (a copied data dir) instead of silently merging them. Nodes the consensus configuration
// names are never forgotten: listed() shows them, dead, until they leave the configuration.
import { randomUUID } from 'node:crypto';
import { DecodeError } from '../../protocol/errors.ts';
import { HEARTBEAT_TOPIC, heartbeatCodec, type Heartbeat } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { FailureDetector, type MemberState, type Transition } from '../../scheduler/membership/failure-detector.ts';
import { logger } from '../log.ts';
import type { IdentityConflict, P2PHost } from '../p2p/host.ts';

const log = logger('membership');

export type { MemberState } from '../../scheduler/membership/failure-detector.ts';

/** What the daemon provides each heartbeat; membership fills in the rest. */
export type HeartbeatBody = Omit<Heartbeat, 'kind' | 'protocolVersion' | 'sequence' | 'sentAt' | 'instanceId' | 'nodeId' | 'leaving'>;

/** The part of the p2p host membership uses (a fake in tests, P2PHost in the daemon). */
export type MembershipHost = Pick<P2PHost, 'peerId' | 'publish' | 'subscribe' | 'on'> & Partial<Pick<P2PHost, 'reconnect' | 'topicPeers' | 'connectedPeers'>>;

/** A dead peer is dialled afresh this often while it stays dead (see #redialDead). */
const redialDeadEveryMs = 3_000;
const redialsPerRoundMax = 8;

export interface MembershipOptions {
  host: MembershipHost;
  self: () => HeartbeatBody;
  heartbeatIntervalMs?: number;
  suspectAfterMs?: number;
  deadAfterMs?: number;
  /** A dead node is forgotten after this long without news, unless consensusMembers names it. */
  forgetAfterMs?: number;
  forgetLeftAfterMs?: number;
  /**
   * The nodes the consensus configuration names (voters and learners). The quorum counts
   * them however long they are silent, so the operator must see them: they are kept past
   * the forget period and listed() shows them until they leave the configuration.
   */
  consensusMembers?: () => readonly string[];
  /** Shown in the identity-conflict advice; defaults to "<data-dir>". */
  dataDir?: string;
}

export interface MemberView {
  nodeId: string;
  state: MemberState;
  self: boolean;
  /**
   * Wall-clock ms when the node was last heard from (now, for ourselves). For a node
   * listed() shows without ever having heard it: when this node started listening.
   */
  lastSeenMs: number;
  /**
   * The last heartbeat accepted from the node. Null before our own first one, and in
   * listed() for a node the consensus configuration names that this node never heard.
   */
  heartbeat: Heartbeat | null;
  /**
   * Our wall clock minus the sender's when its last heartbeat arrived (network delay
   * included, so a few ms is normal). For display and drift warnings only: nothing
   * relies on wall clocks agreeing.
   */
  clockOffsetMs: number;
}

export interface IdentityConflictView {
  nodeId: string;
  /** heartbeat: one node id, two instances; mdns/dial: the host met a process holding our key. */
  source: 'heartbeat' | 'mdns' | 'dial';
  instanceIds: string[];
  addresses: string[];
  firstDetectedMs: number;
  lastDetectedMs: number;
  message: string;
}

export type MembershipEvent =
  | { type: 'joined'; nodeId: string; heartbeat: Heartbeat }
  | { type: 'alive' | 'suspect' | 'dead' | 'left'; nodeId: string; previous: MemberState | null }
  | { type: 'forgotten'; nodeId: string }
  | { type: 'identity-conflict'; nodeId: string; conflict: IdentityConflictView };

interface InstanceRecord {
  /** Monotonic ms at which we first heard this instance. */
  firstSeenMs: number;
  lastSeenMs: number;
  sequence: number;
}

interface MemberRecord {
  heartbeat: Heartbeat;
  /** The instance whose heartbeats the view shows: the newest one heard. */
  instanceId: string;
  lastSeenWallMs: number;
  instances: Map<string, InstanceRecord>;
  /** The clock-offset warning is logged once per node. */
  clockWarned: boolean;
}

/** Instances remembered per node id, enough to tell a restart from a twin. */
const instancesPerNodeMax = 4;
/** Least spacing of extra heartbeats sent on new subscriptions or role changes. */
const publishNowSpacingMs = 100;
/** A conflict not seen again for this long is dropped from conflicts(). */
const conflictExpireMs = 120_000;
/** How long stop() waits for the departure heartbeat to go out. */
const leaveTimeoutMs = 1_000;
/**
 * How long stop() waits, first, for every live member to be subscribed to heartbeats on
 * our side: gossip reaches only peers whose subscription we have heard, and a member that
 * (re)joined a moment ago may not have sent it yet; it would then learn of our departure
 * only by declaring us dead seconds later.
 */
const leaveSubscribersWaitMs = 500;
/** The departure heartbeat goes out twice, this far apart. */
const leaveRepeatAfterMs = 200;
/** Wall clocks further apart than this get a warning (once per node). */
const clockOffsetWarnMs = 2_000;
/** Log a broken self() body at most this often. */
const selfErrorLogEveryMs = 60_000;

export class Membership {
  readonly #host: MembershipHost;
  readonly #self: () => HeartbeatBody;
  readonly #heartbeatIntervalMs: number;
  readonly #deadAfterMs: number;
  readonly #dataDir: string;
  readonly #detector: FailureDetector;
  readonly #consensusMembers: () => readonly string[];
  readonly #members = new Map<string, MemberRecord>();
  readonly #conflicts = new Map<string, IdentityConflictView>();
  readonly #listeners = new Set<(event: MembershipEvent) => void>();
  readonly #instanceId = randomUUID();
  /** Wall-clock ms this process's membership was created: our own key's heartbeats sent before it are a predecessor's. */
  readonly #createdWallMs = Date.now();
  readonly #cleanups: Array<() => void> = [];
  #sequence = 0;
  #lastSent: Heartbeat | null = null;
  #lastPublishMs = -Infinity;
  #publishNowTimer: NodeJS.Timeout | null = null;
  #heartbeatTimer: NodeJS.Timeout | null = null;
  #evaluateTimer: NodeJS.Timeout | null = null;
  #lastSelfErrorLogMs = -Infinity;
  /** When start() began listening, monotonic and wall clock (for nodes never heard). */
  #listeningSince: { monotonicMs: number; wallMs: number } | null = null;
  #state: 'new' | 'running' | 'stopped' = 'new';

  constructor(options: MembershipOptions) {
    this.#host = options.host;
    this.#self = options.self;
    this.#heartbeatIntervalMs = options.heartbeatIntervalMs ?? limits.heartbeatIntervalMsDefault;
    this.#deadAfterMs = options.deadAfterMs ?? limits.deadAfterMsDefault;
    this.#dataDir = options.dataDir ?? '<data-dir>';
    this.#consensusMembers = options.consensusMembers ?? (() => []);
    if (!(this.#heartbeatIntervalMs > 0)) throw new RangeError(`heartbeatIntervalMs must be positive, got ${this.#heartbeatIntervalMs}`);
    const suspectAfterMs = options.suspectAfterMs ?? limits.suspectAfterMsDefault;
    if (suspectAfterMs <= this.#heartbeatIntervalMs) {
      throw new RangeError(`suspectAfterMs (${suspectAfterMs}) must exceed heartbeatIntervalMs (${this.#heartbeatIntervalMs}), or every peer would flap to suspect between heartbeats`);
    }
    this.#detector = new FailureDetector({
      suspectAfterMs,
      deadAfterMs: this.#deadAfterMs,
      forgetAfterMs: options.forgetAfterMs ?? limits.forgetDeadAfterMsDefault,
      forgetLeftAfterMs: options.forgetLeftAfterMs ?? limits.forgetLeftAfterMsDefault,
      peersMax: limits.clusterNodesMax,
      keep: (nodeId) => this.#consensusMembers().includes(nodeId),
    });
  }

  /** This process's instance id (random per start; a twin has another). */
  get instanceId(): string {
    return this.#instanceId;
  }

  get nodeId(): string {
    return this.#host.peerId;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error('Membership starts once');
    this.#state = 'running';
    this.#listeningSince = { monotonicMs: performance.now(), wallMs: Date.now() };
    // Heartbeats are flood-published to every peer and every node connects to every
    // other, so relaying them in steady state only multiplies traffic; and a peer we
    // cannot reach directly is one Raft cannot reach either, so seeing it only through
    // others would overstate its health. A newcomer's are relayed for a few seconds,
    // so it is seen by all before its direct connections are up.
    this.#cleanups.push(this.#host.subscribe(HEARTBEAT_TOPIC, (from, bytes) => this.#receive(from, bytes), { relay: 'newcomers' }));
    this.#cleanups.push(this.#host.on('peer:subscribed', ({ topic }) => {
      if (topic === HEARTBEAT_TOPIC) this.publishNow();
    }));
    this.#cleanups.push(this.#host.on('identity-conflict', (conflict) => this.#onHostConflict(conflict)));
    this.#heartbeatTimer = setInterval(() => void this.#publish(false), this.#heartbeatIntervalMs);
    // Evaluate often (at most 100 ms late): with the defaults a crash is declared dead
    // 4.5 s after the last heartbeat, and the goal is within 5 s of the crash.
    this.#evaluateTimer = setInterval(() => this.#evaluate(), Math.max(10, Math.min(100, this.#heartbeatIntervalMs / 4)));
    this.#heartbeatTimer.unref();
    this.#evaluateTimer.unref();
    await this.#publish(false);
  }

  /** Announces departure (peers mark us left at once), then stops publishing and listening. */
  async stop(): Promise<void> {
    if (this.#state !== 'running') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopped';
    for (const timer of [this.#heartbeatTimer, this.#evaluateTimer]) if (timer !== null) clearInterval(timer);
    if (this.#publishNowTimer !== null) clearTimeout(this.#publishNowTimer);
    await this.#awaitSubscribers(leaveSubscribersWaitMs);
    let timeout: NodeJS.Timeout | undefined;
    await Promise.race([
      (async () => {
        await this.#publish(true);
        // Once more a moment later: gossip can miss a peer that (re)connected just now (its
        // subscription or mesh slot not settled on both sides), and a repeated goodbye is
        // harmless (a newer sequence number, the same departure).
        await new Promise((resolve) => setTimeout(resolve, leaveRepeatAfterMs));
        await this.#publish(true);
      })(),
      new Promise((resolve) => { timeout = setTimeout(resolve, leaveTimeoutMs); }),
    ]);
    clearTimeout(timeout);
    for (const cleanup of this.#cleanups.splice(0)) cleanup();
  }

  /**
   * Waits until every member we are connected to (a restarted one we still call dead
   * included) is among the heartbeat topic's peers, at most `waitMs`.
   */
  async #awaitSubscribers(waitMs: number): Promise<void> {
    const { topicPeers, connectedPeers } = this.#host;
    if (topicPeers === undefined || connectedPeers === undefined) return;
    const deadline = performance.now() + waitMs;
    for (;;) {
      const subscribed = new Set(topicPeers.call(this.#host, HEARTBEAT_TOPIC));
      const connected = new Set(connectedPeers.call(this.#host));
      const missing = this.#detector.peers().some((entry) => connected.has(entry.peer) && !subscribed.has(entry.peer));
      if (!missing || performance.now() >= deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Publishes a heartbeat soon (coalesced), e.g. when our Raft role changed. */
  publishNow(): void {
    if (this.#state !== 'running' || this.#publishNowTimer !== null) return;
    const waitMs = Math.max(0, this.#lastPublishMs + publishNowSpacingMs - performance.now());
    this.#publishNowTimer = setTimeout(() => {
      this.#publishNowTimer = null;
      if (this.#state === 'running') void this.#publish(false);
    }, waitMs);
  }

  /**
   * This node and the peers the failure detector tracks, without those past the forget
   * period (kept only for listed()): what consensus and scheduling work from, where a node
   * silent that long counts as gone.
   */
  members(): MemberView[] {
    return this.#views(false);
  }

  /**
   * The node list (API, CLI, dashboard): members(), plus every node the consensus
   * configuration names that members() leaves out, shown dead with what is known of it:
   * kept past the forget period with its last heartbeat; left (stopped) while still
   * named, since it counts against the quorum until removed or back; or never heard by
   * this node (heartbeat null; suspect during this node's first deadAfterMs of listening).
   */
  listed(): MemberView[] {
    const named = new Set(this.#consensusMembers());
    const views = this.#views(true).map((view) => (view.state === 'left' && named.has(view.nodeId) ? { ...view, state: 'dead' as const } : view));
    const shown = new Set(views.map((view) => view.nodeId));
    const since = this.#listeningSince ?? { monotonicMs: performance.now(), wallMs: Date.now() };
    const state = performance.now() - since.monotonicMs >= this.#deadAfterMs ? 'dead' : 'suspect';
    for (const nodeId of named) {
      if (!shown.has(nodeId)) views.push({ nodeId, state, self: false, lastSeenMs: since.wallMs, heartbeat: null, clockOffsetMs: 0 });
    }
    return views;
  }

  #views(withKept: boolean): MemberView[] {
    const views: MemberView[] = [{ nodeId: this.nodeId, state: 'alive', self: true, lastSeenMs: Date.now(), heartbeat: this.#lastSent, clockOffsetMs: 0 }];
    for (const entry of this.#detector.peers()) {
      const record = this.#members.get(entry.peer);
      if (record === undefined || (entry.kept && !withKept)) continue;
      views.push({ nodeId: entry.peer, state: entry.state, self: false, lastSeenMs: record.lastSeenWallMs, heartbeat: record.heartbeat, clockOffsetMs: record.lastSeenWallMs - record.heartbeat.sentAt });
    }
    return views;
  }

  member(nodeId: string): MemberView | undefined {
    return this.members().find((view) => view.nodeId === nodeId);
  }

  /** Identity conflicts seen recently (two live processes with one node id). */
  conflicts(): IdentityConflictView[] {
    const now = Date.now();
    for (const [key, conflict] of this.#conflicts) {
      if (now - conflict.lastDetectedMs > conflictExpireMs) this.#conflicts.delete(key);
    }
    return [...this.#conflicts.values()];
  }

  /** Listens for membership changes; returns a function that removes the listener. */
  onChange(listener: (event: MembershipEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(event: MembershipEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (error) {
        log.error('membership listener failed', { type: event.type, error });
      }
    }
  }

  async #publish(leaving: boolean): Promise<void> {
    let heartbeat: Heartbeat;
    let bytes: Uint8Array;
    try {
      heartbeat = {
        ...this.#self(),
        kind: 'heartbeat',
        protocolVersion: PROTOCOL_VERSION,
        nodeId: this.nodeId,
        instanceId: this.#instanceId,
        sequence: ++this.#sequence,
        sentAt: Date.now(),
        leaving,
      };
      bytes = heartbeatCodec.encode(heartbeat);
    } catch (error) {
      // A bad body is a bug in what the daemon reports. Without a valid body there is no
      // heartbeat at all, so peers will time us out: say loudly what is wrong.
      const now = performance.now();
      if (now - this.#lastSelfErrorLogMs >= selfErrorLogEveryMs) {
        this.#lastSelfErrorLogMs = now;
        log.error('cannot build this node\'s heartbeat; peers will see it as suspect, then dead', { error });
      }
      return;
    }
    this.#lastSent = heartbeat;
    this.#lastPublishMs = performance.now();
    try {
      await this.#host.publish(HEARTBEAT_TOPIC, bytes);
    } catch (error) {
      log.debug('heartbeat publish failed', { error });
    }
  }

  #receive(from: string, bytes: Uint8Array): void {
    if (this.#state !== 'running') return;
    let heartbeat: Heartbeat;
    try {
      heartbeat = heartbeatCodec.decode(bytes);
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      log.debug('dropped a heartbeat', { from, reason: error.message });
      return;
    }
    if (heartbeat.nodeId !== from) {
      log.debug('dropped a heartbeat', { from, reason: `signed by ${from} but speaks for ${heartbeat.nodeId}` });
      return;
    }
    const nowMs = performance.now();
    if (heartbeat.nodeId === this.nodeId) {
      // Signed with our key, sent by another process: only a copy of our peer.key can do that,
      // or this node's own previous process, whose last heartbeats gossip may still replay
      // for a few seconds after a quick restart (sent before we started: not a conflict).
      if (heartbeat.instanceId !== this.#instanceId && heartbeat.sentAt >= this.#createdWallMs) {
        this.#reportConflict(this.nodeId, 'heartbeat', [this.#instanceId, heartbeat.instanceId], [],
          `another live process (instance ${heartbeat.instanceId}, named "${heartbeat.name}", API ${heartbeat.apiUrl}) sends heartbeats with this node's id`);
      }
      return;
    }

    let record = this.#members.get(heartbeat.nodeId);
    const instance = record?.instances.get(heartbeat.instanceId);
    if (instance !== undefined && heartbeat.sequence <= instance.sequence) {
      log.debug('dropped a heartbeat', { from, reason: `replayed or reordered: sequence ${heartbeat.sequence} <= ${instance.sequence}` });
      return;
    }
    let joined: Transition | null = null;
    if (record === undefined) {
      // A node leaving that we never knew needs no entry.
      if (heartbeat.leaving) return;
      joined = this.#detector.observe(heartbeat.nodeId, nowMs);
      if (joined === null) {
        log.warn('member table full of live nodes; ignoring a new one', { nodeId: heartbeat.nodeId, clusterNodesMax: limits.clusterNodesMax });
        return;
      }
      // The detector may have evicted a dead or left node to make room: drop its record too.
      for (const nodeId of this.#members.keys()) if (this.#detector.state(nodeId) === undefined) this.#members.delete(nodeId);
      record = { heartbeat, instanceId: heartbeat.instanceId, lastSeenWallMs: Date.now(), instances: new Map(), clockWarned: false };
      this.#members.set(heartbeat.nodeId, record);
    }

    let current = instance;
    if (current === undefined) {
      current = { firstSeenMs: nowMs, lastSeenMs: nowMs, sequence: heartbeat.sequence };
      record.instances.set(heartbeat.instanceId, current);
      if (record.instances.size > instancesPerNodeMax) {
        const oldest = [...record.instances].sort((a, b) => a[1].lastSeenMs - b[1].lastSeenMs)[0]!;
        record.instances.delete(oldest[0]);
      }
    }
    current.sequence = heartbeat.sequence;
    current.lastSeenMs = nowMs;
    this.#checkInstances(heartbeat, record, nowMs);

    // The view follows the newest instance; an older one's straggler only counts as life.
    const shown = record.instances.get(record.instanceId);
    if (shown === undefined || current.firstSeenMs >= shown.firstSeenMs) {
      record.instanceId = heartbeat.instanceId;
      record.heartbeat = heartbeat;
    }
    record.lastSeenWallMs = Date.now();
    const offsetMs = record.lastSeenWallMs - heartbeat.sentAt;
    if (Math.abs(offsetMs) > clockOffsetWarnMs && !record.clockWarned) {
      record.clockWarned = true;
      log.warn('a node\'s wall clock differs from ours; timestamps it reports will look off (run NTP on both)', { nodeId: heartbeat.nodeId, name: heartbeat.name, offsetMs });
    }

    if (heartbeat.leaving) {
      // Only the newest instance's goodbye removes the node: a restarted node's old
      // instance saying goodbye late must not hide the new one.
      if (record.instanceId !== heartbeat.instanceId) return;
      this.#applyTransition(this.#detector.markLeft(heartbeat.nodeId, nowMs), heartbeat);
      return;
    }
    this.#applyTransition(joined ?? this.#detector.observe(heartbeat.nodeId, nowMs), heartbeat);
  }

  /**
   * A restart gives a node a new instance id and silences the old one. Two live
   * processes keep both talking: the instance we heard first is still heard well
   * after the other appeared. The grace covers heartbeats of a restarted node's old
   * instance still in flight.
   */
  #checkInstances(heartbeat: Heartbeat, record: MemberRecord, nowMs: number): void {
    const current = record.instances.get(heartbeat.instanceId)!;
    const graceMs = 2 * this.#heartbeatIntervalMs;
    for (const [otherId, other] of record.instances) {
      if (otherId === heartbeat.instanceId) continue;
      const otherLive = nowMs - other.lastSeenMs < this.#deadAfterMs;
      const currentIsOlder = current.firstSeenMs < other.firstSeenMs;
      if (otherLive && currentIsOlder && nowMs - other.firstSeenMs > graceMs) {
        this.#reportConflict(heartbeat.nodeId, 'heartbeat', [otherId, heartbeat.instanceId], [],
          `two live processes send heartbeats as node ${heartbeat.nodeId} (instances ${otherId} and ${heartbeat.instanceId})`);
      }
    }
  }

  #onHostConflict(conflict: IdentityConflict): void {
    this.#reportConflict(conflict.peerId, conflict.source, [this.#instanceId], conflict.addresses, conflict.detail);
  }

  #reportConflict(nodeId: string, source: IdentityConflictView['source'], instanceIds: string[], addresses: string[], detail: string): void {
    const key = `${nodeId} ${source} ${[...instanceIds].sort().join(',')} ${addresses.join(',')}`;
    const now = Date.now();
    const existing = this.#conflicts.get(key);
    if (existing !== undefined && now - existing.lastDetectedMs <= conflictExpireMs) {
      existing.lastDetectedMs = now;
      return;
    }
    const ours = nodeId === this.nodeId;
    const message = `identity conflict: ${detail}. Node ids come from ${this.#dataDir}/peer.key, so a data dir was probably copied. ` +
      `Stop one of the two processes${ours ? ' (this one or the other)' : ''}, delete ${this.#dataDir}/peer.key on it, and start it again: it gets a new identity and joins as a new node.`;
    const conflict: IdentityConflictView = { nodeId, source, instanceIds, addresses, firstDetectedMs: now, lastDetectedMs: now, message };
    this.#conflicts.delete(key);
    this.#conflicts.set(key, conflict);
    while (this.#conflicts.size > limits.identityConflictsMax) this.#conflicts.delete(this.#conflicts.keys().next().value!);
    log.error(message);
    this.#emit({ type: 'identity-conflict', nodeId, conflict });
  }

  #evaluate(): void {
    if (this.#state !== 'running') return;
    for (const transition of this.#detector.evaluate(performance.now())) this.#applyTransition(transition, null);
    this.#redialDead();
  }

  readonly #lastRedialMs = new Map<string, number>();
  readonly #redialing = new Set<string>();

  /**
   * Dead peers are dialled afresh every few seconds. After a partition heals, a connection
   * that looked open can sit in TCP retransmission backoff for many seconds, and mDNS does
   * not reach peers known only from static lists or peer exchange; a fresh dial does.
   */
  #redialDead(): void {
    const reconnect = this.#host.reconnect?.bind(this.#host);
    if (reconnect === undefined) return;
    const now = performance.now();
    let started = 0;
    for (const member of this.members()) {
      if (member.self || member.state !== 'dead' || this.#redialing.has(member.nodeId)) continue;
      if (started >= redialsPerRoundMax || now - (this.#lastRedialMs.get(member.nodeId) ?? -Infinity) < redialDeadEveryMs) continue;
      started += 1;
      this.#lastRedialMs.set(member.nodeId, now);
      this.#redialing.add(member.nodeId);
      void reconnect(member.nodeId).catch(() => false).finally(() => this.#redialing.delete(member.nodeId));
    }
    for (const nodeId of this.#lastRedialMs.keys()) {
      if (this.member(nodeId)?.state !== 'dead') this.#lastRedialMs.delete(nodeId);
    }
  }

  #applyTransition(transition: Transition | null, heartbeat: Heartbeat | null): void {
    if (transition === null) return;
    const { peer: nodeId, from, to } = transition;
    if (to === 'forgotten') {
      this.#members.delete(nodeId);
      this.#emit({ type: 'forgotten', nodeId });
      return;
    }
    if (from === null && to === 'alive' && heartbeat !== null) {
      log.info('node joined', { nodeId, name: heartbeat.name });
      this.#emit({ type: 'joined', nodeId, heartbeat });
      return;
    }
    const name = this.#members.get(nodeId)?.heartbeat?.name;
    if (to === 'dead' || to === 'left') log.info(`node ${to}`, { nodeId, ...(name === undefined ? {} : { name }) });
    // A node back from dead (or from a stop) is news to whoever read of it going in the log.
    else if (to === 'alive' && (from === 'dead' || from === 'left')) log.info('node alive again', { nodeId, ...(name === undefined ? {} : { name }) });
    else log.debug(`node ${to}`, { nodeId, previous: from });
    this.#emit({ type: to, nodeId, previous: from });
  }
}
