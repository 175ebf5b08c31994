// The simulator against the real consensus core: thousands of seeds must pass every
// invariant; a seed must replay to the identical trace; and deliberately broken cores (and
// clocks beyond the drift bound) must be caught, so that passing means something.
import { describe, expect, it } from 'vitest';
import { raftCore, type CoreFactory, type SimCore } from './core.ts';
import { faultyCores } from './faulty-cores.ts';
import { runSeed, type SeedResult } from './sim.ts';
import { addToTotals, emptyTotals, type Totals } from './summary.ts';

const stepsPerSeed = 2_500;

function runRange(from: number, count: number, voters: number, core: CoreFactory = raftCore, steps = stepsPerSeed, alsoInto?: Totals): { totals: Totals; failures: SeedResult[] } {
  const totals = emptyTotals();
  const failures: SeedResult[] = [];
  for (let seed = from; seed < from + count; seed++) {
    const result = runSeed({ seed, voters, steps, core });
    addToTotals(totals, result);
    if (alsoInto !== undefined) addToTotals(alsoInto, result);
    if (!result.ok) failures.push(result);
  }
  return { totals, failures };
}

function describeFailures(failures: SeedResult[], voters: number, steps = stepsPerSeed): string[] {
  return failures.map((failure) => `seed ${failure.seed}: ${failure.failure?.message.split('\n')[0]} -- replay: npm run sim -- --seed ${failure.seed} --nodes ${voters} --steps ${steps}`);
}

describe('simulation of the real core', () => {
  const overall = emptyTotals();
  // 2,100 seeds in all, in slices so that a failure names its slice and no case runs long.
  const slices: { from: number; count: number; voters: number }[] = [
    { from: 1, count: 500, voters: 3 },
    { from: 501, count: 500, voters: 3 },
    { from: 1_001, count: 500, voters: 3 },
    { from: 10_001, count: 300, voters: 5 },
    { from: 10_301, count: 300, voters: 5 },
  ];
  for (const slice of slices) {
    it(`passes seeds ${slice.from}..${slice.from + slice.count - 1} with ${slice.voters} voters`, () => {
      const { failures } = runRange(slice.from, slice.count, slice.voters, raftCore, stepsPerSeed, overall);
      expect(describeFailures(failures, slice.voters)).toEqual([]);
    }, 120_000);
  }

  it('passes 20 long seeds (30,000 steps each) with deep logs and many snapshots', () => {
    const { totals, failures } = runRange(50_001, 20, 3, raftCore, 30_000);
    expect(describeFailures(failures, 3, 30_000)).toEqual([]);
    expect(totals.entriesCommitted).toBeGreaterThan(20 * 500);
  }, 120_000);

  it('exercised what it claims: elections, commits, both kinds of reads, faults, reconfiguration, snapshots', () => {
    expect(overall.seeds).toBeGreaterThanOrEqual(2_000);
    expect(overall.elections).toBeGreaterThan(overall.seeds);
    expect(overall.electionsInOneRound / overall.elections).toBeGreaterThan(0.5);
    expect(overall.entriesCommitted).toBeGreaterThan(50 * overall.seeds);
    expect(overall.readsServed - overall.leaseReadsServed).toBeGreaterThan(10 * overall.seeds);
    expect(overall.leaseReadsServed).toBeGreaterThan(10 * overall.seeds);
    expect(overall.crashes).toBeGreaterThan(overall.seeds);
    expect(overall.pauses).toBeGreaterThan(overall.seeds / 2);
    expect(overall.partitions).toBeGreaterThan(overall.seeds);
    expect(overall.messagesDropped).toBeGreaterThan(0);
    expect(overall.messagesDuplicated).toBeGreaterThan(0);
    expect(overall.messagesGarbled).toBeGreaterThan(0);
    expect(overall.configChanges).toBeGreaterThan(0);
    expect(overall.transfers).toBeGreaterThan(0);
    expect(overall.snapshotsInstalled).toBeGreaterThan(0);
    expect(overall.stableUs).toBeGreaterThan(overall.seeds * 100_000);
  });
});

describe('replay', () => {
  it('replays a seed to an identical trace, and another seed to a different one', () => {
    const linesA: string[] = [];
    const linesB: string[] = [];
    const first = runSeed({ seed: 4242, voters: 5, steps: 3_000, core: raftCore, onTrace: (line) => linesA.push(line) });
    const again = runSeed({ seed: 4242, voters: 5, steps: 3_000, core: raftCore, onTrace: (line) => linesB.push(line) });
    const other = runSeed({ seed: 4243, voters: 5, steps: 3_000, core: raftCore });
    expect(first.ok).toBe(true);
    expect(again.traceHash).toBe(first.traceHash);
    expect(again.stats).toEqual(first.stats);
    expect(linesB).toEqual(linesA);
    expect(linesA.length).toBeGreaterThan(1_000);
    expect(other.traceHash).not.toBe(first.traceHash);
  }, 30_000);
});

describe('the checker catches broken cores', () => {
  const cases: { core: string; invariants: string[]; seeds: number }[] = [
    // A vote granted twice in one term: two leaders of that term.
    { core: 'double-vote', invariants: ['election safety'], seeds: 400 },
    // A vote that is not durable: caught when the grant leaves before the disk has it.
    { core: 'forgetful-vote', invariants: ['persist before send'], seeds: 20 },
    { core: 'ack-without-storing', invariants: ['persist before send', 'storage contract'], seeds: 20 },
    { core: 'stale-lease-read', invariants: ['linearizable reads'], seeds: 300 },
    { core: 'endless-lease', invariants: ['lease exclusivity'], seeds: 300 },
    // Without PreVote and CheckQuorum, a server back from a partition deposes the leader.
    { core: 'no-prevote', invariants: ['leader stability'], seeds: 300 },
  ];
  for (const testCase of cases) {
    it(`catches ${testCase.core} (${faultyCores[testCase.core]?.describe})`, () => {
      const factory = (faultyCores[testCase.core] as { factory: CoreFactory }).factory;
      const { failures } = runRange(1, testCase.seeds, 3, factory);
      const caught = failures.filter((failure) => testCase.invariants.includes(failure.failure?.invariant ?? ''));
      expect(caught.length, `failures seen: ${failures.map((failure) => failure.failure?.invariant).join(', ')}`).toBeGreaterThan(0);
    }, 60_000);
  }

  it('catches a core that commits entries of earlier terms by counting replicas (Figure 8)', () => {
    const factory = (faultyCores['old-term-commit'] as { factory: CoreFactory }).factory;
    let caught: SeedResult | null = null;
    for (let seed = 1; seed <= 1_000 && caught === null; seed++) {
      const result = runSeed({ seed, voters: 5, steps: 3_000, core: factory });
      if (!result.ok && ['linearizable reads', 'leader completeness', 'committed entries are never lost', 'committed entries never change'].includes(result.failure?.invariant ?? '')) caught = result;
    }
    expect(caught, 'no seed caught the Figure 8 commit rule').not.toBeNull();
  }, 120_000);

  it('catches overlapping leases when clocks drift beyond the stated bound', () => {
    // n1 ticks 2.5x slower than the rest, far beyond driftTicks: its lease outlives the
    // followers' election timeouts.
    let caught = 0;
    for (let seed = 1; seed <= 400 && caught === 0; seed++) {
      const result = runSeed({ seed, voters: 3, steps: stepsPerSeed, core: raftCore, scenario: { tickPeriodsUs: [25_000, 10_000, 10_000, 10_000, 10_000] } });
      if (!result.ok && ['lease exclusivity', 'linearizable reads'].includes(result.failure?.invariant ?? '')) caught++;
    }
    expect(caught).toBeGreaterThan(0);
  }, 60_000);

  it('catches overlapping leases when a driver skips the ticks a paused process missed', () => {
    // A stalled event loop (GC pause, suspended VM) must be followed by the missed ticks;
    // a driver that skips them runs the leader's clock slow and its lease long.
    let caught = 0;
    for (let seed = 1; seed <= 400 && caught === 0; seed++) {
      const result = runSeed({ seed, voters: 3, steps: stepsPerSeed, core: raftCore, scenario: { pauseTickCatchUp: false } });
      if (!result.ok && ['lease exclusivity', 'linearizable reads'].includes(result.failure?.invariant ?? '')) caught++;
    }
    expect(caught).toBeGreaterThan(0);
  }, 60_000);

  it('reports a liveness failure for a core that never elects a leader', () => {
    const mute: CoreFactory = (options, restore) => {
      const inner: SimCore = raftCore(options, restore);
      return Object.assign(Object.create(inner) as SimCore, { tick: () => undefined });
    };
    const result = runSeed({ seed: 7, voters: 3, steps: 500, core: mute });
    expect(result.failure?.invariant).toBe('liveness');
    expect(result.failure?.message).toMatch(/no write was committed/);
    expect(result.trace.length).toBeGreaterThan(10);
  }, 30_000);
});
