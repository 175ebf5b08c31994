// The live cluster events feed (GET /api/events over fetch): newest first, a short
// bounded list, each event summarised in a line.
import { h } from '../dom.js';
import { excerpt, shortId } from '../format.js';

/** @typedef {import('../sse.js').SseMessage} SseMessage */

/** Events kept on screen; older ones fall off the end. */
export const feedEventsMax = 50;

export class EventFeed {
  /** @param {HTMLOListElement} list @param {HTMLElement} stateLabel */
  constructor(list, stateLabel) {
    this.list = list;
    this.stateLabel = stateLabel;
    this.received = 0;
    /** @type {Map<string, string>} node id to name, so events name nodes as people know them */
    this.nodeNames = new Map();
  }

  /** @param {string} text */
  setState(text) {
    this.stateLabel.textContent = text;
  }

  /** @param {SseMessage} message @param {number} nowMs */
  add(message, nowMs) {
    /** @type {any} */
    let data = null;
    try {
      data = JSON.parse(message.data);
    } catch {
      data = null;
    }
    if (this.received === 0) this.list.replaceChildren();
    this.received += 1;
    const kind = message.event !== 'message' ? message.event : (data && typeof data.type === 'string' ? data.type : 'event');
    const atMs = data && typeof data.at === 'number' ? data.at : (data && typeof data.at === 'string' ? Date.parse(data.at) : nowMs);
    const at = new Date(Number.isFinite(atMs) ? atMs : nowMs);
    const item = h('li', null,
      h('time', { datetime: at.toISOString() }, at.toLocaleTimeString()),
      h('span', { class: 'kind' }, kind.replace(/[._-]+/g, ' ')),
      h('span', { class: 'text' }, describeEvent(data, message.data, this.nodeNames)));
    this.list.prepend(item);
    while (this.list.children.length > feedEventsMax) this.list.lastElementChild?.remove();
  }
}

/**
 * A line for an event. The cluster event payloads carry a message for people when the
 * daemon has one; otherwise the well-known fields are listed.
 * @param {any} data
 * @param {string} raw
 * @param {Map<string, string>} [nodeNames]
 */
export function describeEvent(data, raw, nodeNames = new Map()) {
  /** @param {string} id */
  const nodeName = (id) => nodeNames.get(id) ?? shortId(id);
  if (data === null || typeof data !== 'object') return excerpt(raw, 200);
  if (typeof data.message === 'string' && data.message !== '') return excerpt(data.message, 300);
  if (typeof data.error?.message === 'string') return excerpt(data.error.message, 300);
  // task.status events carry the task's status event inside.
  if (data.event && typeof data.event === 'object' && typeof data.event.taskId === 'string') return describeEvent(data.event, raw, nodeNames);
  /** @type {string[]} */
  const parts = [];
  if (typeof data.taskId === 'string') parts.push(`task ${data.taskId}`);
  const name = data.nodeName ?? data.name ?? null;
  if (typeof name === 'string') parts.push(`node ${name}`);
  else if (typeof data.nodeId === 'string') parts.push(`node ${nodeName(data.nodeId)}`);
  else if (typeof data.node === 'string') parts.push(`node ${nodeName(data.node)}`);
  if (typeof data.leaderId === 'string') parts.push(`leader ${nodeName(data.leaderId)}`);
  // leader.changed with leaderId null: the old leader is gone and no new one is known yet.
  else if (data.leaderId === null) parts.push('no leader known');
  if (typeof data.term === 'number') parts.push(`term ${data.term}`);
  if (typeof data.from === 'string' && typeof data.to === 'string') parts.push(`${data.from} → ${data.to}`);
  else if (typeof data.status === 'string') parts.push(data.status);
  else if (typeof data.state === 'string') parts.push(data.state);
  if (typeof data.reason === 'string' && data.reason !== '') parts.push(`(${excerpt(data.reason, 160)})`);
  return parts.length > 0 ? parts.join(' · ') : excerpt(raw, 200);
}
