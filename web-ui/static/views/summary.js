// The top of the page: where this node stands in the cluster (ids, leader, term, commit
// index, counts) and the alerts an operator must act on.
import { h, replaceKeepingFocus } from '../dom.js';
import { ago, shortId } from '../format.js';

/** @typedef {import('../api.js').ClusterStatus} ClusterStatus */
/** @typedef {import('../api.js').NodeStatus} NodeStatus */

export const stateSymbols = { alive: '●', suspect: '◐', dead: '✕' };
export const statusSymbols = { queued: '◷', assigned: '→', running: '▶', completed: '✓', failed: '✕', cancelled: '⊘' };

/**
 * A node id shown by name when the cluster knows it, with the full id in the tooltip.
 * @param {string | null} id
 * @param {Map<string, NodeStatus>} nodesById
 */
export function nodeLabel(id, nodesById) {
  if (id === null) return h('span', { class: 'empty' }, 'none');
  const node = nodesById.get(id);
  return h('span', { title: id }, node ? node.name : shortId(id));
}

/**
 * @param {Element} container
 * @param {ClusterStatus} status
 * @param {Map<string, NodeStatus>} nodesById
 */
export function renderSummary(container, status, nodesById) {
  /** @param {string} term @param {...(Node|string|null)} value */
  const tile = (term, ...value) => h('dl', { class: 'tile' }, h('dt', null, term), h('dd', null, ...value));
  const taskCounts = /** @type {Record<string, number>} */ (/** @type {unknown} */ (status.tasks));
  replaceKeepingFocus(container, [
    tile('Cluster', h('span', { class: 'mono', title: status.clusterId ?? '' }, status.clusterId === null ? 'not formed yet' : shortId(status.clusterId))),
    tile('This node', h('span', { title: status.nodeId }, status.nodeName), h('div', { class: 'sub' }, status.role)),
    tile('Leader', status.leaderId === null ? h('span', { class: 'badge bad' }, '✕ none') : nodeLabel(status.leaderId, nodesById)),
    tile('Term · commit', `${status.term} · ${status.commitIndex}`, h('div', { class: 'sub' }, `applied ${status.appliedIndex}`)),
    tile('Nodes', h('div', { class: 'counts' },
      h('span', { class: 'badge state-alive' }, `${stateSymbols.alive} ${status.nodes.alive} alive`),
      status.nodes.suspect > 0 ? h('span', { class: 'badge state-suspect' }, `${stateSymbols.suspect} ${status.nodes.suspect} suspect`) : null,
      status.nodes.dead > 0 ? h('span', { class: 'badge state-dead' }, `${stateSymbols.dead} ${status.nodes.dead} dead`) : null,
    )),
    tile('Tasks', h('div', { class: 'counts' },
      Object.entries(statusSymbols)
        .filter(([name]) => (taskCounts[name] ?? 0) > 0)
        .map(([name, symbol]) => h('span', { class: `badge status-${name}` }, `${symbol} ${taskCounts[name]} ${name}`)),
      status.tasks.total === 0 ? h('span', { class: 'empty' }, 'none yet') : null,
    )),
  ]);
}

/**
 * Alert kinds whose message says how long the condition has lasted ("no leader for 44 s"):
 * a "since" beside it would give a second, different age (the alert is raised a few seconds
 * into the condition), so it is left out.
 */
const alertKindsWithOwnDuration = new Set(['no-leader']);

/**
 * The server's alerts, plus what the page can see for itself: no leader, and Ollama down
 * on a live node (unless the server already raised an Ollama alert for it).
 * @param {Element} container
 * @param {ClusterStatus} status
 * @param {NodeStatus[]} nodes
 * @param {number} nowMs
 */
export function renderAlerts(container, status, nodes, nowMs) {
  /** @type {HTMLElement[]} */
  const items = [];
  for (const alert of status.alerts.slice(0, 20)) {
    const since = Date.parse(alert.since);
    const showSince = !Number.isNaN(since) && !alertKindsWithOwnDuration.has(alert.kind);
    items.push(h('div', { class: 'alert', 'data-alert-kind': alert.kind },
      h('strong', null, alertTitle(alert.kind)), alert.message,
      showSince ? h('span', { class: 'since' }, `since ${ago(Math.max(0, nowMs - since))}`) : null));
  }
  // The server's no-leader alert says more (which voters are down); the page's own is for
  // the first seconds, before the server raises it, and for an older daemon.
  const serverSaysNoLeader = status.alerts.some((alert) => alert.kind === 'no-leader');
  if (status.leaderId === null && !serverSaysNoLeader) {
    items.push(h('div', { class: 'alert' }, h('strong', null, 'No leader.'),
      'New tasks cannot be scheduled until a majority of the voting nodes can reach each other. Check that the voters listed by ',
      h('code', null, 'hivemesh status'), ' are running and can reach each other.'));
  }
  // The node answering lists every live node's unreachable Ollama among its alerts; from
  // the heartbeats only when it does not (an older daemon).
  const serverSaysOllama = status.alerts.some((alert) => /ollama/i.test(alert.kind));
  for (const node of nodes) {
    if (node.state !== 'alive' || node.ollama.reachable) continue;
    if (serverSaysOllama) continue;
    items.push(h('div', { class: 'alert alert-warn' }, h('strong', null, `Ollama is down on ${node.name}.`),
      `${node.ollama.error ?? 'it does not answer'} (${node.ollama.url}). That node takes no tasks until Ollama answers again.`));
  }
  replaceKeepingFocus(container, items);
}

/** @param {string} kind */
function alertTitle(kind) {
  const known = /** @type {Record<string, string>} */ ({
    'identity-conflict': 'Identity conflict:',
    'second-cluster': 'Another cluster on this LAN:',
    'ollama-down': 'Ollama down:',
    'ollama-unreachable': 'Ollama down:',
    'no-leader': 'No leader:',
  });
  return known[kind] ?? `${kind.replace(/[-_]+/g, ' ')}:`;
}
