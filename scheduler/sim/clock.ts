// Per-node clocks that run at slightly different rates. Each node ticks its core every
// `tickPeriodUs` of simulated real time; the periods differ between nodes by at most the
// drift bound the core is configured with (`driftTicks` per `electionTicks`).
import type { Prng } from './prng.ts';

export interface DriftBound {
  electionTicks: number;
  driftTicks: number;
}

/**
 * The largest ratio between two nodes' tick periods that honours the bound: while the
 * fastest clock counts E ticks the slowest counts at least E - D, and while the slowest
 * counts E the fastest counts at most E + D. The second condition is the tighter one:
 * ratio <= (E + D) / E.
 */
export function periodRatioMax(bound: DriftBound): number {
  const { electionTicks, driftTicks } = bound;
  if (driftTicks < 0 || driftTicks >= electionTicks) {
    throw new RangeError(`driftTicks must be in [0, electionTicks), got ${driftTicks} of ${electionTicks}`);
  }
  return Math.min((electionTicks + driftTicks) / electionTicks, electionTicks / (electionTicks - driftTicks));
}

/**
 * Draws one tick period per node in [baseTickUs, baseTickUs * periodRatioMax]. Clocks at the
 * two extremes are what stress leases, so a third of the nodes get an extreme.
 */
export function drawTickPeriods(random: Prng, count: number, baseTickUs: number, bound: DriftBound): number[] {
  const slowestUs = Math.floor(baseTickUs * periodRatioMax(bound));
  const periods: number[] = [];
  for (let node = 0; node < count; node++) {
    const extreme = random.int(3);
    if (extreme === 0) periods.push(random.chance(0.5) ? baseTickUs : slowestUs);
    else periods.push(random.range(baseTickUs, slowestUs));
  }
  return periods;
}

/** Checks a set of periods against the bound; returns a description of the breach or null. */
export function describeDriftBreach(periodsUs: readonly number[], bound: DriftBound): string | null {
  const fastest = Math.min(...periodsUs);
  const slowest = Math.max(...periodsUs);
  const ratio = slowest / fastest;
  if (ratio > periodRatioMax(bound) + 1e-12) {
    return `tick periods ${fastest}us..${slowest}us differ by ${ratio.toFixed(4)}x, more than the ${periodRatioMax(bound).toFixed(4)}x that driftTicks=${bound.driftTicks} of electionTicks=${bound.electionTicks} allows`;
  }
  return null;
}
