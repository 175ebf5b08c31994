// Every bound of hivemesh in one place, unit last in each name. The README lists them;
// what exceeds a bound is refused with a clear error, never truncated silently.

// Membership plane
export const heartbeatBytesMax = 64 * 1024;
export const nodeNameLengthMax = 64;
export const urlLengthMax = 512;
export const gpusPerNodeMax = 32;
export const modelsPerNodeMax = 512;
export const agentsPerNodeMax = 256;
export const capabilitiesPerAgentMax = 64;
export const capabilityLengthMax = 64;
export const modelNameLengthMax = 256;
export const systemPromptLengthMax = 16 * 1024;
export const clusterNodesMax = 256;
export const bootstrapPeersMax = 64;

// Defaults (overridable by config) for the failure detector and heartbeats, in ms.
export const heartbeatIntervalMsDefault = 1_000;
export const suspectAfterMsDefault = 2_500;
export const deadAfterMsDefault = 4_500;
// A dead node's entry is forgotten after this long without news.
export const forgetDeadAfterMsDefault = 10 * 60_000;

// HTTP edge
export const httpBodyBytesMax = 1024 * 1024;
export const listLimitDefault = 100;
export const listLimitMax = 1_000;

// Consensus plane
export const raftMessageBytesMax = 16 * 1024 * 1024;
export const raftEntriesPerAppendMax = 512;
export const raftAppendBytesMax = 4 * 1024 * 1024;
export const raftInflightAppendsMax = 64;
export const raftProposalBytesMax = 1024 * 1024;
export const raftPendingProposalsMax = 10_000;
export const raftPendingReadsMax = 10_000;
export const raftSnapshotEveryEntriesDefault = 10_000;
export const votersTargetDefault = 3;
