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
/** A loaded model's context window as /api/ps reports it (tokens). */
export const contextLengthMax = 16_777_216;
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
export const raftMessageBytesMax = 512 * 1024 * 1024;
export const raftEntriesPerAppendMax = 512;
export const raftAppendBytesMax = 4 * 1024 * 1024;
export const raftInflightAppendsMax = 64;
export const raftProposalBytesMax = 1024 * 1024;
export const raftPendingProposalsMax = 10_000;
export const raftPendingReadsMax = 10_000;
export const raftSnapshotEveryEntriesDefault = 100_000;
/**
 * A snapshot is also taken once the entries since the last one hold this much command
 * data (UTF-16 units): the log is kept in memory until then, so large prompts compact
 * sooner than the entry count alone would.
 */
export const raftSnapshotEveryChars = 32 * 1024 * 1024;
/** A node that applied nothing for this long compacts the log it holds in memory... */
export const raftIdleCompactAfterMs = 5_000;
/** ...when at least this many entries follow its last snapshot. */
export const raftIdleCompactEntriesMin = 1_000;
export const votersTargetDefault = 3;

// ---------------------------------------------------------------------------------------
// Tasks, tokens and the replicated state machine (protocol/tasks.ts, protocol/tokens.ts,
// scheduler/state/, scheduler/tasks/). Lengths are in UTF-16 code units as JavaScript
// counts them, except where the name says bytes (UTF-8 of the JSON encoding).

// A submitted task (POST /api/tasks). The whole body is also under httpBodyBytesMax and
// a replicated command under raftProposalBytesMax, so the sum of these stays below both.
export const taskIdLengthMax = 128;
export const taskTitleLengthMax = 256;
export const taskPromptLengthMax = 256 * 1024;
export const taskMessagesMax = 256;
export const taskMessageContentLengthMax = 256 * 1024;
/** All message contents together, so 256 messages of 256 KiB cannot pass. */
export const taskMessagesTotalLengthMax = 512 * 1024;
export const taskDependsOnMax = 64;
export const taskOptionsBytesMax = 8 * 1024;
export const taskFormatSchemaBytesMax = 16 * 1024;
export const taskMetadataKeysMax = 32;
export const taskMetadataKeyLengthMax = 64;
export const taskMetadataValueLengthMax = 1024;
export const taskMetadataBytesMax = 8 * 1024;
export const idempotencyKeyLengthMax = 256;
export const taskPriorityMin = 0;
export const taskPriorityMax = 10;
export const taskPriorityDefault = 5;
export const taskTimeoutMsMin = 1_000;
export const taskTimeoutMsMax = 24 * 60 * 60_000;
export const taskTimeoutMsDefault = 10 * 60_000;
export const taskMaxAttemptsMax = 10;
export const taskMaxAttemptsDefault = 3;

// What a task keeps once it has run. Output above the bound is cut (at a character
// boundary) and the task says so with outputTruncated; the full text was streamed live.
export const taskOutputBytesMax = 256 * 1024;
export const taskErrorLengthMax = 4 * 1024;
/** A prompt after {{tasks.ID.output}} placeholders are filled in. */
export const taskRenderedPromptLengthMax = 1024 * 1024;

// The replicated queue. queued + assigned + running tasks together; past it, submissions
// are refused with 'queue-full' (HTTP 429). Finished tasks are pruned by tasks.prune.
export const activeTasksMax = 10_000;
export const finishedTasksKeepMaxDefault = 10_000;
/**
 * Hard cap on finished tasks kept, whatever tasks.prune does: past it, a submission drops
 * the oldest finished tasks (down to 90% of the cap) so memory stays bounded even if the
 * leader never prunes.
 */
export const finishedTasksMax = 20_000;
export const finishedTasksKeepMsDefault = 24 * 60 * 60_000;
/**
 * The text every node holds for its tasks (prompts, messages, system prompts, outputs and
 * errors, plus ~1 Ki characters per task for the rest), in characters. Counts alone do not
 * bound it: 20,000 finished tasks with 256 KiB prompts and outputs would be ~10 GB, and a
 * snapshot over V8's longest string (~512 Mi characters) cannot even be built; a snapshot
 * is built on the event loop, ~1 s per 100-400 Mi characters of large records on a small
 * machine, and a leader held that long loses its leadership. Past it, the oldest finished
 * tasks are dropped (down to 90%); a submission that would still not fit (the unfinished
 * tasks, and the finished ones their dependents quote, hold it all) is refused with
 * 'queue-full' (HTTP 429). 10,000 tasks of ~6 Ki characters fit.
 */
export const stateTaskCharsMax = 64 * 1024 * 1024;
/** What a task record counts beyond its texts (ids, attempts, usage, metadata). */
export const stateTaskOverheadChars = 1024;
/** Retry backoff after a failed or lost attempt: base * 2^(attempt-1), capped. */
export const retryBackoffBaseMs = 1_000;
export const retryBackoffMaxMs = 60_000;
/** An assigned attempt the node has not started within this long is requeued. */
export const taskStartTimeoutMsDefault = 30_000;
/** Priority aging: a queued task gains +1 effective priority per this many ms waited. */
export const taskAgingStepMsDefault = 30_000;
/** At most this many assignments come out of one planning round (one proposal batch). */
export const assignmentsPerPlanMax = 256;

// Bearer tokens (replicated as sha256 hashes).
export const tokenIdLengthMax = 64;
export const tokenNameLengthMax = 128;
export const activeTokensMax = 1_000;
/** Revoked tokens are kept for listing; past this many, the longest revoked is forgotten. */
export const revokedTokensKeepMax = 1_000;

// The small internal key/value space of the replicated state.
export const kvKeysMax = 1_000;
export const kvKeyLengthMax = 256;
export const kvValueLengthMax = 64 * 1024;
export const clusterIdLengthMax = 64;
/** One output event of a task's SSE stream; longer generated text goes in several. */
export const taskOutputChunkLengthMax = 16 * 1024;

// libp2p host and membership plane (daemon/p2p, daemon/membership)
// One length-prefixed frame on a hivemesh protocol stream (RPC request/response, Raft message).
export const p2pFrameBytesMax = 16 * 1024 * 1024;
// One one-way ordered message (a Raft snapshot for a lagging node holds the whole state):
// one above a frame travels as a header frame and pieces of p2pFragmentBytes.
export const p2pMessageBytesMax = 512 * 1024 * 1024;
export const p2pFragmentBytes = 1024 * 1024;
// Received bytes a stream may hold before its reader takes them (libp2p's default, 4 MiB,
// silently cut off every larger message: a snapshot over 4 MiB never arrived).
export const p2pStreamReadBufferBytesMax = 2 * p2pFrameBytesMax;
// One-way ordered messages waiting for one peer and protocol; the oldest are dropped beyond these.
export const p2pSendQueueMessagesMax = 1_024;
export const p2pSendQueueBytesMax = 32 * 1024 * 1024;
// Concurrent request streams per connection and protocol (gateway relays, output follows:
// a node's watchers of one remote attempt share one stream). As many as the gateway's
// relayed requests (gatewayInboundRelaysMax), so that bound, not this one, answers first.
export const p2pInboundStreamsMax = 256;
export const p2pRequestTimeoutMsDefault = 10_000;
export const p2pDialTimeoutMs = 5_000;
// Redial backoff for bootstrap peers that are not connected: starts low, doubles, capped.
export const p2pRedialMsMin = 250;
export const p2pRedialMsMax = 5_000;
// Periodic mDNS query. A new node finds the others with its own burst of queries at start
// (daemon/p2p/host.ts) and they learn of it when it dials; the period only bounds how long
// a healed partition takes to reconnect. Every node answers every query, so the LAN-wide
// cost grows with nodes squared over this period.
export const mdnsIntervalMsDefault = 5_000;
// Peers one peer-exchange answer may list.
export const peerExchangePeersMax = clusterNodesMax;
export const peerExchangeAddressesPerPeerMax = 16;
// Identity conflicts remembered for display.
export const identityConflictsMax = 64;
// A peer that left on purpose stays listed as left this long.
export const forgetLeftAfterMsDefault = 30_000;
// Each node asks one random peer for its peer list this often, so a dial that failed
// after a connect-time exchange is retried and the mesh stays fully connected.
export const peerExchangeIntervalMs = 10_000;

// Gateway (daemon/gateway): Ollama- and OpenAI-compatible requests placed at once.
// Gateway requests this node handles as the entry node at once (local or relayed); past
// it, 429 with Retry-After.
export const gatewayRequestsInFlightMax = 256;
// Relayed gateway requests this node serves for peers at once; past it the peer is told
// this node is busy and tries its next-ranked node.
export const gatewayInboundRelaysMax = 256;
// Nodes tried for one request when the chosen one fails before answering anything.
export const gatewayTriesMax = 2;
// One gateway request, response included (a long generation streams for a while).
export const gatewayRequestTimeoutMs = 60 * 60_000;
// A stopping node lets its gateway answers in flight finish this long, then cuts them.
export const gatewayStopDrainMs = 5_000;
// Body bytes per relay frame; Ollama's chunks are split to fit.
export const gatewayRelayChunkBytesMax = 64 * 1024;
export const gatewayRetryAfterSeconds = 1;
// Metrics (daemon/metrics): label combinations per metric family; more go to one
// overflow series so a bad label cannot grow memory without end.
export const metricsSeriesPerFamilyMax = 1_000;
// Window of the cluster figures of /api/metrics/performance.
export const performanceWindowMs = 60_000;
