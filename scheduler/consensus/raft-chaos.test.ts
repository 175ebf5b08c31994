// Randomized runs of the Raft core under message loss, duplication and reordering,
// partitions, crashes with restarts, compaction, membership changes and leadership
// transfers, checking Raft's safety properties after every step: one leader per term,
// committed entries never change, leader completeness, linearizable reads (lease reads
// included, with clock rates differing within the stated drift), log matching; and that a healed cluster
// makes progress. A failing seed replays exactly: CHAOS_SEED=n npx vitest run raft-chaos.
import { describe, expect, it } from 'vitest';
import { Harness } from './script.ts';
import type { ConfigChange, Entry, Message, NodeId } from './types.ts';

/** mulberry32: a small seeded PRNG, enough for test schedules. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface RunOptions {
  steps: number;
  preVote: boolean;
  checkQuorum: boolean;
}

const ids: NodeId[] = ['1', '2', '3', '4', '5'];

function runChaos(seed: number, options: RunOptions): { commits: number; leaders: number } {
  const random = prng(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)] as T;
  const harness = new Harness();
  harness.quiet = true;
  const electionRandom = prng(seed ^ 0x9e3779b9);
  for (const id of ids) {
    // 1..3 bootstrap the cluster; 4 and 5 join later with an empty config.
    const config = Number(id) <= 3 ? { voters: ['1', '2', '3'], learners: [] } : { voters: [], learners: [] };
    harness.addNode(id, config, {
      preVote: options.preVote, checkQuorum: options.checkQuorum, heartbeatTicks: 2, maxEntriesPerAppend: 4, maxInflightAppends: 3,
      randomInt: (n) => Math.floor(electionRandom() * n),
    });
  }

  const committed = new Map<number, string>(); // index -> "term:type:data"
  const leaderOfTerm = new Map<number, NodeId>();
  const pendingReads = new Map<string, number>(); // context -> max commit anywhere when asked
  let commits = 0;
  let readCounter = 0;
  let proposalCounter = 0;
  const fail = (message: string): never => {
    throw new Error(`seed ${seed}: ${message}`);
  };
  const describe = (entry: Entry): string => `${entry.term}:${entry.type}:${entry.data}`;
  const maxCommit = (): number => Math.max(...[...harness.nodes.values()].map((node) => node.raft.status().commit));

  harness.observer = {
    softState(id, soft, term) {
      if (soft.role !== 'leader') return;
      const previous = leaderOfTerm.get(term);
      if (previous !== undefined && previous !== id) fail(`two leaders in term ${term}: ${previous} and ${id}`);
      leaderOfTerm.set(term, id);
      // Leader completeness: every committed entry is in the new leader's log.
      const storage = harness.node(id).storage;
      const snapshotIndex = storage.snapshot?.index ?? 0;
      for (const [index, value] of committed) {
        if (index <= snapshotIndex) continue;
        const entry = storage.entries.find((candidate) => candidate.index === index);
        if (entry === undefined || describe(entry) !== value) fail(`leader ${id} of term ${term} lacks committed entry ${index} (${value})`);
      }
    },
    applied(id, entries) {
      for (const entry of entries) {
        const value = describe(entry);
        const known = committed.get(entry.index);
        if (known === undefined) {
          committed.set(entry.index, value);
          commits += 1;
        } else if (known !== value) {
          fail(`node ${id} applied ${entry.index} as ${value}, but it was committed as ${known}`);
        }
      }
    },
    readStates(_id, reads) {
      for (const read of reads) {
        const floor = pendingReads.get(read.context);
        if (floor === undefined) fail(`read state for unknown context ${read.context}`);
        // Linearizability: a read reflects every write committed before it was asked.
        if (read.index < (floor as number)) fail(`read ${read.context} served at ${read.index}, but ${floor} was committed before it was asked`);
        pendingReads.delete(read.context);
      }
    },
  };

  // Leaders, newest term first: without CheckQuorum a deposed leader cut off from the rest
  // may believe it leads for ever, and proposals must go to the current one.
  const leaders = (): NodeId[] => ids
    .filter((id) => harness.node(id).raft.status().role === 'leader')
    .sort((a, b) => harness.node(b).raft.status().term - harness.node(a).raft.status().term);
  const down = new Set<NodeId>();
  // Each node's clock runs at its own rate, within the drift the lease assumes: driftTicks
  // (1) per electionTicks (10), so rates differ by under 10%. Real time advances one unit per
  // clock step; a node ticks whenever its own clock has advanced a whole tick.
  const clockRate = new Map(ids.map((id) => [id, 1 + random() * 0.09]));
  const clockPhase = new Map(ids.map((id) => [id, random()]));

  for (let step = 0; step < options.steps; step += 1) {
    const roll = random();
    if (roll < 0.2) {
      for (const id of ids) {
        const phase = (clockPhase.get(id) as number) + (clockRate.get(id) as number);
        const ticks = Math.floor(phase);
        clockPhase.set(id, phase - ticks);
        if (down.has(id)) continue; // a crashed node's clock is off; it restarts fresh
        for (let tick = 0; tick < ticks; tick += 1) harness.node(id).raft.tick();
      }
    } else if (roll < 0.45) {
      const targets = random() < 0.5 ? ids : [pick(ids)];
      for (const id of targets) if (!down.has(id)) harness.processReady(id);
    } else if (roll < 0.7) {
      // Deliver what is in flight in random order; some messages are lost, some duplicated.
      const inFlight = harness.network;
      harness.network = [];
      for (let k = inFlight.length - 1; k > 0; k -= 1) {
        const swap = Math.floor(random() * (k + 1));
        [inFlight[k], inFlight[swap]] = [inFlight[swap] as Message, inFlight[k] as Message];
      }
      const later: Message[] = [];
      for (const message of inFlight) {
        const fate = random();
        if (fate < 0.1 || down.has(message.to)) continue; // lost
        if (fate < 0.15) later.push(structuredClone(message)); // duplicated, arrives again later
        if (fate > 0.9) {
          later.push(message); // delayed
          continue;
        }
        const sentBefore = harness.network;
        harness.network = [message];
        harness.deliver();
        harness.network = sentBefore.concat(harness.network);
      }
      harness.network.push(...later);
    } else if (roll < 0.82) {
      const [leader] = leaders();
      if (leader !== undefined) {
        proposalCounter += 1;
        harness.node(leader).raft.propose(`p${proposalCounter}`);
      }
    } else if (roll < 0.85) {
      // Any node that believes it leads may be asked, the deposed ones included.
      const candidates = leaders();
      const leader = candidates.length > 0 ? pick(candidates) : undefined;
      if (leader !== undefined) {
        readCounter += 1;
        const context = `r${readCounter}`;
        const floor = maxCommit();
        const result = harness.node(leader).raft.readIndex(context, { lease: random() < 0.5 });
        if (result.ok) pendingReads.set(context, floor);
      }
    } else if (roll < 0.86) {
      const kind = random();
      if (kind < 0.4) harness.heal();
      else if (kind < 0.7) {
        // Cut one link's worth of the cluster: one node alone, the rest together.
        const alone = pick(ids);
        harness.partition([[alone], ids.filter((id) => id !== alone)]);
      } else if (kind < 0.85) {
        // Non-transitive failure: some directed links lose everything.
        harness.heal();
        for (const from of ids) for (const to of ids) if (from !== to && random() < 0.25) harness.cutLinks.add(`${from}->${to}`);
      } else {
        const side = ids.filter(() => random() < 0.5);
        harness.partition([side, ids.filter((id) => !side.includes(id))]);
      }
    } else if (roll < 0.91) {
      const id = pick(ids);
      if (down.has(id)) {
        down.delete(id);
        harness.restart(id);
      } else if (random() < 0.5) {
        down.add(id); // crashed: loses everything it did not persist
        harness.restart(id);
      }
    } else if (roll < 0.93) {
      const id = pick(ids);
      const node = harness.node(id);
      const applied = node.raft.status().applied;
      if (!down.has(id) && applied > 0 && random() < 0.5) {
        const snapshot = node.raft.compact(applied, `state@${applied}`);
        if (snapshot !== null) {
          node.storage.snapshot = snapshot;
          node.storage.entries = node.storage.entries.filter((entry) => entry.index > snapshot.index);
        }
      }
    } else if (roll < 0.97) {
      const [leader] = leaders();
      if (leader !== undefined) {
        const change: ConfigChange = { type: pick(['add-learner', 'promote', 'demote', 'remove'] as const), node: pick(ids) };
        harness.node(leader).raft.proposeConfigChange(change);
      }
    } else {
      const [leader] = leaders();
      if (leader !== undefined) harness.node(leader).raft.transferLeadership(pick(ids));
    }
    // Crashed nodes neither send nor receive.
    if (down.size > 0) harness.network = harness.network.filter((message) => !down.has(message.to) && !down.has(message.from));
    // Leases never overlap in real time, with clocks drifting within the stated bound.
    const leaseHolders = ids.filter((id) => !down.has(id) && harness.node(id).raft.leaseRemainingTicks() > 0);
    if (leaseHolders.length > 1) fail(`overlapping leases at step ${step}: ${leaseHolders.map((id) => `${id} (term ${harness.node(id).raft.status().term})`).join(', ')}`);
  }

  // Liveness: heal everything, bring crashed nodes back, and the cluster must commit again.
  harness.heal();
  for (const id of down) harness.restart(id);
  down.clear();
  const before = commits;
  let progressed = false;
  for (let round = 0; round < 400 && !progressed; round += 1) {
    for (const id of ids) harness.node(id).raft.tick();
    harness.stabilize();
    const [leader] = leaders();
    if (leader !== undefined && round % 10 === 0) harness.node(leader).raft.propose(`final${round}`);
    progressed = commits > before;
  }
  if (!progressed) {
    fail(`no progress after healing: ${ids.map((id) => JSON.stringify({ ...harness.node(id).raft.status(), progress: undefined })).join(' ')}`);
  }

  // Log matching: entries with the same index and term are identical, and so is everything before.
  for (const a of ids) {
    for (const b of ids) {
      if (a >= b) continue;
      const logA = new Map(harness.node(a).storage.entries.map((entry) => [entry.index, describe(entry)]));
      const entriesB = harness.node(b).storage.entries;
      let matchedFrom = -1;
      for (let k = entriesB.length - 1; k >= 0; k -= 1) {
        const entry = entriesB[k] as Entry;
        const other = logA.get(entry.index);
        if (other !== undefined && other.split(':')[0] === String(entry.term)) {
          matchedFrom = k;
          break;
        }
      }
      for (let k = 0; k <= matchedFrom; k += 1) {
        const entry = entriesB[k] as Entry;
        const other = logA.get(entry.index);
        if (other !== undefined && other !== describe(entry)) fail(`logs of ${a} and ${b} differ at ${entry.index} below a matching entry`);
      }
    }
  }
  return { commits, leaders: leaderOfTerm.size };
}

const seedFromEnvironment = process.env.CHAOS_SEED === undefined ? undefined : Number(process.env.CHAOS_SEED);
const seedCount = Number(process.env.CHAOS_SEEDS ?? 60);

describe('randomized runs keep Raft safe and live', () => {
  const configurations: [string, RunOptions][] = [
    ['prevote + checkquorum', { steps: 3000, preVote: true, checkQuorum: true }],
    ['plain', { steps: 3000, preVote: false, checkQuorum: false }],
  ];
  for (const [name, options] of configurations) {
    it(name, () => {
      const seeds = seedFromEnvironment !== undefined ? [seedFromEnvironment] : Array.from({ length: seedCount }, (_, index) => index + 1);
      let commits = 0;
      let leaders = 0;
      for (const seed of seeds) {
        const result = runChaos(seed, options);
        commits += result.commits;
        leaders += result.leaders;
      }
      // The runs must actually exercise the core, not idle.
      expect(commits).toBeGreaterThan(seeds.length * 5);
      expect(leaders).toBeGreaterThan(seeds.length);
    }, 120_000);
  }
});
