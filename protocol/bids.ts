// Bids: the leader's question "how soon could you finish these tasks?" and each node's
// answer. The leader publishes one BidRequest per scheduling round on a gossip topic; every
// node eligible for some of the tasks answers the leader directly (a one-way message) with
// its own estimate per task, from its real queue, the models its Ollama has in VRAM and its
// measured tokens/s. Bids are advisory: a missing or late bid makes the leader fall back to
// its gossiped view of the node, so neither message needs to be reliable.
import { Type, type Static } from '@sinclair/typebox';
import { jsonCodec } from './codec.ts';
import * as limits from './limits.ts';
import { TaskId } from './tasks.ts';
import { PROTOCOL_VERSION } from './version.ts';

export const BID_REQUEST_TOPIC = `hivemesh/bids/${PROTOCOL_VERSION}`;
/** Answers travel as one-way messages to the leader on this libp2p protocol. */
export const BID_RESPONSE_PROTOCOL = `/hivemesh/bids/${PROTOCOL_VERSION}.0.0`;

/** Tasks one bid request may list: one planning round's worth. */
export const bidTasksPerRequestMax = limits.assignmentsPerPlanMax;
/** Bytes of one encoded bid request or response (256 tasks at a few hundred bytes each). */
export const bidRequestBytesMax = 128 * 1024;
export const bidResponseBytesMax = 64 * 1024;
/** A round id is `<leader>:<term>:<counter>`; bounded like any other string on the wire. */
export const bidRoundIdLengthMax = 256;
/** Estimates above this are nonsense (a day); a bid claiming more is refused. */
export const bidEstimateMsMax = 24 * 60 * 60_000;

const NodeId = Type.String({ minLength: 1, maxLength: 128 });
const RoundId = Type.String({ minLength: 1, maxLength: bidRoundIdLengthMax });

export const BidTask = Type.Object({
  id: TaskId,
  /** The task's model, or null for a capability task whose agent picks the model. */
  model: Type.Union([Type.String({ minLength: 1, maxLength: limits.modelNameLengthMax }), Type.Null()]),
  capability: Type.Union([Type.String({ minLength: 1, maxLength: limits.capabilityLengthMax }), Type.Null()]),
  /** Output tokens the leader expects (num_predict, or its default guess): for logs and bidders without the task. */
  expectedTokens: Type.Integer({ minimum: 0, maximum: 1_000_000 }),
  /**
   * The speed (tokens/s) the other nodes measured for this model, for a bidder that has
   * measured none of its own: "unknown" then means "typical", not "slowest".
   */
  typicalTokensPerSecond: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000 })),
}, { additionalProperties: false });
export type BidTask = Static<typeof BidTask>;

export const BidRequest = Type.Object({
  kind: Type.Literal('bid-request'),
  round: RoundId,
  /** The node asking; receivers ignore requests from anyone but the leader they know. */
  leader: NodeId,
  term: Type.Integer({ minimum: 0 }),
  tasks: Type.Array(BidTask, { minItems: 1, maxItems: bidTasksPerRequestMax }),
}, { additionalProperties: false });
export type BidRequest = Static<typeof BidRequest>;

export const BidEstimate = Type.Object({
  taskId: TaskId,
  /** Estimated ms from now until the task would complete on the bidder. */
  estimateMs: Type.Integer({ minimum: 0, maximum: bidEstimateMsMax }),
}, { additionalProperties: false });
export type BidEstimate = Static<typeof BidEstimate>;

export const BidResponse = Type.Object({
  kind: Type.Literal('bid-response'),
  round: RoundId,
  node: NodeId,
  /** One per listed task the bidder can run; tasks it cannot run are left out. */
  bids: Type.Array(BidEstimate, { maxItems: bidTasksPerRequestMax }),
}, { additionalProperties: false });
export type BidResponse = Static<typeof BidResponse>;

export const bidRequestCodec = jsonCodec('bid request', BidRequest, bidRequestBytesMax);
export const bidResponseCodec = jsonCodec('bid response', BidResponse, bidResponseBytesMax);
