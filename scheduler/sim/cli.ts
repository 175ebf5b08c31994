// Command line for the deterministic simulator:
//   npm run sim -- --seeds N --from S [--nodes 3|5] [--steps K] [--verbose]
//   npm run sim -- --seed S [--nodes 3|5] [--steps K] [--verbose]
//   npm run sim -- --tasks --seeds N --from S [--nodes 3|5] [--broken V]   (tasks mode, tasks-sim.ts)
// Runs a range of seeds against the real consensus core, prints a summary table and, for
// every failing seed, the one-line command that replays it exactly. Exits 1 on any failure.
import { raftCore, type CoreFactory } from './core.ts';
import { faultyCores } from './faulty-cores.ts';
import { runSeed, type SeedResult } from './sim.ts';
import { emptyTotals, addToTotals, formatSummary, type Totals } from './summary.ts';
import { runTasksSeed, tasksBrokenVariants, type TasksBrokenVariant, type TasksSeedResult } from './tasks-sim.ts';
import { addToTasksTotals, emptyTasksTotals, formatTasksSummary } from './tasks-summary.ts';

interface CliOptions {
  from: number;
  seeds: number;
  voters: number;
  steps: number;
  verbose: boolean;
  /** Trace lines printed for each failing seed (the full ring with --seed). */
  traceLines: number;
  /** A deliberately broken core to run instead of the real one (to see the checker catch it). */
  broken: string | null;
  /** Drive pauses like a daemon that skips missed ticks (to reproduce the lease finding). */
  skipMissedTicks: boolean;
  /** Tasks mode: the replicated task state, placement and executors instead of the key-value model. */
  tasks: boolean;
}

const usage = `usage: npm run sim -- [--seeds N] [--from S] [--seed S] [--nodes 3|5] [--steps K] [--verbose]
  --seeds N   how many consecutive seeds to run (default 100)
  --from S    first seed of the range (default 1)
  --seed S    run exactly one seed (prints its trace on failure)
  --nodes V   voters at the start: 3 or 5 (default 3); two more nodes wait to be added
  --steps K   events in the faulty phase of each seed (default 3000)
  --verbose   print every traced event as it happens
  --skip-missed-ticks  after a process pause, skip the ticks it missed instead of delivering
              them (a setInterval driver); shows why drivers must catch their clock up
  --broken B  run a deliberately broken core instead of the real one, to watch the checker
              catch it; B is one of: ${Object.entries(faultyCores).map(([name, core]) => `${name} (${core.describe})`).join(', ')}
  --tasks     tasks mode: the replicated task state on every node, the leader's placement and
              recovery, simulated executors and clients (tasks-sim.ts); --steps does not apply,
              and --broken takes one of: ${tasksBrokenVariants.join(', ')}`;

function fail(message: string): never {
  process.stderr.write(`sim: ${message}\n${usage}\n`);
  process.exit(2);
}

function integerArgument(name: string, text: string | undefined, min: number): number {
  if (text === undefined) fail(`${name} needs a value`);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) fail(`${name} must be an integer >= ${min}, got '${text}'`);
  return value;
}

function parse(argv: string[]): CliOptions {
  const options: CliOptions = { from: 1, seeds: 100, voters: 3, steps: 3_000, verbose: false, traceLines: 40, broken: null, skipMissedTicks: false, tasks: false };
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index] as string;
    const next = () => argv[++index];
    switch (argument) {
      case '--seeds': options.seeds = integerArgument('--seeds', next(), 1); break;
      case '--from': options.from = integerArgument('--from', next(), 0); break;
      case '--seed':
        options.from = integerArgument('--seed', next(), 0);
        options.seeds = 1;
        options.traceLines = Number.POSITIVE_INFINITY;
        break;
      case '--nodes': {
        options.voters = integerArgument('--nodes', next(), 1);
        if (options.voters !== 3 && options.voters !== 5) fail(`--nodes must be 3 or 5, got ${options.voters}`);
        break;
      }
      case '--steps': options.steps = integerArgument('--steps', next(), 1); break;
      case '--verbose': options.verbose = true; break;
      case '--skip-missed-ticks': options.skipMissedTicks = true; break;
      case '--tasks': options.tasks = true; break;
      case '--broken': {
        const name = next();
        if (name === undefined) fail('--broken needs a value');
        options.broken = name;
        break;
      }
      case '--help': case '-h':
        process.stdout.write(`${usage}\n`);
        process.exit(0);
        break;
      default: fail(`unknown argument '${argument}'`);
    }
  }
  // Checked after every argument is read, since the valid names depend on --tasks.
  if (options.broken !== null) {
    const names = options.tasks ? [...tasksBrokenVariants] : Object.keys(faultyCores);
    if (!names.includes(options.broken)) fail(`--broken ${options.broken} is not a broken ${options.tasks ? 'variant of the tasks mode' : 'core'}; use one of ${names.join(', ')}`);
  }
  return options;
}

function replayCommand(options: CliOptions, seed: number): string {
  if (options.tasks) return `npm run sim -- --tasks --seed ${seed} --nodes ${options.voters}${options.broken === null ? '' : ` --broken ${options.broken}`}`;
  return `npm run sim -- --seed ${seed} --nodes ${options.voters} --steps ${options.steps}${options.broken === null ? '' : ` --broken ${options.broken}`}${options.skipMissedTicks ? ' --skip-missed-ticks' : ''}`;
}

/** Seeds between two yields to the event loop, so that Ctrl-C (SIGINT) or SIGTERM is heard. */
const seedsPerYield = 20;

async function main(): Promise<void> {
  const options = parse(process.argv.slice(2));
  // An interrupted range still prints its table: stop after the current seed, then report.
  let stopRequested = false;
  const requestStop = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
  };
  process.on('SIGINT', requestStop);
  process.on('SIGTERM', requestStop);
  if (options.tasks) {
    await runTasksRange(options, () => stopRequested);
    process.removeListener('SIGINT', requestStop);
    process.removeListener('SIGTERM', requestStop);
    return;
  }
  const totals: Totals = emptyTotals();
  const failures: SeedResult[] = [];
  const core: CoreFactory = options.broken === null ? raftCore : (faultyCores[options.broken] as { factory: CoreFactory }).factory;
  const startedMs = performance.now();
  let lastProgressMs = startedMs;
  let nextSeed = options.from;
  for (let seed = options.from; seed < options.from + options.seeds && !stopRequested; seed++) {
    nextSeed = seed + 1;
    if ((seed - options.from) % seedsPerYield === seedsPerYield - 1) await new Promise((resolve) => setImmediate(resolve));
    const result = runSeed({
      seed, voters: options.voters, steps: options.steps, core,
      ...(options.skipMissedTicks ? { scenario: { pauseTickCatchUp: false } } : {}),
      ...(options.verbose ? { onTrace: (line: string) => process.stdout.write(`${line}\n`) } : {}),
    });
    addToTotals(totals, result);
    if (!result.ok) {
      failures.push(result);
      const failure = result.failure as NonNullable<SeedResult['failure']>;
      process.stdout.write(`seed ${seed} FAILED (${failure.invariant}): ${failure.message.split('\n')[0]}\n`);
      const lines = options.verbose ? [] : result.trace.slice(-options.traceLines);
      for (const line of lines) process.stdout.write(`  | ${line}\n`);
      process.stdout.write(`  replay: ${replayCommand(options, seed)}\n`);
    }
    const nowMs = performance.now();
    if (nowMs - lastProgressMs > 30_000) {
      lastProgressMs = nowMs;
      process.stdout.write(`... ${totals.seeds} seeds, ${totals.failed} failed, ${(totals.seeds / ((nowMs - startedMs) / 60_000)).toFixed(0)} seeds/min\n`);
    }
  }
  const elapsedMs = performance.now() - startedMs;
  if (stopRequested) {
    process.stdout.write(`\nstopped on request after seed ${nextSeed - 1} (${totals.seeds} of ${options.seeds} seeds run)\n`);
    // A partial range is not a pass: scripts must not mistake it for one.
    process.exitCode = 130;
  }
  process.stdout.write(`\n${formatSummary(totals, elapsedMs, options.voters, options.steps)}\n`);
  // One seed: its trace hash, to compare two replays at a glance.
  if (options.seeds === 1) process.stdout.write(`trace hash ${totals.lastTraceHash}\n`);
  if (failures.length > 0) {
    process.stdout.write(`\nfailing seeds (replay each with the command shown):\n`);
    for (const failed of failures) process.stdout.write(`  ${replayCommand(options, failed.seed)}   # ${failed.failure?.invariant}\n`);
    process.exitCode = 1;
  }
  process.removeListener('SIGINT', requestStop);
  process.removeListener('SIGTERM', requestStop);
}

/** The --tasks range: same shape as the key-value range (progress, failures with replay lines, table). */
async function runTasksRange(options: CliOptions, stopRequested: () => boolean): Promise<void> {
  const totals = emptyTasksTotals();
  const failures: TasksSeedResult[] = [];
  const startedMs = performance.now();
  let lastProgressMs = startedMs;
  for (let seed = options.from; seed < options.from + options.seeds && !stopRequested(); seed++) {
    if ((seed - options.from) % seedsPerYield === seedsPerYield - 1) await new Promise((resolve) => setImmediate(resolve));
    const result = runTasksSeed({
      seed, voters: options.voters, broken: options.broken as TasksBrokenVariant | null,
      ...(options.verbose ? { onTrace: (line: string) => process.stdout.write(`${line}\n`) } : {}),
    });
    addToTasksTotals(totals, result);
    if (!result.ok) {
      failures.push(result);
      const failure = result.failure as NonNullable<TasksSeedResult['failure']>;
      process.stdout.write(`seed ${seed} FAILED (${failure.invariant}): ${failure.message.split('\n')[0]}\n`);
      for (const line of options.verbose ? [] : result.trace.slice(-options.traceLines)) process.stdout.write(`  | ${line}\n`);
      process.stdout.write(`  replay: ${replayCommand(options, seed)}\n`);
    }
    const nowMs = performance.now();
    if (nowMs - lastProgressMs > 30_000) {
      lastProgressMs = nowMs;
      process.stdout.write(`... ${totals.seeds} seeds, ${totals.failed} failed, ${(totals.seeds / ((nowMs - startedMs) / 60_000)).toFixed(0)} seeds/min\n`);
    }
  }
  if (stopRequested()) {
    process.stdout.write(`\nstopped on request (${totals.seeds} of ${options.seeds} seeds run)\n`);
    process.exitCode = 130;
  }
  process.stdout.write(`\n${formatTasksSummary(totals, performance.now() - startedMs, options.voters)}\n`);
  if (options.seeds === 1) process.stdout.write(`trace hash ${totals.lastTraceHash}\n`);
  if (failures.length > 0) {
    process.stdout.write(`\nfailing seeds (replay each with the command shown):\n`);
    for (const failed of failures) process.stdout.write(`  ${replayCommand(options, failed.seed)}   # ${failed.failure?.invariant}\n`);
    process.exitCode = 1;
  }
}

await main();
