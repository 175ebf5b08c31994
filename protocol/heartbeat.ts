// The heartbeat: what every node gossips about itself about once a second. Peers build
// their view of the cluster (GET /api/status/agents) from these. Gossipsub signs each
// message with the sender's libp2p key (StrictSign), and receivers check that the
// signer is the node the heartbeat speaks for.
import { Type, type Static } from '@sinclair/typebox';
import { jsonCodec } from './codec.ts';
import * as limits from './limits.ts';
import { PROTOCOL_VERSION } from './version.ts';

export const HEARTBEAT_TOPIC = `hivemesh/heartbeat/${PROTOCOL_VERSION}`;

const NonNegative = Type.Number({ minimum: 0 });
const Ratio = Type.Number({ minimum: 0, maximum: 1 });
const ModelName = Type.String({ minLength: 1, maxLength: limits.modelNameLengthMax });

export const RaftRole = Type.Union([
  Type.Literal('leader'), Type.Literal('follower'), Type.Literal('candidate'), Type.Literal('learner'), Type.Literal('unknown'),
]);
export type RaftRole = Static<typeof RaftRole>;

export const Gpu = Type.Object({
  model: Type.String({ maxLength: 256 }),
  vendor: Type.String({ maxLength: 128 }),
  vramTotalBytes: Type.Union([NonNegative, Type.Null()]),
  vramUsedBytes: Type.Union([NonNegative, Type.Null()]),
  utilization: Type.Union([Ratio, Type.Null()]),
}, { additionalProperties: false });
export type Gpu = Static<typeof Gpu>;

export const Hardware = Type.Object({
  cpu: Type.Object({
    model: Type.String({ maxLength: 256 }),
    cores: Type.Integer({ minimum: 0, maximum: 4096 }),
    /** One-minute load average divided by cores, 0..n. */
    load: NonNegative,
  }, { additionalProperties: false }),
  memory: Type.Object({ totalBytes: NonNegative, usedBytes: NonNegative }, { additionalProperties: false }),
  gpus: Type.Array(Gpu, { maxItems: limits.gpusPerNodeMax }),
}, { additionalProperties: false });
export type Hardware = Static<typeof Hardware>;

export const InstalledModel = Type.Object({
  name: ModelName,
  sizeBytes: NonNegative,
  family: Type.Optional(Type.String({ maxLength: 128 })),
  parameterSize: Type.Optional(Type.String({ maxLength: 64 })),
  quantization: Type.Optional(Type.String({ maxLength: 64 })),
}, { additionalProperties: false });
export type InstalledModel = Static<typeof InstalledModel>;

export const LoadedModel = Type.Object({
  name: ModelName,
  sizeBytes: NonNegative,
  vramBytes: NonNegative,
  /** ISO-8601 time at which Ollama unloads the model, or null when it never expires. */
  expiresAt: Type.Union([Type.String({ maxLength: 64 }), Type.Null()]),
  /** The context window it was loaded with (/api/ps context_length); absent when Ollama does not say. */
  contextLength: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.contextLengthMax })),
}, { additionalProperties: false });
export type LoadedModel = Static<typeof LoadedModel>;

export const OllamaState = Type.Object({
  url: Type.String({ maxLength: limits.urlLengthMax }),
  reachable: Type.Boolean(),
  version: Type.Union([Type.String({ maxLength: 64 }), Type.Null()]),
  /** Why Ollama is not reachable, for people. */
  error: Type.Union([Type.String({ maxLength: 1024 }), Type.Null()]),
  installed: Type.Array(InstalledModel, { maxItems: limits.modelsPerNodeMax }),
  loaded: Type.Array(LoadedModel, { maxItems: limits.modelsPerNodeMax }),
  /** Measured generation speed per model (tokens/s), from finished generations. */
  tokensPerSecond: Type.Record(Type.String({ maxLength: limits.modelNameLengthMax }), NonNegative),
  /**
   * Measured model load speed (bytes of model per second into memory), from the cold
   * loads Ollama reported (load_duration); absent until the node has seen one.
   */
  loadBytesPerSecond: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
}, { additionalProperties: false });
export type OllamaState = Static<typeof OllamaState>;

export const Load = Type.Object({
  running: Type.Integer({ minimum: 0 }),
  queued: Type.Integer({ minimum: 0 }),
  concurrencyLimit: Type.Integer({ minimum: 0, maximum: 1024 }),
}, { additionalProperties: false });
export type Load = Static<typeof Load>;

export const Agent = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128 }),
  model: ModelName,
  capabilities: Type.Array(Type.Object({
    name: Type.String({ minLength: 1, maxLength: limits.capabilityLengthMax }),
    proficiency: Ratio,
  }, { additionalProperties: false }), { maxItems: limits.capabilitiesPerAgentMax }),
}, { additionalProperties: false });
export type Agent = Static<typeof Agent>;

export const Heartbeat = Type.Object({
  kind: Type.Literal('heartbeat'),
  protocolVersion: Type.Literal(PROTOCOL_VERSION),
  softwareVersion: Type.String({ maxLength: 64 }),
  nodeId: Type.String({ minLength: 1, maxLength: 128 }),
  /** Random per process start: two live processes with one node id have two of these. */
  instanceId: Type.String({ minLength: 1, maxLength: 64 }),
  /** Raft cluster id once known, so two clusters sharing a key on one LAN are told apart. */
  clusterId: Type.Union([Type.String({ maxLength: 64 }), Type.Null()]),
  name: Type.String({ minLength: 1, maxLength: limits.nodeNameLengthMax }),
  apiUrl: Type.String({ maxLength: limits.urlLengthMax }),
  /** Monotonic per instance; receivers drop reordered or replayed heartbeats. */
  sequence: Type.Integer({ minimum: 0 }),
  /** Sender's wall clock (ms since epoch), for display and drift warnings only. */
  sentAt: Type.Integer({ minimum: 0 }),
  startedAt: Type.Integer({ minimum: 0 }),
  raft: Type.Object({
    role: RaftRole,
    term: Type.Integer({ minimum: 0 }),
    leaderId: Type.Union([Type.String({ maxLength: 128 }), Type.Null()]),
    commitIndex: Type.Integer({ minimum: 0 }),
    /** The node's cluster holds nothing of users' yet (no tasks, tokens or keys): it may merge into another. */
    clusterEmpty: Type.Boolean(),
  }, { additionalProperties: false }),
  hardware: Hardware,
  ollama: OllamaState,
  load: Load,
  agents: Type.Array(Agent, { maxItems: limits.agentsPerNodeMax }),
  /** True in the last heartbeat of a node that is stopping on purpose. */
  leaving: Type.Boolean(),
}, { additionalProperties: false });
export type Heartbeat = Static<typeof Heartbeat>;

export const heartbeatCodec = jsonCodec('heartbeat', Heartbeat, limits.heartbeatBytesMax);
