// The metrics registry: counters, gauges and histograms render as valid Prometheus text,
// label values are escaped, the series bound holds, and collectors run at each render.
import { describe, expect, it } from 'vitest';
import { metricsSeriesPerFamilyMax } from '../../protocol/limits.ts';
import { parsePrometheusText, PrometheusParseError } from './parse.ts';
import { MetricsRegistry } from './registry.ts';

describe('MetricsRegistry', () => {
  it('renders counters, gauges and histograms that parse back to the same values', () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter('hivemesh_test_requests_total', 'Requests.');
    requests.inc({ route: '/a', status: '200' });
    requests.inc({ route: '/a', status: '200' }, 2);
    requests.inc({ route: '/b "quoted"\nline', status: '500' });
    registry.gauge('hivemesh_test_queue', 'Queue length.').set({}, 7);
    const latency = registry.histogram('hivemesh_test_seconds', 'Latency.', [0.1, 1]);
    latency.observe({ endpoint: 'chat' }, 0.05);
    latency.observe({ endpoint: 'chat' }, 0.5);
    latency.observe({ endpoint: 'chat' }, 5);

    const parsed = parsePrometheusText(registry.render());
    expect(parsed.types.get('hivemesh_test_requests_total')).toBe('counter');
    expect(parsed.types.get('hivemesh_test_seconds')).toBe('histogram');
    const value = (name: string, labels: Record<string, string>) =>
      parsed.samples.find((sample) => sample.name === name && Object.entries(labels).every(([key, text]) => sample.labels[key] === text))?.value;
    expect(value('hivemesh_test_requests_total', { route: '/a', status: '200' })).toBe(3);
    expect(value('hivemesh_test_requests_total', { route: '/b "quoted"\nline' })).toBe(1);
    expect(value('hivemesh_test_queue', {})).toBe(7);
    expect(value('hivemesh_test_seconds_bucket', { le: '0.1' })).toBe(1);
    expect(value('hivemesh_test_seconds_bucket', { le: '1' })).toBe(2);
    expect(value('hivemesh_test_seconds_bucket', { le: '+Inf' })).toBe(3);
    expect(value('hivemesh_test_seconds_count', {})).toBe(3);
    expect(value('hivemesh_test_seconds_sum', {})).toBeCloseTo(5.55);
  });

  it('refuses a counter going down, bad names, and a name reused as another type', () => {
    const registry = new MetricsRegistry();
    const counter = registry.counter('hivemesh_test_total', 'x');
    expect(() => counter.inc({}, -1)).toThrow(RangeError);
    expect(() => registry.gauge('hivemesh_test_total', 'x')).toThrow(/already a counter/);
    expect(registry.counter('hivemesh_test_total', 'x')).toBe(counter);
    expect(() => registry.counter('bad-name', 'x')).toThrow(/not a valid/);
    expect(() => counter.inc({ 'bad-label': 'x' })).toThrow(/not allowed/);
  });

  it('keeps at most the bounded number of series per family, counting the rest in one overflow series', () => {
    const registry = new MetricsRegistry();
    const counter = registry.counter('hivemesh_test_total', 'x');
    for (let index = 0; index < metricsSeriesPerFamilyMax + 50; index++) counter.inc({ id: String(index) });
    const parsed = parsePrometheusText(registry.render());
    const samples = parsed.samples.filter((sample) => sample.name === 'hivemesh_test_total');
    expect(samples.length).toBe(metricsSeriesPerFamilyMax + 1);
    expect(samples.reduce((sum, sample) => sum + sample.value, 0)).toBe(metricsSeriesPerFamilyMax + 50);
    expect(counter.get({ overflow: 'true' })).toBe(50);
  });

  it('runs collectors before each render until removed', () => {
    const registry = new MetricsRegistry();
    const gauge = registry.gauge('hivemesh_test_nodes', 'x');
    let nodes = 1;
    const remove = registry.collect(() => gauge.set({}, nodes));
    expect(registry.render()).toContain('hivemesh_test_nodes 1\n');
    nodes = 3;
    expect(registry.render()).toContain('hivemesh_test_nodes 3\n');
    remove();
    nodes = 9;
    expect(registry.render()).toContain('hivemesh_test_nodes 3\n');
  });

  it('the parser rejects what Prometheus would', () => {
    expect(() => parsePrometheusText('hivemesh_x 1\n')).toThrow(PrometheusParseError);
    expect(() => parsePrometheusText('# TYPE hivemesh_x counter\nhivemesh_x{a="1" 1\n')).toThrow(PrometheusParseError);
    expect(() => parsePrometheusText('# TYPE hivemesh_x counter\nhivemesh_x one\n')).toThrow(PrometheusParseError);
    expect(() => parsePrometheusText('# TYPE hivemesh_x counter\nhivemesh_x 1')).toThrow(/newline/);
    expect(parsePrometheusText('# TYPE hivemesh_x counter\nhivemesh_x{a="1",b="x\\"y"} 1\n').samples[0]!.labels).toEqual({ a: '1', b: 'x"y' });
  });
});
