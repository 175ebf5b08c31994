// A strict reader of the Prometheus text exposition format (0.0.4), for tests and tools
// that check what /metrics serves: every line must be a HELP, a TYPE, or a sample with a
// valid name, well-formed labels and a number; samples must follow their family's TYPE.
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedMetrics {
  types: Map<string, string>;
  samples: Sample[];
}

const namePattern = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const sampleNamePattern = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?$/;
const labelPattern = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/;

export class PrometheusParseError extends Error {
  override name = 'PrometheusParseError';
}

function parseValue(text: string, line: number): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const value = Number(text);
  if (text.trim() === '' || Number.isNaN(value)) throw new PrometheusParseError(`line ${line}: "${text}" is not a number`);
  return value;
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text.slice(1, -1);
  while (rest.length > 0) {
    const match = labelPattern.exec(rest);
    if (match === null) throw new PrometheusParseError(`line ${line}: malformed labels ${text}`);
    labels[match[1]!] = match[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    rest = rest.slice(match[0].length);
    if (rest.startsWith(',')) rest = rest.slice(1);
    else if (rest.length > 0) throw new PrometheusParseError(`line ${line}: expected "," between labels in ${text}`);
  }
  return labels;
}

/** The family a sample belongs to: histogram samples end in _bucket, _sum or _count. */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      if (types.get(base) === 'histogram' || types.get(base) === 'summary') return base;
    }
  }
  return undefined;
}

export function parsePrometheusText(text: string): ParsedMetrics {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new PrometheusParseError('the text must end with a newline');
  for (let index = 0; index < lines.length - 1; index++) {
    const line = lines[index]!;
    const number = index + 1;
    if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
      const [, kind, name, ...rest] = line.split(' ');
      if (name === undefined || !namePattern.test(name)) throw new PrometheusParseError(`line ${number}: bad metric name in "${line}"`);
      if (kind === 'TYPE') {
        const type = rest.join(' ');
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type)) throw new PrometheusParseError(`line ${number}: unknown type "${type}"`);
        if (types.has(name)) throw new PrometheusParseError(`line ${number}: second TYPE for ${name}`);
        types.set(name, type);
      }
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const match = sampleNamePattern.exec(line);
    if (match === null) throw new PrometheusParseError(`line ${number}: not a sample: "${line}"`);
    const name = match[1]!;
    if (familyOf(name, types) === undefined) throw new PrometheusParseError(`line ${number}: sample ${name} comes before (or without) its TYPE line`);
    samples.push({ name, labels: match[2] === undefined ? {} : parseLabels(match[2], number), value: parseValue(match[3]!, number) });
  }
  return { types, samples };
}
