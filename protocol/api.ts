// Shapes of the HTTP API's status answers and of its errors (ARCHITECTURE.md, "HTTP
// API"). The daemon's routes declare these as response schemas and the CLI and the
// dashboard read them, so the three cannot drift apart.
import { Type, type Static } from '@sinclair/typebox';
import { Agent, Hardware, InstalledModel, Load, LoadedModel, RaftRole } from './heartbeat.ts';

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Optional(Type.Unknown()),
  }),
});
export type ErrorBody = Static<typeof ErrorBody>;

export const MemberState = Type.Union([Type.Literal('alive'), Type.Literal('suspect'), Type.Literal('dead')]);
export type MemberState = Static<typeof MemberState>;

const Counts = (keys: readonly string[]) => Type.Object(Object.fromEntries(keys.map((key) => [key, Type.Integer({ minimum: 0 })])));

export const taskStatuses = ['queued', 'assigned', 'running', 'completed', 'failed', 'cancelled'] as const;

export const ClusterStatus = Type.Object({
  clusterId: Type.Union([Type.String(), Type.Null()]),
  nodeId: Type.String(),
  nodeName: Type.String(),
  leaderId: Type.Union([Type.String(), Type.Null()]),
  term: Type.Integer({ minimum: 0 }),
  commitIndex: Type.Integer({ minimum: 0 }),
  appliedIndex: Type.Integer({ minimum: 0 }),
  role: RaftRole,
  voters: Type.Array(Type.String()),
  learners: Type.Array(Type.String()),
  nodes: Type.Intersect([Counts(['alive', 'suspect', 'dead']), Type.Object({ total: Type.Integer({ minimum: 0 }) })]),
  tasks: Type.Intersect([Counts(taskStatuses), Type.Object({ total: Type.Integer({ minimum: 0 }) })]),
  softwareVersion: Type.String(),
  protocolVersion: Type.Integer(),
  clusterKeyFingerprint: Type.String(),
  listenAddresses: Type.Array(Type.String()),
  /** Problems an operator must act on: identity conflicts, a second cluster on the LAN, no Ollama. */
  alerts: Type.Array(Type.Object({
    kind: Type.String(),
    message: Type.String(),
    since: Type.String(),
  })),
});
export type ClusterStatus = Static<typeof ClusterStatus>;

export const NodeStatus = Type.Object({
  id: Type.String(),
  name: Type.String(),
  apiUrl: Type.String(),
  state: MemberState,
  raftRole: RaftRole,
  self: Type.Boolean(),
  clusterId: Type.Union([Type.String(), Type.Null()]),
  softwareVersion: Type.String(),
  protocolVersion: Type.Integer(),
  startedAt: Type.String(),
  hardware: Hardware,
  ollama: Type.Object({
    url: Type.String(),
    reachable: Type.Boolean(),
    version: Type.Union([Type.String(), Type.Null()]),
    error: Type.Union([Type.String(), Type.Null()]),
  }),
  models: Type.Object({
    installed: Type.Array(InstalledModel),
    loaded: Type.Array(LoadedModel),
    tokensPerSecond: Type.Record(Type.String(), Type.Number()),
  }),
  load: Load,
  agents: Type.Array(Agent),
  /** Union of the agents' capability names. */
  capabilities: Type.Array(Type.String()),
  lastSeen: Type.String(),
  lastSeenAgoMs: Type.Integer({ minimum: 0 }),
  /**
   * Present (true) when the answering node has never heard from this one: only the
   * consensus configuration names it. Its name is its id, lastSeen is when the answering
   * node started listening, and hardware, models, load and versions are empty.
   */
  neverHeard: Type.Optional(Type.Literal(true)),
});
export type NodeStatus = Static<typeof NodeStatus>;

export const AgentsStatus = Type.Object({
  nodes: Type.Array(NodeStatus),
});
export type AgentsStatus = Static<typeof AgentsStatus>;

export const HealthLive = Type.Object({ status: Type.Literal('live'), nodeId: Type.String() });
export const HealthReady = Type.Object({ status: Type.Literal('ready'), nodeId: Type.String(), leaderId: Type.String() });
