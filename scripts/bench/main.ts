// `npm run bench [-- --only sim,commit,failover,membership,tasks,placement] [--quick]`: runs the benchmarks and
// prints one table of figures, each with the baseline measured in the same run where there
// is one, and the goal from the issues. Machines here are shared and noisy: read the
// figures as what this run measured, not as limits.
import { parseArgs } from 'node:util';
import { benchCommit, benchFailover, benchSimulator } from './consensus.ts';
import { benchMachine } from './machine.ts';
import { formatTable, type BenchRow } from './report.ts';

const sections: Record<string, (rows: BenchRow[], quick: boolean) => Promise<void> | void> = {
  sim: (rows, quick) => benchSimulator(rows, { seconds: quick ? 5 : 30 }),
  commit: (rows, quick) => benchCommit(rows, { writes: quick ? 2_000 : 20_000 }),
  failover: (rows, quick) => benchFailover(rows, { trials: quick ? 3 : 20, sizes: [3, 5] }),
};

async function loadOptional(rows: BenchRow[], quick: boolean, name: string): Promise<boolean> {
  // Sections in their own modules register here as they are built.
  const modules: Record<string, [path: string, entry: string]> = {
    membership: ['./membership.ts', 'run'], tasks: ['./tasks.ts', 'run'], placement: ['./tasks.ts', 'runPlacement'],
  };
  const found = modules[name];
  if (found === undefined) return false;
  const module = (await import(found[0])) as Record<string, (rows: BenchRow[], quick: boolean) => Promise<void>>;
  await module[found[1]]!(rows, quick);
  return true;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' } }, strict: true });
  const all = ['sim', 'commit', 'failover', 'membership', 'tasks'];
  // `placement` is part of `tasks`, also runnable alone.
  const chosen = values.only === undefined ? all : values.only.split(',').map((name) => name.trim());
  const unknown = chosen.filter((name) => ![...all, 'placement'].includes(name));
  if (unknown.length > 0) throw new Error(`unknown section(s) ${unknown.join(', ')}; sections: ${all.join(', ')}`);
  const rows: BenchRow[] = [];
  benchMachine(rows, 'start');
  for (const name of chosen) {
    const started = performance.now();
    process.stderr.write(`bench: ${name}...\n`);
    try {
      const run = sections[name];
      if (run !== undefined) await run(rows, values.quick === true);
      else await loadOptional(rows, values.quick === true, name);
    } catch (error) {
      process.stderr.write(`bench: ${name} failed: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    }
    process.stderr.write(`bench: ${name} took ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  }
  benchMachine(rows, 'end');
  process.stdout.write(`\n${formatTable(rows)}\n`);
}

await main();
process.exit(process.exitCode ?? 0);
