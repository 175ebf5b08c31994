// The nodes view: one card per member with its state, role, hardware, Ollama, models,
// load, agents and when it was last heard from. A suspect or dead node's facts are its last
// heartbeat's: the card says so, mutes them and words live states in the past ("was reachable").
import { bar, h, replaceKeepingFocus } from '../dom.js';
import { ago, bytes, expiresIn, percent, safeHttpUrl, shortId } from '../format.js';
import { stateSymbols } from './summary.js';

/** @typedef {import('../api.js').NodeStatus} NodeStatus */

/** Cards drawn at most; a bigger cluster is summarised (clusterNodesMax is 256). */
export const nodeCardsMax = 256;
/** Models listed per node before "and N more". */
const modelsShownMax = 12;

/**
 * Cards drawn last time, per container: a card whose content did not change is kept as it
 * is (only its "last seen" texts move on), so a refresh of a big cluster costs the browser
 * almost no layout. Measured with 256 nodes: rebuilding every card took ~200 ms of layout
 * per refresh on the test machine.
 * @typedef {{ key: string, card: HTMLElement, seen: HTMLElement[] }} DrawnCard
 * @type {WeakMap<Element, Map<string, DrawnCard>>}
 */
const drawn = new WeakMap();

/**
 * @param {Element} container
 * @param {NodeStatus[]} nodes
 * @param {number} nowMs
 */
export function renderNodes(container, nodes, nowMs) {
  if (nodes.length === 0) {
    drawn.delete(container);
    replaceKeepingFocus(container, [h('p', { class: 'empty' }, 'No nodes known yet. This node has not heard from any peer, not even itself; it may still be starting.')]);
    return;
  }
  // This node first, then alive before suspect before dead, then by name.
  const order = { alive: 0, suspect: 1, dead: 2 };
  const sorted = [...nodes].sort((a, b) => Number(b.self) - Number(a.self) || order[a.state] - order[b.state] || a.name.localeCompare(b.name)).slice(0, nodeCardsMax);
  const previous = drawn.get(container) ?? new Map();
  /** @type {Map<string, DrawnCard>} */
  const next = new Map();
  /** @type {Array<[HTMLElement, HTMLElement]>} old card, new card */
  const replaced = [];
  for (const node of sorted) {
    const key = cardKey(node, nowMs);
    const old = previous.get(node.id);
    if (old !== undefined && old.key === key) {
      const seenText = lastSeenText(node);
      for (const seen of old.seen) if (seen.textContent !== seenText) seen.textContent = seenText;
      next.set(node.id, old);
      continue;
    }
    /** @type {HTMLElement[]} */
    const seen = [];
    const card = nodeCard(node, nowMs, () => {
      const element = h('span', { title: node.lastSeen }, lastSeenText(node));
      seen.push(element);
      return element;
    });
    next.set(node.id, { key, card, seen });
    if (old !== undefined) replaced.push([old.card, card]);
  }
  drawn.set(container, next);
  const sameCards = previous.size === next.size && [...previous.keys()].every((id, index) => sorted[index]?.id === id);
  if (sameCards && nodes.length <= nodeCardsMax) {
    for (const [old, card] of replaced) replaceOne(old, card);
    return;
  }
  /** @type {HTMLElement[]} */
  const cards = sorted.map((node) => /** @type {{ card: HTMLElement }} */ (next.get(node.id)).card);
  if (nodes.length > nodeCardsMax) cards.push(h('p', { class: 'empty' }, `and ${nodes.length - nodeCardsMax} more nodes (see hivemesh nodes)`));
  replaceKeepingFocus(container, cards);
}

/** What a card shows, except the "last seen" age, which changes on every refresh. @param {NodeStatus} node @param {number} nowMs */
function cardKey(node, nowMs) {
  const { lastSeen: _lastSeen, lastSeenAgoMs: _lastSeenAgoMs, startedAt: _startedAt, models, ...rest } = node;
  // Expiry counts as the text shown ("expires in 4 min"), not as the timestamp behind it.
  const loaded = models.loaded.map((model) => ({ ...model, expiresAt: expiresIn(model.expiresAt, nowMs) }));
  return JSON.stringify([rest, models.installed, models.tokensPerSecond, loaded]);
}

/** @param {NodeStatus} node */
function lastSeenText(node) {
  if (node.neverHeard === true) return 'never, since this node started';
  return node.self ? 'this node' : ago(node.lastSeenAgoMs);
}

/** Swaps one card, keeping the keyboard focus if it was inside. @param {HTMLElement} old @param {HTMLElement} card */
function replaceOne(old, card) {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && old.contains(active) ? active.dataset.focus : undefined;
  old.replaceWith(card);
  if (key === undefined) return;
  const again = card.querySelector(`[data-focus="${CSS.escape(key)}"]`);
  if (again instanceof HTMLElement) again.focus({ preventScroll: true });
}

/**
 * @param {NodeStatus} node @param {number} nowMs
 * @param {() => HTMLElement} lastSeen makes a "last seen" text that renderNodes keeps up to date
 */
function nodeCard(node, nowMs, lastSeen) {
  if (node.neverHeard === true) return unheardCard(node, lastSeen);
  const link = safeHttpUrl(node.apiUrl);
  const hardware = node.hardware;
  const memory = hardware.memory;
  // This node is never suspect or dead to itself; any other node's facts are as old as its last heartbeat.
  const stale = !node.self && node.state !== 'alive';
  const was = stale ? 'was ' : '';
  return h('article', { class: `card card-${node.state}`, 'aria-label': `node ${node.name}, ${node.state}`, 'data-node-id': node.id },
    h('div', { class: 'card-head' },
      h('h3', { title: node.id }, node.name),
      h('span', { class: `badge state-${node.state}` }, `${stateSymbols[node.state]} ${node.state}`),
      h('span', { class: 'tag', title: 'Raft role' }, node.raftRole),
      node.self ? h('span', { class: 'tag' }, 'this node') : null,
    ),
    stale ? h('p', { class: 'stale-note' },
      'Last known facts, from ', lastSeen(), node.state === 'dead' ? ': the node is down, so they may no longer hold. ' : ': it missed its last heartbeats. ',
      quorumNote(node.raftRole)) : null,
    h('dl', stale ? { class: 'stale-facts' } : null,
      h('dt', null, 'Dashboard'),
      h('dd', null, link === null ? h('span', null, node.apiUrl || '–') : h('a', { href: link, 'data-focus': `node-link-${node.id}`, rel: 'noopener' }, node.apiUrl)),
      h('dt', null, 'Id'), h('dd', { class: 'mono', title: node.id }, shortId(node.id)),
      h('dt', null, 'CPU'), h('dd', null, `${hardware.cpu.model || 'unknown'}, ${hardware.cpu.cores} cores, load ${was}${percent(hardware.cpu.load)}`),
      h('dt', null, 'Memory'), h('dd', null, bar(memory.usedBytes, memory.totalBytes, 'RAM', `${bytes(memory.usedBytes)} / ${bytes(memory.totalBytes)}`)),
      h('dt', null, 'GPUs'), h('dd', null, gpuList(node)),
      h('dt', null, 'Ollama'), h('dd', null, ollamaState(node, stale)),
      h('dt', null, 'Loaded'), h('dd', null, loadedModels(node, nowMs)),
      h('dt', null, 'Installed'), h('dd', null, installedModels(node)),
      h('dt', null, 'Load'), h('dd', null,
        `${was}${node.load.running} / ${node.load.concurrencyLimit} running`, node.load.queued > 0 ? `, ${node.load.queued} queued` : ', none queued'),
      h('dt', null, 'Agents'), h('dd', null, agentList(node)),
      h('dt', null, 'Last seen'), h('dd', null, lastSeen()),
      h('dt', null, 'Version'), h('dd', null, `${node.softwareVersion} (protocol ${node.protocolVersion})`),
    ),
  );
}

/**
 * A node the Raft configuration names that this node has never heard from (it died before
 * this node started): only its id, role and the name it recorded in the replicated state
 * (its id when it recorded none) are known, so the card says that instead of showing empty
 * hardware as facts.
 * @param {NodeStatus} node @param {() => HTMLElement} lastSeen
 */
function unheardCard(node, lastSeen) {
  return h('article', { class: `card card-${node.state}`, 'aria-label': `node ${node.name}, ${node.state}, never heard`, 'data-node-id': node.id },
    h('div', { class: 'card-head' },
      h('h3', { title: node.id }, node.name === node.id ? shortId(node.id) : node.name),
      h('span', { class: `badge state-${node.state}` }, `${stateSymbols[node.state]} ${node.state}`),
      h('span', { class: 'tag', title: 'Raft role' }, node.raftRole),
    ),
    h('p', { class: 'unheard' },
      'Not heard from since this node started; the Raft configuration still names it. ', quorumNote(node.raftRole),
      ' Its hardware and models are unknown until it comes back.'),
    h('dl', null,
      h('dt', null, 'Id'), h('dd', { class: 'mono', title: node.id }, shortId(node.id)),
      h('dt', null, 'Last seen'), h('dd', null, lastSeen()),
    ),
  );
}

/**
 * What a silent node means for the quorum: a voter still counts toward it (one fewer vote
 * a majority can come from) until it returns or the leader replaces it; a learner does not.
 * @param {NodeStatus['raftRole']} raftRole
 */
function quorumNote(raftRole) {
  if (raftRole === 'learner') return 'As a learner it has no vote, so the quorum does not depend on it.';
  return 'As a voter it still counts toward the quorum until it comes back or the leader replaces it with a learner.';
}

/** @param {NodeStatus} node */
function gpuList(node) {
  if (node.hardware.gpus.length === 0) return h('span', { class: 'empty' }, 'none (CPU only)');
  return node.hardware.gpus.map((gpu, index) => h('div', { class: 'gpu' },
    h('div', { class: 'gpu-name' }, `${index}: ${gpu.vendor ? `${gpu.vendor} ` : ''}${gpu.model}${gpu.utilization === null ? '' : `, ${percent(gpu.utilization)} busy`}`),
    bar(gpu.vramUsedBytes, gpu.vramTotalBytes, 'VRAM',
      gpu.vramTotalBytes === null ? 'VRAM unknown' : `${bytes(gpu.vramUsedBytes)} / ${bytes(gpu.vramTotalBytes)}`)));
}

/** @param {NodeStatus} node @param {boolean} stale the node is silent: its Ollama state is from its last heartbeat */
function ollamaState(node, stale) {
  if (!node.ollama.reachable) {
    return h('span', null, h('span', { class: stale ? 'badge was' : 'badge bad' }, stale ? 'was unreachable' : '✕ unreachable'), ' ', node.ollama.error ?? '', ` (${node.ollama.url})`);
  }
  return h('span', null, h('span', { class: stale ? 'badge was' : 'badge ok' }, stale ? 'was reachable' : '✓ reachable'), ` version ${node.ollama.version ?? 'unknown'}`);
}

/** @param {NodeStatus} node @param {number} nowMs */
function loadedModels(node, nowMs) {
  const loaded = node.models.loaded;
  if (loaded.length === 0) return h('span', { class: 'empty' }, 'none in memory');
  return loaded.slice(0, modelsShownMax).map((model) => {
    const speed = node.models.tokensPerSecond[model.name];
    return h('span', { class: 'model-line' }, h('span', { class: 'mono' }, model.name),
      h('span', { class: 'sub' }, ` ${bytes(model.vramBytes)} VRAM, ${expiresIn(model.expiresAt, nowMs)}${speed === undefined ? '' : `, ${speed.toFixed(1)} tok/s`}`));
  }).concat(loaded.length > modelsShownMax ? [h('span', { class: 'sub' }, `and ${loaded.length - modelsShownMax} more`)] : []);
}

/** @param {NodeStatus} node */
function installedModels(node) {
  const installed = node.models.installed;
  if (installed.length === 0) return h('span', { class: 'empty' }, node.ollama.reachable ? 'no models pulled' : 'unknown while Ollama is down');
  return h('div', { class: 'chips' },
    installed.slice(0, modelsShownMax).map((model) => h('span', { class: 'tag', title: [model.parameterSize, model.quantization].filter(Boolean).join(' ') }, `${model.name} · ${bytes(model.sizeBytes)}`)),
    installed.length > modelsShownMax ? h('span', { class: 'tag' }, `+${installed.length - modelsShownMax} more`) : null);
}

/** @param {NodeStatus} node */
function agentList(node) {
  if (node.agents.length === 0) return h('span', { class: 'empty' }, 'none');
  return node.agents.slice(0, modelsShownMax).map((agent) => h('span', { class: 'model-line' },
    h('span', { class: 'mono' }, agent.id), h('span', { class: 'sub' }, ` on ${agent.model}: `),
    agent.capabilities.length === 0 ? 'no capabilities' : agent.capabilities.map((capability) => `${capability.name} (${percent(capability.proficiency)})`).join(', ')));
}
