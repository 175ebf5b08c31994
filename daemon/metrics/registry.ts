// A small Prometheus metrics registry: counters, gauges and histograms with labels, and
// the text exposition format (version 0.0.4) for GET /metrics. Any module may import
// `metrics` (the process-wide registry) and count what it does; values computed from
// state at scrape time are added by collectors (`registry.collect(fn)`), so nothing has
// to be kept in sync by hand. Each family holds at most metricsSeriesPerFamilyMax label
// combinations; further ones are counted in one `overflow="true"` series instead.
import { metricsSeriesPerFamilyMax } from '../../protocol/limits.ts';

export type Labels = Readonly<Record<string, string>>;
type MetricType = 'counter' | 'gauge' | 'histogram';

const metricNamePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelNamePattern = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Latency buckets in seconds: from a cached answer to a long generation. */
export const latencyBucketsSeconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function labelKey(labels: Labels): string {
  return Object.keys(labels).sort().map((key) => `${key}=${labels[key]}`).join('\u0000');
}

function renderLabels(labels: Labels, extra?: [string, string]): string {
  const parts = Object.keys(labels).sort().map((key) => `${key}="${escapeLabelValue(labels[key]!)}"`);
  if (extra !== undefined) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

const overflowLabels: Labels = { overflow: 'true' };

abstract class Family<Series> {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  protected readonly series = new Map<string, { labels: Labels; value: Series }>();

  constructor(name: string, help: string) {
    if (!metricNamePattern.test(name)) throw new Error(`metric name "${name}" is not a valid Prometheus name`);
    this.name = name;
    this.help = help;
  }

  protected abstract fresh(): Series;

  protected at(labels: Labels): Series {
    const key = labelKey(labels);
    let entry = this.series.get(key);
    if (entry === undefined) {
      for (const name of Object.keys(labels)) {
        if (!labelNamePattern.test(name) || name === 'le') throw new Error(`label name "${name}" of ${this.name} is not allowed`);
      }
      if (this.series.size >= metricsSeriesPerFamilyMax) {
        // Past the bound, everything new lands in one series: the total stays right.
        const overflowKey = labelKey(overflowLabels);
        entry = this.series.get(overflowKey);
        if (entry === undefined) {
          entry = { labels: overflowLabels, value: this.fresh() };
          this.series.set(overflowKey, entry);
        }
        return entry.value;
      }
      entry = { labels: { ...labels }, value: this.fresh() };
      this.series.set(key, entry);
    }
    return entry.value;
  }

  /** Forgets every series (a gauge family rebuilt at each scrape). */
  reset(): void {
    this.series.clear();
  }

  header(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
  }

  abstract render(): string;
}

/** A family whose series each hold one number (counters and gauges). */
abstract class ValueFamily extends Family<{ value: number }> {
  protected fresh() {
    return { value: 0 };
  }

  get(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value.value ?? 0;
  }

  render(): string {
    let text = this.header();
    for (const { labels, value } of this.series.values()) text += `${this.name}${renderLabels(labels)} ${formatValue(value.value)}\n`;
    return text;
  }
}

export class Counter extends ValueFamily {
  readonly type = 'counter';

  inc(labels: Labels = {}, amount = 1): void {
    if (!(amount >= 0) || !Number.isFinite(amount)) throw new RangeError(`counter ${this.name} can only grow by a finite amount >= 0, got ${amount}`);
    this.at(labels).value += amount;
  }

  /**
   * Copies a total counted elsewhere (a collector reading another module's counter). The
   * source only grows, except when it restarts, which Prometheus reads as a counter reset.
   */
  setTotal(labels: Labels, value: number): void {
    this.at(labels).value = value;
  }

}

export class Gauge extends ValueFamily {
  readonly type = 'gauge';

  set(labels: Labels, value: number): void {
    this.at(labels).value = value;
  }

  inc(labels: Labels = {}, amount = 1): void {
    this.at(labels).value += amount;
  }

  dec(labels: Labels = {}, amount = 1): void {
    this.at(labels).value -= amount;
  }

}

interface HistogramSeries {
  /** Per bucket (not cumulative); the last slot is +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram extends Family<HistogramSeries> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(name: string, help: string, buckets: readonly number[] = latencyBucketsSeconds) {
    super(name, help);
    if (buckets.length === 0 || buckets.some((bound, index) => index > 0 && bound <= buckets[index - 1]!)) {
      throw new Error(`histogram ${name} needs increasing bucket bounds`);
    }
    this.buckets = [...buckets];
  }

  protected fresh(): HistogramSeries {
    return { counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  observe(labels: Labels, value: number): void {
    if (!Number.isFinite(value)) return;
    const series = this.at(labels);
    let index = this.buckets.findIndex((bound) => value <= bound);
    if (index < 0) index = this.buckets.length;
    series.counts[index]! += 1;
    series.sum += value;
    series.count += 1;
  }

  /** Observations so far for these labels (for tests and summaries). */
  countOf(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value.count ?? 0;
  }

  render(): string {
    let text = this.header();
    for (const { labels, value } of this.series.values()) {
      let cumulative = 0;
      for (let index = 0; index < this.buckets.length; index++) {
        cumulative += value.counts[index]!;
        text += `${this.name}_bucket${renderLabels(labels, ['le', formatValue(this.buckets[index]!)])} ${cumulative}\n`;
      }
      cumulative += value.counts[this.buckets.length]!;
      text += `${this.name}_bucket${renderLabels(labels, ['le', '+Inf'])} ${cumulative}\n`;
      text += `${this.name}_sum${renderLabels(labels)} ${formatValue(value.sum)}\n`;
      text += `${this.name}_count${renderLabels(labels)} ${value.count}\n`;
    }
    return text;
  }
}

type AnyFamily = Counter | Gauge | Histogram;

export class MetricsRegistry {
  private readonly families = new Map<string, AnyFamily>();
  private readonly collectors = new Set<() => void>();

  private register<T extends AnyFamily>(family: T): T {
    const existing = this.families.get(family.name);
    if (existing !== undefined) {
      // Modules that ask for the same metric twice share it, as long as it is the same kind.
      if (existing.type !== family.type) throw new Error(`metric ${family.name} is already a ${existing.type}`);
      return existing as T;
    }
    this.families.set(family.name, family);
    return family;
  }

  counter(name: string, help: string): Counter {
    return this.register(new Counter(name, help));
  }

  gauge(name: string, help: string): Gauge {
    return this.register(new Gauge(name, help));
  }

  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.register(new Histogram(name, help, buckets));
  }

  /**
   * Runs before each render: sets gauges from current state. Returns a function that
   * removes it (a stopping daemon must not be scraped through a dead closure).
   */
  collect(collector: () => void): () => void {
    this.collectors.add(collector);
    return () => this.collectors.delete(collector);
  }

  /** The text exposition format, families sorted by name. */
  render(): string {
    for (const collector of this.collectors) collector();
    return [...this.families.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((family) => family.render())
      .join('');
  }
}

/** The process-wide registry: one daemon runs per process. */
export const metrics = new MetricsRegistry();

