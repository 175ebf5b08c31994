// Plain-text tables, human units and node names for the CLI's human output.
export function table(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cells = rows.map((row) => row.map((cell) => (cell === null || cell === undefined ? '-' : String(cell))));
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map((row) => (row[column] ?? '').length)));
  const line = (row: string[]) => row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

export function bytes(value: number | null | undefined): string {
  if (value === null || value === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size >= 10 || unit === 0 ? size.toFixed(0) : size.toFixed(1)} ${units[unit]}`;
}

export function ago(ms: number): string {
  if (ms < 1_000) return `${ms}ms ago`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)}s ago`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m ago`;
  return `${Math.floor(ms / 3_600_000)}h ago`;
}

export function shortId(id: string | null | undefined): string {
  if (id === null || id === undefined) return '-';
  return id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}

/** A node as the CLI knows it from GET /api/status/agents: enough to name it. */
export interface NamedNode {
  id: string;
  name: string;
}

/** Names a node id for people (see nodeNamer); '-' for none. */
export type NodeNamer = (id: string | null | undefined) => string;

/**
 * How the human output names a node: by its name, as the dashboard does; with its short id
 * as well where two listed nodes share the name (a host restarted with a fresh data dir
 * leaves its old id listed under the same name), and by short id alone for a node whose
 * name is not known (not listed, never heard from, or no node list at all).
 */
export function nodeNamer(nodes: readonly NamedNode[] | null): NodeNamer {
  const byId = new Map((nodes ?? []).map((node) => [node.id, node]));
  const nodesNamed = new Map<string, number>();
  for (const node of byId.values()) nodesNamed.set(node.name, (nodesNamed.get(node.name) ?? 0) + 1);
  return (id) => {
    if (id === null || id === undefined) return '-';
    const node = byId.get(id);
    if (node === undefined || node.name === '' || node.name === node.id) return shortId(id);
    return (nodesNamed.get(node.name) ?? 0) > 1 ? `${node.name} (${shortId(id)})` : node.name;
  };
}

/** A libp2p Ed25519 peer id: `12D3KooW` and about 44 more base58 characters. */
const peerIdPattern = '12D3KooW[1-9A-HJ-NP-Za-km-z]{30,}';
/** `name (peer id)`, as the daemon's texts name a node, or a bare peer id. */
const labelledPeerId = new RegExp(`(?:([^\\s()]+) \\()?(${peerIdPattern})(\\))?`, 'g');

/**
 * A daemon text (a waiting reason, an error) with each peer id in it given as `nameOf`
 * names the node. The daemon writes a node as `name (id)`; that becomes the name alone,
 * so no name is said twice.
 */
export function withNodeNames(text: string, nameOf: (id: string) => string): string {
  return text.replace(labelledPeerId, (_whole: string, label: string | undefined, id: string, close: string | undefined) => {
    const named = nameOf(id);
    if (label === undefined) return `${named}${close ?? ''}`;
    // `st1 (12D3…)` where st1 is the node's name: the name alone (with the short id if shared).
    if (close !== undefined && (named === label || named.startsWith(`${label} (`))) return named;
    return `${label} (${named}${close ?? ''}`;
  });
}

/** `text` in at most `width` characters, ending in … when cut. */
export function cut(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}
