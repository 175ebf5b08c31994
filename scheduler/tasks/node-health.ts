// Which nodes keep failing generations (their Ollama answers errors while its model list
// looks fine, a GPU fault, a full disk): placement avoids them while another node can run
// the work, so new tasks do not each lose an attempt there. Pure: fed with the outcomes of
// attempts as they are applied (every node keeps one, so a new leader has it at once).
import { clusterNodesMax } from '../../protocol/limits.ts';

/** Failed attempts in a row after which a node is avoided. */
export const nodeFailuresAvoidedAfter = 3;
/** For how long after its last failure; then it is tried again (one success clears it). */
export const nodeAvoidMs = 60_000;

export class NodeHealth {
  private readonly failures = new Map<string, { inARow: number; lastAt: number }>();

  /** An attempt on `node` completed (ok) or failed (its generation, not the node's death). */
  record(node: string, ok: boolean, atMs: number): void {
    if (ok) {
      this.failures.delete(node);
      return;
    }
    const entry = this.failures.get(node);
    if (entry !== undefined) {
      entry.inARow += 1;
      entry.lastAt = atMs;
    } else if (this.failures.size < clusterNodesMax) {
      this.failures.set(node, { inARow: 1, lastAt: atMs });
    }
  }

  /** Nodes to avoid now: nodeFailuresAvoidedAfter failures in a row, the last within nodeAvoidMs. */
  avoided(nowMs: number): Set<string> {
    const nodes = new Set<string>();
    for (const [node, entry] of this.failures) {
      if (entry.inARow >= nodeFailuresAvoidedAfter && nowMs - entry.lastAt < nodeAvoidMs) nodes.add(node);
    }
    return nodes;
  }
}
