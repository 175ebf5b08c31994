// Benchmark results as one table: each row a figure with its unit, the baseline measured
// in the same run where there is one, their ratio, and the goal it is held against.
export interface BenchRow {
  section: string;
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number } | undefined;
  /** The goal as text, and whether the value meets it. */
  goal?: { text: string; met: boolean } | undefined;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

export function mean(values: number[]): number {
  return values.length === 0 ? NaN : values.reduce((sum, value) => sum + value, 0) / values.length;
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function formatTable(rows: BenchRow[]): string {
  const header = ['section', 'figure', 'value', 'baseline (same run)', 'ratio', 'goal'];
  const cells = rows.map((row) => [
    row.section,
    row.name,
    `${formatNumber(row.value)} ${row.unit}`,
    row.baseline === undefined ? '' : `${row.baseline.name}: ${formatNumber(row.baseline.value)} ${row.unit}`,
    row.baseline === undefined || row.baseline.value === 0 ? '' : `${formatNumber(row.value / row.baseline.value)}x`,
    row.goal === undefined ? '' : `${row.goal.met ? 'met' : 'MISSED'}: ${row.goal.text}`,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...cells.map((row) => row[column]!.length)));
  const line = (row: string[]) => `| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}
