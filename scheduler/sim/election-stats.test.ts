// The clean-election figure of the simulator's summary: elections begun and decided in a
// quiet network (no partition, no voter down, no message lost, duplicated or garbled, no
// crash or pause while they ran) must almost all be decided by their first campaign's term
// (the goal: 99 %), and must be a real share of all elections, not a handful.
import { describe, expect, it } from 'vitest';
import { raftCore } from './core.ts';
import { runSeed } from './sim.ts';
import { addToTotals, emptyTotals } from './summary.ts';

describe('elections in a quiet network', () => {
  for (const voters of [3, 5]) {
    it(`are decided in one round at least 99% of the time (${voters} voters, 150 seeds)`, () => {
      const totals = emptyTotals();
      for (let seed = 20_001; seed <= 20_150; seed++) addToTotals(totals, runSeed({ seed, voters, steps: 2_000, core: raftCore }));
      expect(totals.failed).toBe(0);
      expect(totals.electionsQuiet).toBeGreaterThan(100);
      expect(totals.electionsQuiet).toBeLessThan(totals.elections);
      expect(totals.electionsQuietInOneRound).toBeLessThanOrEqual(totals.electionsQuiet);
      expect(totals.electionsQuietInOneRound / totals.electionsQuiet).toBeGreaterThanOrEqual(0.99);
    }, 120_000);
  }
});
