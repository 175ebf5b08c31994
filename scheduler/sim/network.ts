// The simulated network: decides when (and whether, and how often) each message arrives,
// and which directed links are cut by partitions. It holds no queue of its own; the
// simulator schedules the deliveries it returns on the shared agenda.
import type { Message, NodeId } from '../consensus/types.ts';
import type { Prng } from './prng.ts';

export interface NetworkFaults {
  /** Probability that a message is lost. */
  dropProbability: number;
  /** Probability that a message is delivered twice (at independent delays). */
  duplicateProbability: number;
  /** Probability that a message takes the slow path, which reorders it behind later ones. */
  slowProbability: number;
}

export interface NetworkOptions {
  nodes: readonly NodeId[];
  /** Typical one-way delay, uniform in [delayMinUs, delayMaxUs]. */
  delayMinUs: number;
  delayMaxUs: number;
  /** Slow-path delay, uniform in [delayMaxUs, slowDelayMaxUs]. */
  slowDelayMaxUs: number;
  faults: NetworkFaults;
  /** Messages in flight at once; beyond it the network drops (a full socket buffer). */
  inFlightMax: number;
}

export const quietNetwork: NetworkFaults = { dropProbability: 0, duplicateProbability: 0, slowProbability: 0 };

export interface NetworkCounters {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  cutOff: number;
  overflowed: number;
}

export class SimNetwork {
  readonly options: NetworkOptions;
  faults: NetworkFaults;
  readonly counters: NetworkCounters = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, cutOff: 0, overflowed: 0 };
  private readonly indexOf = new Map<NodeId, number>();
  /** blocked[from * n + to]: the directed link from -> to is cut. */
  private readonly blocked: Uint8Array;
  private inFlight = 0;
  private readonly random: Prng;

  constructor(options: NetworkOptions, random: Prng) {
    if (options.delayMinUs < 0 || options.delayMaxUs < options.delayMinUs || options.slowDelayMaxUs < options.delayMaxUs) {
      throw new RangeError('network delays must satisfy 0 <= delayMinUs <= delayMaxUs <= slowDelayMaxUs');
    }
    this.options = options;
    this.faults = options.faults;
    this.random = random;
    options.nodes.forEach((node, index) => this.indexOf.set(node, index));
    this.blocked = new Uint8Array(options.nodes.length * options.nodes.length);
  }

  /**
   * Called when `message` is sent; returns the delays (0, 1 or 2 of them) after which
   * copies of it reach the link's far end. The caller schedules a delivery per delay and
   * calls `arrive` when each is due.
   */
  send(message: Message): number[] {
    this.counters.sent++;
    if (this.isCut(message.from, message.to)) {
      this.counters.cutOff++;
      return [];
    }
    if (this.random.chance(this.faults.dropProbability)) {
      this.counters.dropped++;
      return [];
    }
    const copies = this.random.chance(this.faults.duplicateProbability) ? 2 : 1;
    if (copies === 2) this.counters.duplicated++;
    const delays: number[] = [];
    for (let copy = 0; copy < copies; copy++) {
      if (this.inFlight >= this.options.inFlightMax) {
        this.counters.overflowed++;
        break;
      }
      this.inFlight++;
      delays.push(this.drawDelay());
    }
    return delays;
  }

  /** A scheduled copy is due: true if it is delivered, false if a partition ate it on the way. */
  arrive(message: Message): boolean {
    this.inFlight--;
    if (this.isCut(message.from, message.to)) {
      this.counters.cutOff++;
      return false;
    }
    this.counters.delivered++;
    return true;
  }

  /** A scheduled copy will never be delivered (its destination crashed and forgot it). */
  discard(): void {
    this.inFlight--;
  }

  get messagesInFlight(): number {
    return this.inFlight;
  }

  isCut(from: NodeId, to: NodeId): boolean {
    const fromIndex = this.indexOf.get(from);
    const toIndex = this.indexOf.get(to);
    // A message to a node the simulation does not know is a core bug; surface it loudly.
    if (fromIndex === undefined || toIndex === undefined) throw new Error(`message between unknown nodes ${from} -> ${to}`);
    return this.blocked[fromIndex * this.options.nodes.length + toIndex] === 1;
  }

  cut(from: NodeId, to: NodeId): void {
    this.setLink(from, to, 1);
  }

  /** Cuts every link between the two groups, both ways. */
  split(groupA: readonly NodeId[], groupB: readonly NodeId[]): void {
    for (const a of groupA) {
      for (const b of groupB) {
        this.setLink(a, b, 1);
        this.setLink(b, a, 1);
      }
    }
  }

  isolate(node: NodeId): void {
    this.split([node], this.options.nodes.filter((other) => other !== node));
  }

  heal(): void {
    this.blocked.fill(0);
  }

  get partitioned(): boolean {
    return this.blocked.includes(1);
  }

  private setLink(from: NodeId, to: NodeId, value: 0 | 1): void {
    const fromIndex = this.indexOf.get(from);
    const toIndex = this.indexOf.get(to);
    if (fromIndex === undefined || toIndex === undefined) throw new RangeError(`unknown link ${from} -> ${to}`);
    if (fromIndex !== toIndex) this.blocked[fromIndex * this.options.nodes.length + toIndex] = value;
  }

  private drawDelay(): number {
    const { delayMinUs, delayMaxUs, slowDelayMaxUs } = this.options;
    if (this.random.chance(this.faults.slowProbability)) return this.random.range(delayMaxUs, slowDelayMaxUs);
    return this.random.range(delayMinUs, delayMaxUs);
  }
}

/**
 * A deep copy of a message, as a real network would deliver a decoded copy: the receiver
 * must never share mutable objects with the sender.
 */
export function cloneMessage(message: Message): Message {
  const copy: Message = { ...message };
  if (message.entries !== undefined) copy.entries = message.entries.map((entry) => ({ ...entry }));
  if (message.snapshot !== undefined) {
    const snapshot = message.snapshot;
    copy.snapshot = {
      index: snapshot.index,
      term: snapshot.term,
      config: { voters: [...snapshot.config.voters], learners: [...snapshot.config.learners] },
      data: snapshot.data,
    };
  }
  return copy;
}
