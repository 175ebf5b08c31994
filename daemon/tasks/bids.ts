// Bids over gossip (protocol/bids.ts). Every node answers the leader's bid requests with
// its own estimates (its real queue, the models its Ollama holds in VRAM, its measured
// tokens/s); the leader collects the answers of the nodes it expects for a short, bounded
// time. Requests from anyone but the leader this node knows are ignored, and answers from
// nodes that were not asked, or for tasks that were not listed, are dropped.
import {
  BID_REQUEST_TOPIC, BID_RESPONSE_PROTOCOL, bidEstimateMsMax, bidRequestCodec, bidResponseCodec,
  type BidEstimate, type BidRequest, type BidTask,
} from '../../protocol/bids.ts';
import type { ReplicatedState } from '../../scheduler/state/state.ts';
import type { NodeView } from '../../scheduler/tasks/node-view.ts';
import { candidateOn, estimateCompletionMs, type Bid } from '../../scheduler/tasks/placement.ts';
import { logger } from '../log.ts';
import type { P2PHost } from '../p2p/host.ts';

const log = logger('tasks:bids');

/** Rounds the leader keeps open at once; it runs one per scheduling round. */
const openRoundsMax = 8;

export interface BidServiceDeps {
  nodeId: string;
  host: Pick<P2PHost, 'publish' | 'subscribe' | 'handleMessages' | 'send'>;
  state: () => ReplicatedState;
  /** The leader this node follows now, or null. */
  leader: () => string | null;
  /** This node as a bidder sees itself now. */
  selfView: () => NodeView;
}

interface OpenRound {
  id: string;
  taskIds: Set<string>;
  waitingFor: Set<string>;
  bids: Bid[];
  done: () => void;
}

/** This node's estimates for the tasks of a request it could run (a pure function of its view). */
export function estimateBids(state: ReplicatedState, view: NodeView, tasks: readonly BidTask[]): BidEstimate[] {
  const bids: BidEstimate[] = [];
  for (const task of tasks) {
    const record = state.getTaskRecord(task.id);
    // A task this node has not applied yet gets no bid: the leader falls back to gossip.
    if (record === undefined || record.status !== 'queued') continue;
    const candidate = candidateOn(record, view);
    if (candidate === null) continue;
    const typical = task.typicalTokensPerSecond;
    const estimateMs = estimateCompletionMs(record, view, { model: candidate.model, ...(typical === undefined ? {} : { unmeasuredTokensPerSecond: typical }) });
    bids.push({ taskId: task.id, estimateMs: Math.min(bidEstimateMsMax, Math.max(0, Math.round(estimateMs))) });
  }
  return bids;
}

export class BidService {
  private readonly deps: BidServiceDeps;
  private readonly rounds = new Map<string, OpenRound>();
  private roundCounter = 0;
  private unsubscribe: (() => void) | null = null;
  private answered = 0;

  constructor(deps: BidServiceDeps) {
    this.deps = deps;
  }

  async start(): Promise<void> {
    this.unsubscribe = this.deps.host.subscribe(BID_REQUEST_TOPIC, (from, bytes) => this.onRequest(from, bytes));
    await this.deps.host.handleMessages(BID_RESPONSE_PROTOCOL, (from, bytes) => this.onResponse(from, bytes));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    for (const round of this.rounds.values()) round.done();
    this.rounds.clear();
  }

  /** Bid requests this node answered (for tests and metrics). */
  get answeredCount(): number {
    return this.answered;
  }

  private onRequest(from: string, bytes: Uint8Array): void {
    let request: BidRequest;
    try {
      request = bidRequestCodec.decode(bytes);
    } catch (error) {
      log.debug('dropped a malformed bid request', { from, error: error as Error });
      return;
    }
    // Gossip says who signed it; only the leader we follow may ask.
    if (request.leader !== from || this.deps.leader() !== from || from === this.deps.nodeId) return;
    const bids = estimateBids(this.deps.state(), this.deps.selfView(), request.tasks);
    try {
      this.deps.host.send(from, BID_RESPONSE_PROTOCOL, bidResponseCodec.encode({ kind: 'bid-response', round: request.round, node: this.deps.nodeId, bids }));
      this.answered += 1;
    } catch (error) {
      log.debug('could not answer a bid request', { leader: from, error: error as Error });
    }
  }

  private onResponse(from: string, bytes: Uint8Array): void {
    let response;
    try {
      response = bidResponseCodec.decode(bytes);
    } catch (error) {
      log.debug('dropped a malformed bid response', { from, error: error as Error });
      return;
    }
    const round = this.rounds.get(response.round);
    if (round === undefined || response.node !== from || !round.waitingFor.has(from)) return;
    for (const bid of response.bids) {
      if (round.taskIds.has(bid.taskId)) round.bids.push({ taskId: bid.taskId, node: from, estimateMs: bid.estimateMs });
    }
    round.waitingFor.delete(from);
    if (round.waitingFor.size === 0) round.done();
  }

  /**
   * Leader side: asks for bids on `tasks`, and resolves with the bids of the nodes in
   * `expectFrom` that answered within `waitMs` (sooner once all have).
   */
  async collect(tasks: BidTask[], expectFrom: readonly string[], term: number, waitMs: number): Promise<Bid[]> {
    const waitingFor = new Set(expectFrom.filter((node) => node !== this.deps.nodeId));
    if (tasks.length === 0 || waitingFor.size === 0 || this.rounds.size >= openRoundsMax) return [];
    const id = `${this.deps.nodeId}:${term}:${++this.roundCounter}`;
    let timer: NodeJS.Timeout | undefined;
    const finished = new Promise<void>((resolve) => {
      const round: OpenRound = {
        id, taskIds: new Set(tasks.map((task) => task.id)), waitingFor, bids: [],
        done: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.rounds.set(id, round);
      timer = setTimeout(round.done, waitMs);
    });
    const round = this.rounds.get(id)!;
    try {
      await this.deps.host.publish(BID_REQUEST_TOPIC, bidRequestCodec.encode({ kind: 'bid-request', round: id, leader: this.deps.nodeId, term, tasks }));
    } catch (error) {
      // No peer subscribed yet, or the host is stopping: plan from the gossiped view.
      log.debug('could not publish a bid request', { error: error as Error });
      round.done();
    }
    await finished;
    this.rounds.delete(id);
    return round.bids;
  }
}
