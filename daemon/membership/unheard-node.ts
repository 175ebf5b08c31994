// The node list's entry for a node the consensus configuration names but this node has
// never heard from (it died before this node started or joined): its id, state and raft
// role are known, nothing else is, and the entry says so (neverHeard) rather than guess.
import type { NodeStatus } from '../../protocol/api.ts';
import type { RaftRole } from '../../protocol/heartbeat.ts';
import type { MemberView } from './membership.ts';

export function unheardNodeStatus(member: MemberView, raftRole: RaftRole, clusterId: string | null, nowMs: number, name?: string): NodeStatus {
  if (member.heartbeat !== null || member.self || member.state === 'left') throw new Error(`unheardNodeStatus: ${member.nodeId} is not a node never heard`);
  return {
    id: member.nodeId,
    // The name the node wrote into the replicated state when it was a member, if it did.
    name: name ?? member.nodeId,
    apiUrl: '',
    state: member.state,
    raftRole,
    self: false,
    clusterId,
    softwareVersion: 'unknown',
    protocolVersion: 0,
    startedAt: '',
    hardware: { cpu: { model: '', cores: 0, load: 0 }, memory: { totalBytes: 0, usedBytes: 0 }, gpus: [] },
    ollama: { url: '', reachable: false, version: null, error: null },
    models: { installed: [], loaded: [], tokensPerSecond: {} },
    load: { running: 0, queued: 0, concurrencyLimit: 0 },
    agents: [],
    capabilities: [],
    lastSeen: new Date(member.lastSeenMs).toISOString(),
    lastSeenAgoMs: Math.max(0, nowMs - member.lastSeenMs),
    neverHeard: true,
  };
}
