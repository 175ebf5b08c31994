// How fast this machine is right now, for reading the other figures: the same fixed work in
// every run, so two runs (or sessions) on machines of different speed can be told apart
// from a change in hivemesh. One core: JSON of task-like records, written and read back, as
// the daemons do with every log entry and snapshot. Measured at the start and at the end of
// a run, since the machines here are shared and their speed drifts.
import { median, type BenchRow } from './report.ts';

const section = 'machine';
const records = 20_000;
const rounds = 15;

function jsonWork(): number {
  const items = Array.from({ length: records }, (_, n) => ({
    id: `t_${n.toString(36).padStart(8, '0')}`, status: n % 3 === 0 ? 'completed' : 'queued', priority: n % 10,
    input: { model: 'llama3.2:1b', prompt: `reference prompt number ${n}, "quoted" and \n with a newline`, options: { temperature: 0.2 } },
    attempts: [{ attempt: 1, node: 'node-a', status: 'completed', startedAt: 1_700_000_000_000 + n, endedAt: 1_700_000_000_500 + n }],
    output: 'word '.repeat(20), usage: { promptTokens: 12, completionTokens: 20, tokensPerSecond: 41.5 },
  }));
  const started = performance.now();
  const parsed = JSON.parse(JSON.stringify(items)) as unknown[];
  if (parsed.length !== records) throw new Error('the reference work went wrong');
  return performance.now() - started;
}

/** Pushes the reference figure; `when` names the moment ("start" or "end" of the run). */
export function benchMachine(rows: BenchRow[], when: string): void {
  jsonWork(); // compiled and warmed, not measured
  const times = Array.from({ length: rounds }, () => jsonWork());
  rows.push({ section, name: `reference CPU work at the ${when} of the run: JSON of ${records.toLocaleString('en')} task-like records written and read back, one core, median of ${rounds} (lower is faster)`, value: median(times), unit: 'ms' });
}
