// Totals over a range of seeds of the simulator's tasks mode (tasks-sim.ts) and the table
// the CLI prints with --tasks (and RUNS.md quotes).
import { emptyTasksStats, type TasksSeedResult, type TasksSeedStats } from './tasks-sim.ts';
import { formatRows, runRows } from './summary.ts';

export interface TasksTotals {
  seeds: number;
  passed: number;
  failed: number;
  failuresByInvariant: Record<string, number>;
  sums: TasksSeedStats;
  drainUsMax: number;
  lastTraceHash: string;
}

export function emptyTasksTotals(): TasksTotals {
  return { seeds: 0, passed: 0, failed: 0, failuresByInvariant: {}, sums: emptyTasksStats(), drainUsMax: 0, lastTraceHash: '' };
}

export function addToTasksTotals(totals: TasksTotals, result: TasksSeedResult): void {
  totals.seeds++;
  if (result.ok) totals.passed++;
  else {
    totals.failed++;
    const invariant = result.failure?.invariant ?? 'unknown';
    totals.failuresByInvariant[invariant] = (totals.failuresByInvariant[invariant] ?? 0) + 1;
  }
  const sums = totals.sums as unknown as Record<string, number>;
  for (const [name, value] of Object.entries(result.stats)) sums[name] = (sums[name] ?? 0) + value;
  totals.drainUsMax = Math.max(totals.drainUsMax, result.stats.drainUs);
  totals.lastTraceHash = result.traceHash;
}

export function formatTasksSummary(totals: TasksTotals, elapsedMs: number, voters: number): string {
  const sums = totals.sums;
  const rows: [string, string][] = [
    ['mode / voters', `tasks / ${voters}`],
    ...runRows(totals, elapsedMs),
    ['simulated time', `${(sums.simulatedUs / 1e6).toFixed(1)} s`],
    ['events', `${sums.events}`],
    ['submissions proposed / acknowledged', `${sums.submitsProposed} / ${sums.submitsAcknowledged}`],
    ['tasks completed / failed / cancelled', `${sums.tasksCompleted} / ${sums.tasksFailed} / ${sums.tasksCancelled}`],
    ['cancels proposed / partial outputs kept', `${sums.cancelsProposed} / ${sums.partialOutputsAccepted}`],
    ['assignments / requeues proposed', `${sums.assignmentsProposed} / ${sums.requeuesProposed}`],
    ['results refused: stale attempt / task finished', `${sums.staleResultsRefused} / ${sums.lateResultsRefused}`],
    ['forwarded proposals lost', `${sums.reportsLost}`],
    ['crashes (attempts lost) / partitions', `${sums.crashes} (${sums.attemptsLostInCrashes}) / ${sums.partitions}`],
    ['compactions / state hash comparisons', `${sums.compactions} / ${sums.hashComparisons}`],
    ['drain after faults stop, mean / max', `${(sums.drainUs / Math.max(1, totals.passed) / 1000).toFixed(0)} ms / ${(totals.drainUsMax / 1000).toFixed(0)} ms`],
  ];
  return formatRows(rows);
}
