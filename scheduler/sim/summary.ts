// Totals over a range of seeds and the summary table the CLI prints (and the long run's
// report quotes): seeds, passed, failed, seeds/min, elections decided in one round, and
// what was exercised (commits, reads, faults).
import type { SeedResult } from './sim.ts';

export interface Totals {
  seeds: number;
  passed: number;
  failed: number;
  events: number;
  simulatedUs: number;
  elections: number;
  electionsInOneRound: number;
  electionsQuiet: number;
  electionsQuietInOneRound: number;
  entriesCommitted: number;
  writesAcknowledged: number;
  readsServed: number;
  leaseReadsServed: number;
  crashes: number;
  pauses: number;
  messagesGarbled: number;
  partitions: number;
  messagesDropped: number;
  messagesDuplicated: number;
  configChanges: number;
  transfers: number;
  compactions: number;
  snapshotsInstalled: number;
  entriesAppliedEarly: number;
  entriesAppliedWhileWriting: number;
  leaseIntervals: number;
  closestLeaseHandoverUs: number;
  recoveryUsMax: number;
  recoveryUsTotal: number;
  stableUs: number;
  failuresByInvariant: Record<string, number>;
  lastTraceHash: string;
}

export function emptyTotals(): Totals {
  return {
    seeds: 0, passed: 0, failed: 0, events: 0, simulatedUs: 0, elections: 0, electionsInOneRound: 0, electionsQuiet: 0, electionsQuietInOneRound: 0,
    entriesCommitted: 0, writesAcknowledged: 0, readsServed: 0, leaseReadsServed: 0, crashes: 0, pauses: 0, messagesGarbled: 0, partitions: 0,
    messagesDropped: 0, messagesDuplicated: 0, configChanges: 0, transfers: 0, compactions: 0, snapshotsInstalled: 0, entriesAppliedEarly: 0, entriesAppliedWhileWriting: 0,
    leaseIntervals: 0, closestLeaseHandoverUs: Number.POSITIVE_INFINITY,
    recoveryUsMax: 0, recoveryUsTotal: 0, stableUs: 0, failuresByInvariant: {}, lastTraceHash: '',
  };
}

export function addToTotals(totals: Totals, result: SeedResult): void {
  const stats = result.stats;
  totals.seeds++;
  if (result.ok) totals.passed++;
  else {
    totals.failed++;
    const invariant = result.failure?.invariant ?? 'unknown';
    totals.failuresByInvariant[invariant] = (totals.failuresByInvariant[invariant] ?? 0) + 1;
  }
  totals.events += stats.events;
  totals.simulatedUs += stats.simulatedUs;
  totals.elections += stats.elections;
  totals.electionsInOneRound += stats.electionsInOneRound;
  totals.electionsQuiet += stats.electionsQuiet;
  totals.electionsQuietInOneRound += stats.electionsQuietInOneRound;
  totals.entriesCommitted += stats.entriesCommitted;
  totals.writesAcknowledged += stats.writesAcknowledged;
  totals.readsServed += stats.readsServed;
  totals.leaseReadsServed += stats.leaseReadsServed;
  totals.crashes += stats.crashes;
  totals.pauses += stats.pauses;
  totals.messagesGarbled += stats.messagesGarbled;
  totals.partitions += stats.partitions;
  totals.messagesDropped += stats.messagesDropped;
  totals.messagesDuplicated += stats.messagesDuplicated;
  totals.configChanges += stats.configChanges;
  totals.transfers += stats.transfers;
  totals.compactions += stats.compactions;
  totals.snapshotsInstalled += stats.snapshotsInstalled;
  totals.entriesAppliedEarly += stats.entriesAppliedEarly;
  totals.entriesAppliedWhileWriting += stats.entriesAppliedWhileWriting;
  totals.leaseIntervals += stats.leaseIntervals;
  totals.recoveryUsMax = Math.max(totals.recoveryUsMax, stats.recoveryUs);
  totals.recoveryUsTotal += stats.recoveryUs;
  totals.stableUs += stats.stableUs;
  totals.closestLeaseHandoverUs = Math.min(totals.closestLeaseHandoverUs, stats.closestLeaseHandoverUs);
  totals.lastTraceHash = result.traceHash;
}

/** The rows every simulator summary starts with: how many seeds, how they ended, how fast. */
export function runRows(run: { seeds: number; passed: number; failed: number; failuresByInvariant: Record<string, number> }, elapsedMs: number): [string, string][] {
  const perMinute = elapsedMs > 0 ? run.seeds / (elapsedMs / 60_000) : 0;
  const failures = run.failed > 0 ? ` (${Object.entries(run.failuresByInvariant).map(([name, count]) => `${name}: ${count}`).join(', ')})` : '';
  return [
    ['seeds', `${run.seeds}`],
    ['passed', `${run.passed}`],
    ['failed', `${run.failed}${failures}`],
    ['seeds/min', perMinute.toFixed(0)],
    ['wall time', `${(elapsedMs / 1000).toFixed(1)} s`],
  ];
}

/** Name-value rows as an aligned two-column table. */
export function formatRows(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([name]) => name.length));
  return rows.map(([name, value]) => `${name.padEnd(width)}  ${value}`).join('\n');
}

export function formatSummary(totals: Totals, elapsedMs: number, voters: number, steps: number): string {
  const oneRound = totals.elections > 0 ? (100 * totals.electionsInOneRound) / totals.elections : 0;
  const quietOneRound = totals.electionsQuiet > 0 ? (100 * totals.electionsQuietInOneRound) / totals.electionsQuiet : 0;
  const rows: [string, string][] = [
    ['voters at start / steps per seed', `${voters} / ${steps}`],
    ...runRows(totals, elapsedMs),
    ['simulated time', `${(totals.simulatedUs / 1e6).toFixed(1)} s`],
    ['events', `${totals.events}`],
    ['elections (one round)', `${totals.elections} (${oneRound.toFixed(1)}%)`],
    ['elections in a quiet network (one round)', `${totals.electionsQuiet} (${quietOneRound.toFixed(2)}%)`],
    ['entries committed', `${totals.entriesCommitted}`],
    ['writes acknowledged', `${totals.writesAcknowledged}`],
    ['reads served (lease)', `${totals.readsServed} (${totals.leaseReadsServed})`],
    ['crashes / process pauses', `${totals.crashes} / ${totals.pauses}`],
    ['partitions', `${totals.partitions}`],
    ['messages dropped / duplicated / malformed', `${totals.messagesDropped} / ${totals.messagesDuplicated} / ${totals.messagesGarbled}`],
    ['config changes / transfers', `${totals.configChanges} / ${totals.transfers}`],
    ['leases taken / closest handover', `${totals.leaseIntervals} / ${Number.isFinite(totals.closestLeaseHandoverUs) ? `${(totals.closestLeaseHandoverUs / 1000).toFixed(3)} ms` : 'none'}`],
    ['recovery after faults stop, mean / max', `${(totals.recoveryUsTotal / Math.max(1, totals.passed) / 1000).toFixed(0)} ms / ${(totals.recoveryUsMax / 1000).toFixed(0)} ms`],
    ['leader kept through stability windows', `${(totals.stableUs / 1e6).toFixed(1)} s in all`],
    ['compactions / snapshots installed', `${totals.compactions} / ${totals.snapshotsInstalled}`],
    ['entries applied before their batch was written', `${totals.entriesAppliedEarly}`],
    ['entries applied while a batch was being written', `${totals.entriesAppliedWhileWriting}`],
  ];
  return formatRows(rows);
}
