// `hivemesh status` and `hivemesh nodes`: the cluster and its members, from any node.
import type { AgentsStatus, ClusterStatus } from '../../../protocol/api.ts';
import type { ApiClient } from '../client.ts';
import { ago, bytes, nodeNamer, shortId, table, type NodeNamer } from '../format.ts';

/**
 * How to name nodes in human output, from the node list (GET /api/status/agents). Without
 * it (the request failed) nodes go by short id: the names are a courtesy, not worth failing
 * the command for.
 */
export async function fetchNodeNamer(client: ApiClient): Promise<NodeNamer> {
  try {
    const { nodes } = await client.get<AgentsStatus>('/api/status/agents');
    return nodeNamer(nodes);
  } catch {
    return nodeNamer(null);
  }
}

export async function statusCommand(client: ApiClient, json: boolean): Promise<string> {
  if (json) return JSON.stringify(await client.get<ClusterStatus>('/api/status/cluster'), null, 2);
  const [status, nameOf] = await Promise.all([client.get<ClusterStatus>('/api/status/cluster'), fetchNodeNamer(client)]);
  const taskCounts = Object.entries(status.tasks).filter(([key]) => key !== 'total').map(([key, value]) => `${key} ${value}`).join(', ');
  const lines = [
    `cluster   ${status.clusterId ?? '(not formed yet)'}`,
    `node      ${status.nodeName} (${status.nodeId}), ${status.role}`,
    `leader    ${status.leaderId === null ? 'none known' : nameOf(status.leaderId)}`,
    `term      ${status.term}   commit ${status.commitIndex}   applied ${status.appliedIndex}`,
    `voters    ${status.voters.map(nameOf).join(', ') || '-'}${status.learners.length > 0 ? `   learners ${status.learners.map(nameOf).join(', ')}` : ''}`,
    `nodes     ${status.nodes.total}: alive ${status.nodes.alive}, suspect ${status.nodes.suspect}, dead ${status.nodes.dead}`,
    `tasks     ${status.tasks.total}: ${taskCounts}`,
    `version   ${status.softwareVersion} (protocol ${status.protocolVersion}), cluster key ${status.clusterKeyFingerprint}`,
    `listening ${status.listenAddresses.join('\n          ') || '-'}`,
  ];
  for (const alert of status.alerts) lines.push(`ALERT     ${alert.kind}: ${alert.message}`);
  return lines.join('\n');
}

export async function nodesCommand(client: ApiClient, json: boolean): Promise<string> {
  const list = await client.get<AgentsStatus>('/api/status/agents');
  // As the API gives it, as status and tasks print theirs.
  if (json) return JSON.stringify(list, null, 2);
  const { nodes } = list;
  const rows = nodes.map((node) => {
    // Named by the consensus configuration only: nothing but its id and role is known here.
    if (node.neverHeard === true) return [node.name === node.id ? shortId(node.id) : node.name, shortId(node.id), node.state, node.raftRole, '-', '?', '?', '-', 'never heard'];
    const gpus = node.hardware.gpus.length === 0
      ? 'none'
      : node.hardware.gpus.map((gpu) => `${gpu.model}${gpu.vramTotalBytes === null ? '' : ` ${bytes(gpu.vramTotalBytes)}`}`).join(', ');
    const models = node.ollama.reachable
      ? `${node.models.installed.length} (${node.models.loaded.map((model) => model.name).join(', ') || 'none loaded'})`
      : 'ollama down';
    return [
      `${node.name}${node.self ? '*' : ''}`, shortId(node.id), node.state, node.raftRole, node.apiUrl, gpus, models,
      `${node.load.running}/${node.load.concurrencyLimit} +${node.load.queued}`, ago(node.lastSeenAgoMs),
    ];
  });
  return table(['NAME', 'ID', 'STATE', 'ROLE', 'API', 'GPUS', 'MODELS (LOADED)', 'LOAD', 'SEEN'], rows) + '\n(* = the node answering)';
}
