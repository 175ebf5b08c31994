// Throughput of the core alone: three nodes in memory, a leader fed proposals in batches
// of `batch`, every message delivered at once. The daemon needs >= 5,000 committed entries/s
// on three nodes including disk and network, so the core must be far faster than that.
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { Raft } from './raft.ts';
import { defaultOptions } from './script.ts';
import type { Message, NodeId } from './types.ts';

function measure(entries: number, batch: number, dataBytes: number): { entriesPerSecond: number; messages: number } {
  const voters = ['1', '2', '3'];
  const nodes = new Map<NodeId, Raft>(voters.map((id) => [id, new Raft(
    { ...defaultOptions(id), maxEntriesPerAppend: 512, maxBytesPerAppend: 4 * 1024 * 1024, maxInflightAppends: 64 },
    { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [], initialConfig: { voters, learners: [] } },
  )]));
  const leader = nodes.get('1') as Raft;
  leader.campaign();
  let network: Message[] = [];
  let applied = 0;
  let messages = 0;
  const pump = (): void => {
    for (const node of nodes.values()) {
      while (node.hasReady()) {
        const ready = node.ready();
        network.push(...ready.messages);
        if (node === leader) applied += ready.committed.length;
        node.advance(ready);
      }
    }
    const inFlight = network;
    network = [];
    messages += inFlight.length;
    for (const message of inFlight) (nodes.get(message.to) as Raft).step(message);
  };
  for (let round = 0; round < 20 && leader.status().commit < 1; round += 1) pump();
  const payload = 'x'.repeat(dataBytes);
  const start = performance.now();
  const target = applied + entries;
  let proposed = 0;
  while (applied < target) {
    for (let k = 0; k < batch && proposed < entries; k += 1, proposed += 1) {
      const result = leader.propose(payload);
      if (!result.ok) throw new Error(`proposal refused: ${result.message}`);
    }
    pump();
  }
  const seconds = (performance.now() - start) / 1000;
  return { entriesPerSecond: entries / seconds, messages };
}

describe('core throughput', () => {
  it('commits far more than 5,000 entries/s on three nodes', () => {
    measure(5_000, 64, 200); // warm-up
    const small = measure(50_000, 64, 200);
    const single = measure(10_000, 1, 200);
    console.log(`core throughput: ${Math.round(small.entriesPerSecond)} entries/s in batches of 64 (${small.messages} messages), ${Math.round(single.entriesPerSecond)} entries/s one at a time`);
    // A conservative floor for a shared two-core machine; measured values are far higher.
    expect(small.entriesPerSecond).toBeGreaterThan(20_000);
    expect(single.entriesPerSecond).toBeGreaterThan(5_000);
  }, 60_000);
});
