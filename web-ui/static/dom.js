// Builds DOM nodes without innerHTML: every piece of text from the API goes in as a Text
// node, so a node name or task output like "<img onerror=...>" is shown, never run.

/**
 * @typedef {string | number | Node | null | undefined | false} Child
 * @typedef {Record<string, string | number | boolean | null | undefined | ((event: Event) => void)>} Attributes
 */

/**
 * h('div', { class: 'card', onclick: fn }, 'text', child, [more, children])
 * Attributes named on* become listeners; `true` sets a boolean attribute, false/null/undefined skip it.
 * @param {string} tag
 * @param {Attributes | null} [attributes]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === 'function') element.addEventListener(name.slice(2), /** @type {EventListener} */ (value));
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

/**
 * @param {Node} parent
 * @param {Array<Child | Child[]>} children
 */
function append(parent, children) {
  for (const child of children) {
    if (Array.isArray(child)) append(parent, child);
    else if (child === null || child === undefined || child === false) continue;
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/**
 * Replaces a container's children and keeps keyboard focus where it was: the page redraws
 * every 2 s, and a keyboard user must not be thrown back to the top each time. Focusable
 * elements that should keep focus carry a data-focus attribute unique on the page.
 * @param {Element} container
 * @param {Array<Child | Child[]>} children
 */
export function replaceKeepingFocus(container, children) {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && container.contains(active) ? active.dataset.focus : undefined;
  const fragment = document.createDocumentFragment();
  append(fragment, children);
  container.replaceChildren(fragment);
  if (key !== undefined) {
    const again = container.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (again instanceof HTMLElement) again.focus({ preventScroll: true });
  }
}

/**
 * A horizontal bar for used/total with the numbers as text beside it (the bar alone
 * would say nothing to a screen reader or in a text copy).
 * @param {number | null} used
 * @param {number | null} total
 * @param {string} label what the bar measures, e.g. "VRAM"
 * @param {string} text the numbers, e.g. "3.1 GiB / 8 GiB"
 */
export function bar(used, total, label, text) {
  const known = used !== null && total !== null && total > 0;
  const ratio = known ? Math.min(1, Math.max(0, /** @type {number} */ (used) / /** @type {number} */ (total))) : 0;
  const level = ratio >= 0.9 ? 'high' : ratio >= 0.7 ? 'mid' : 'low';
  const fill = h('span', { class: 'bar-fill' });
  // Set through the CSSOM, not a style attribute, so a Content-Security-Policy without 'unsafe-inline' allows it.
  fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  const meter = h('div', {
    class: `bar bar-${known ? level : 'unknown'}`,
    role: 'meter',
    'aria-label': label,
    'aria-valuemin': 0,
    'aria-valuemax': 100,
    'aria-valuenow': known ? Math.round(ratio * 100) : null,
    'aria-valuetext': text,
  }, fill);
  return h('div', { class: 'bar-row' }, h('span', { class: 'bar-label' }, label), meter, h('span', { class: 'bar-text' }, text));
}
